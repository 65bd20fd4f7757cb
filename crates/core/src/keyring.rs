//! Where the secrets that seal everything live: the cache key and the logins.
//!
//! On Linux, the kernel user keyring by default: `user` keys readable by the same user's
//! later processes (user VIEW|READ|WRITE|SEARCH|SETATTR, nothing for group or others),
//! each with a timeout so that an unused one disappears by itself, and all gone at reboot.
//! Where the keyring cannot be used (a seccomp filter, a kernel without keys), files in
//! the memory-backed runtime directory. Never a file on disk.
//!
//! What the keyring does not stop: any process of the same user (an agent included) can
//! read that user's keys. It keeps them from other users, disk images, backups and crash
//! dumps. Other platforms plug in here: a `KeyStore` variant and its four operations.

use linux_keyutils::{Key, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use zeroize::Zeroizing;

use crate::{Env, EnvVars};

/// Which memory-backed place holds the cache key and logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyStore {
    /// The kernel user keyring.
    Keyring,
    /// Sealed 0600 files in the memory-backed runtime directory.
    Runtime,
}

impl KeyStore {
    /// `MAYFLY_KEY_STORE` when set, else the keyring where it works, else the runtime
    /// directory.
    pub(crate) fn choose(env: &Env) -> Result<Self, String> {
        match env.get(EnvVars::MAYFLY_KEY_STORE) {
            Some("runtime") => Ok(Self::Runtime),
            Some("keyring") => Ok(Self::Keyring),
            None | Some("") if user_keyring().is_ok() => Ok(Self::Keyring),
            None | Some("") => Ok(Self::Runtime),
            Some(other) => Err(format!("`{}` is `{other}`, not `keyring` or `runtime`", EnvVars::MAYFLY_KEY_STORE)),
        }
    }
}

/// The calling user's keyring (shared by all of the user's processes, not by other users).
fn user_keyring() -> Result<KeyRing, linux_keyutils::KeyError> {
    KeyRing::from_special_id(KeyRingIdentifier::User, true)
}

fn failed(what: &str) -> impl FnOnce(linux_keyutils::KeyError) -> String + '_ {
    move |e| format!("cannot {what} in the kernel keyring: {e:?}")
}

/// A key the user's keyring holds: its payload, and the key itself, so that renewing it
/// needs no second search.
pub(crate) struct Stored {
    key: Key,
    pub(crate) payload: Zeroizing<Vec<u8>>,
}

impl Stored {
    /// Starts the key's timeout again; a key gone meanwhile is fine.
    pub(crate) fn renew(&self, timeout: u64) {
        let _ = self.key.set_timeout(usize::try_from(timeout).unwrap_or(usize::MAX));
    }
}

/// Room for the cache key and its public key (a few dozen bytes each) without asking the
/// kernel for the length first; a longer payload (a sealed login) is read again whole.
const SHORT_PAYLOAD: usize = 512;

/// The key by that description, if the user's keyring holds one.
pub(crate) fn find(description: &str) -> Option<Stored> {
    let key = user_keyring().ok()?.search(description).ok()?;
    let mut payload = Zeroizing::new(vec![0; SHORT_PAYLOAD]);
    // The kernel answers the payload's full length even when it copied less.
    let len = key.read(&mut *payload).ok()?;
    if len <= SHORT_PAYLOAD {
        payload.truncate(len);
    } else {
        payload = Zeroizing::new(key.read_to_vec().ok()?);
    }
    Some(Stored { key, payload })
}

/// The key's payload, if the user's keyring holds one by that description.
pub(crate) fn read(description: &str) -> Option<Vec<u8>> {
    find(description).map(|stored| stored.payload.to_vec())
}

/// Adds (or replaces) a key readable only by this user, gone after `timeout` seconds.
pub(crate) fn write(description: &str, payload: &[u8], timeout: u64) -> Result<(), String> {
    let key =
        user_keyring().map_err(failed("store a key"))?.add_key(description, payload).map_err(failed("store a key"))?;
    let perms = KeyPermissionsBuilder::builder()
        .posessor(Permission::ALL)
        .user(Permission::VIEW | Permission::READ | Permission::WRITE | Permission::SEARCH | Permission::SETATTR)
        .build();
    key.set_perms(perms).map_err(failed("restrict a key"))?;
    key.set_timeout(usize::try_from(timeout).unwrap_or(usize::MAX)).map_err(failed("time a key"))
}

/// Drops a key; a missing key is fine.
pub(crate) fn remove(description: &str) {
    if let Ok(key) = user_keyring().and_then(|ring| ring.search(description)) {
        let _ = key.invalidate();
    }
}

/// Tests that need the keyring: a developer's sandbox without keys may skip them (saying
/// so); CI may not.
#[cfg(test)]
pub(crate) fn unavailable(error: impl std::fmt::Display) {
    assert!(std::env::var_os("CI").is_none(), "the kernel keyring is unavailable in CI: {error}");
    eprintln!("SKIPPED: kernel keyring unavailable here: {error}");
}

/// The time left before a key times out, as `/proc/keys` shows it (`59s`, `23h`, ...).
#[cfg(test)]
pub(crate) fn time_left(description: &str) -> Option<String> {
    let key = user_keyring().ok()?.search(description).ok()?;
    let id = format!("{:08x}", key.get_id().as_raw_id());
    let keys = std::fs::read_to_string("/proc/keys").ok()?;
    let line = keys.lines().find(|line| line.starts_with(&id))?;
    line.split_whitespace().nth(3).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_follows_the_variable_and_names_a_bad_value() {
        let env = |value: &str| Env::from_pairs([(EnvVars::MAYFLY_KEY_STORE, value.to_owned())]);
        assert_eq!(KeyStore::choose(&env("runtime")), Ok(KeyStore::Runtime));
        assert_eq!(KeyStore::choose(&env("keyring")), Ok(KeyStore::Keyring));
        let error = KeyStore::choose(&env("disk")).unwrap_err();
        assert!(error.contains("MAYFLY_KEY_STORE") && error.contains("disk"), "{error}");
    }

    #[test]
    fn a_key_reads_back_until_removed() {
        let description = format!("mayfly-test-{}-{:?}", std::process::id(), std::time::Instant::now());
        if let Err(e) = write(&description, b"payload", 60) {
            // A sandbox without keys: the runtime store covers it.
            unavailable(e);
            return;
        }
        assert_eq!(read(&description).as_deref(), Some(&b"payload"[..]));
        write(&description, b"replaced", 60).unwrap();
        assert_eq!(read(&description).as_deref(), Some(&b"replaced"[..]));
        let long: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        write(&description, &long, 60).unwrap();
        assert_eq!(read(&description), Some(long), "a payload longer than the first read's room");
        remove(&description);
        assert_eq!(read(&description), None);
    }
}
