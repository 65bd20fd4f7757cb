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

use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};

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

/// The key's payload, if the user's keyring holds one by that description.
pub(crate) fn read(description: &str) -> Option<Vec<u8>> {
    user_keyring().ok()?.search(description).ok()?.read_to_vec().ok()
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

/// Starts a key's timeout again; a missing key is fine.
pub(crate) fn renew(description: &str, timeout: u64) {
    if let Ok(key) = user_keyring().and_then(|ring| ring.search(description)) {
        let _ = key.set_timeout(usize::try_from(timeout).unwrap_or(usize::MAX));
    }
}

/// Drops a key; a missing key is fine.
pub(crate) fn remove(description: &str) {
    if let Ok(key) = user_keyring().and_then(|ring| ring.search(description)) {
        let _ = key.invalidate();
    }
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
            eprintln!("kernel keyring unavailable here: {e}");
            return;
        }
        assert_eq!(read(&description).as_deref(), Some(&b"payload"[..]));
        write(&description, b"replaced", 60).unwrap();
        assert_eq!(read(&description).as_deref(), Some(&b"replaced"[..]));
        remove(&description);
        assert_eq!(read(&description), None);
    }
}
