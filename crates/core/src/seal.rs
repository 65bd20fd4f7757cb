//! The key that seals cache entries and logins: an age X25519 identity (its secret stored
//! as age writes it, `AGE-SECRET-KEY-1…`, exactly as earlier versions stored it) and,
//! stored beside it, its recipient with a check that binds it to that secret.
//!
//! Sealing and opening are plain age (`age::encrypt` to the recipient, `age::decrypt`
//! with this key): any age tool opens what is sealed here. Opening is the one thing done
//! here rather than by `age::x25519::Identity`: that identity derives its own public key
//! again for every file it opens (the X25519 stanza's key derivation is salted with it), a
//! second curve multiplication beside the key exchange, a fifth of a cached `get`'s
//! instructions. Stored, the public key is read, not computed; a stored one whose check
//! does not match the secret (missing, damaged, or left by a key an older version made
//! since) is derived again and never used.
//!
//! Sealing is done here too, for speed alone: the key exchanges on both sides run on
//! AWS-LC (already in every binary, for TLS), which takes half the time of the pure-Rust
//! curve age uses. The stanzas are byte for byte what age writes and reads; tests hold
//! both directions to age's own.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::OnceLock;

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use age_core::secrecy::SecretString;
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PrivateKey, UnparsedPublicKey, X25519};
use base64::Engine;
use bech32::FromBase32;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// The X25519 stanza's tag and its key derivation's label (age's specification, c2sp.org/age).
const STANZA_TAG: &str = "X25519";
const KEY_LABEL: &[u8] = b"age-encryption.org/v1/X25519";
/// The file key's size, and its size sealed in the stanza's body (plus the AEAD tag).
const FILE_KEY_BYTES: usize = 16;
const SEALED_FILE_KEY_BYTES: usize = FILE_KEY_BYTES + 16;

/// An age X25519 identity and its recipient.
pub(crate) struct SealingKey {
    /// age's view of the secret, which writes it back as text.
    identity: age::x25519::Identity,
    /// The same secret, for the key exchange.
    secret: Zeroizing<[u8; 32]>,
    /// The secret as AWS-LC holds it, made on the first open and kept for the next ones
    /// (making it derives the public key: a curve multiplication).
    exchange_key: OnceLock<Option<PrivateKey>>,
    public: [u8; 32],
    recipient: age::x25519::Recipient,
}

impl SealingKey {
    /// A new random key.
    pub(crate) fn generate() -> Self {
        let identity = age::x25519::Identity::generate();
        Self::read(identity.to_string().expose_secret(), None).expect("age writes keys it reads").0
    }

    /// Reads a key from its secret ([`Self::secret_text`]) and its stored public key
    /// ([`Self::public_text`]), if any. The flag says the public key was missing or did
    /// not match the secret and was derived, so it is worth storing again. `None` when
    /// the secret is not one.
    pub(crate) fn read(secret_text: &str, public_text: Option<&str>) -> Option<(Self, bool)> {
        let secret_text = secret_text.trim();
        let identity = age::x25519::Identity::from_str(secret_text).ok()?;
        let secret = Zeroizing::new(secret_bytes(secret_text)?);
        let stored = public_text.and_then(|text| {
            let (recipient, check) = text.trim().split_once(' ')?;
            (check == check_of(&secret)).then(|| age::x25519::Recipient::from_str(recipient).ok()).flatten()
        });
        let derived = stored.is_none();
        let recipient = stored.unwrap_or_else(|| identity.to_public());
        let public = recipient_bytes(&recipient)?;
        Some((Self { identity, secret, exchange_key: OnceLock::new(), public, recipient }, derived))
    }

    /// The secret as age writes it.
    pub(crate) fn secret_text(&self) -> SecretString {
        self.identity.to_string()
    }

    /// The public key as stored beside the secret: the recipient and its check.
    pub(crate) fn public_text(&self) -> String {
        format!("{} {}\n", self.recipient, check_of(&self.secret))
    }

    /// `plain`, sealed to this key as an age file.
    pub(crate) fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, age::EncryptError> {
        age::encrypt(self, plain)
    }

    /// An age file sealed to this key, opened; `None` when it is not one.
    pub(crate) fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        age::decrypt(self, sealed).ok()
    }
}

impl age::Identity for SealingKey {
    /// As `age::x25519::Identity` unwraps an X25519 stanza (the same checks: one canonical
    /// base64 argument, a 32-byte body, a contributory key exchange), with the stored
    /// public key in the salt.
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != STANZA_TAG {
            return None;
        }
        let invalid = Some(Err(age::DecryptError::InvalidHeader));
        let [share] = &stanza.args[..] else { return invalid };
        let Some(share) = ephemeral_share(share) else { return invalid };
        let Ok(sealed_file_key) = <[u8; SEALED_FILE_KEY_BYTES]>::try_from(&stanza.body[..]) else { return invalid };
        let exchange_key =
            self.exchange_key.get_or_init(|| PrivateKey::from_private_key(&X25519, &self.secret[..]).ok());
        let Some(secret) = exchange_key else { return invalid };
        let salt = salt(&share, &self.public);
        // AWS-LC refuses an exchange that is not contributory (an all-zero result).
        let Ok(key) = agreement::agree(secret, UnparsedPublicKey::new(&X25519, share), (), |shared| {
            Ok(age_core::primitives::hkdf(&salt, KEY_LABEL, shared))
        }) else {
            return invalid;
        };
        // Not ours is not an error: another identity may open the stanza.
        let mut plain = age_core::primitives::aead_decrypt(&key, FILE_KEY_BYTES, &sealed_file_key).ok()?;
        let file_key = FileKey::init_with_mut(|file_key| file_key.copy_from_slice(&plain));
        plain.zeroize();
        Some(Ok(file_key))
    }
}

impl age::Recipient for SealingKey {
    /// As `age::x25519::Recipient` wraps a file key: a fresh ephemeral share, the key
    /// exchange with this key's public key, the file key sealed under the derived key.
    fn wrap_file_key(&self, file_key: &FileKey) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let failed = || age::EncryptError::Io(std::io::Error::other("the X25519 key exchange failed"));
        let ephemeral =
            EphemeralPrivateKey::generate(&X25519, &aws_lc_rs::rand::SystemRandom::new()).map_err(|_| failed())?;
        let share = ephemeral.compute_public_key().map_err(|_| failed())?;
        let share: [u8; 32] = share.as_ref().try_into().map_err(|_| failed())?;
        let salt = salt(&share, &self.public);
        let key = agreement::agree_ephemeral(ephemeral, UnparsedPublicKey::new(&X25519, self.public), (), |shared| {
            Ok(age_core::primitives::hkdf(&salt, KEY_LABEL, shared))
        })
        .map_err(|()| failed())?;
        let stanza = Stanza {
            tag: STANZA_TAG.to_owned(),
            args: vec![base64::engine::general_purpose::STANDARD_NO_PAD.encode(share)],
            body: age_core::primitives::aead_encrypt(&key, file_key.expose_secret()),
        };
        Ok((vec![stanza], HashSet::new()))
    }
}

/// The stanza's key derivation salt: the ephemeral share, then the recipient's public key.
fn salt(share: &[u8; 32], public: &[u8; 32]) -> [u8; 64] {
    let mut salt = [0; 64];
    salt[..32].copy_from_slice(share);
    salt[32..].copy_from_slice(public);
    salt
}

/// What binds a stored public key to its secret: the start of a hash of the secret, so a
/// public key stored for another secret (or damaged) is not taken for this one's.
fn check_of(secret: &[u8; 32]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"mayfly sealing key check\0");
    hash.update(secret);
    hex::encode(&hash.finalize()[..8])
}

/// The stanza's ephemeral share: 32 bytes as canonical unpadded base64 (43 characters).
fn ephemeral_share(arg: &str) -> Option<[u8; 32]> {
    if arg.len() != 43 {
        return None;
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(arg).ok()?.try_into().ok()
}

/// The 32 bytes of an `AGE-SECRET-KEY-1…` Bech32 string.
fn secret_bytes(text: &str) -> Option<[u8; 32]> {
    let (hrp, data, variant) = bech32::decode(text).ok()?;
    if hrp != "age-secret-key-" || variant != bech32::Variant::Bech32 {
        return None;
    }
    let mut bytes = Vec::<u8>::from_base32(&data).ok()?;
    let secret = <[u8; 32]>::try_from(&bytes[..]).ok();
    bytes.zeroize();
    secret
}

/// The 32 bytes of a recipient (`age1…`).
fn recipient_bytes(recipient: &age::x25519::Recipient) -> Option<[u8; 32]> {
    let (_, data, _) = bech32::decode(&recipient.to_string()).ok()?;
    Vec::<u8>::from_base32(&data).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_key_seals_it_and_age_open_and_others_do_not() {
        let key = SealingKey::generate();
        let sealed = key.seal(b"entry").unwrap();
        assert_eq!(key.open(&sealed).as_deref(), Some(&b"entry"[..]));
        assert_ne!(key.seal(b"entry").unwrap(), sealed, "each file has a fresh ephemeral share and file key");
        // The same file opens with age's own identity: the format is plain age.
        let age_identity = age::x25519::Identity::from_str(key.secret_text().expose_secret()).unwrap();
        assert_eq!(age::decrypt(&age_identity, &sealed).unwrap(), b"entry");
        // And what age seals to the recipient opens here.
        let by_age = age::encrypt(&age_identity.to_public(), b"other").unwrap();
        assert_eq!(key.open(&by_age).as_deref(), Some(&b"other"[..]));
        assert_eq!(SealingKey::generate().open(&sealed), None, "another key");
    }

    #[test]
    fn a_stored_public_key_is_read_only_while_its_check_matches_the_secret() {
        let key = SealingKey::generate();
        let secret = key.secret_text();
        let secret = secret.expose_secret();
        let sealed = key.seal(b"x").unwrap();
        let (read, derived) = SealingKey::read(secret, Some(&key.public_text())).unwrap();
        assert!(!derived, "stored and matching: read, not derived");
        assert_eq!(read.public, key.public);
        assert_eq!(read.open(&sealed).as_deref(), Some(&b"x"[..]));

        // Missing (an older version stored the secret alone), another key's, damaged: derived.
        let other = SealingKey::generate();
        let mut damaged = key.public_text();
        damaged.replace_range(damaged.len() - 2..damaged.len() - 1, "x");
        let another_recipient = format!("{} {}\n", other.recipient, check_of(&key.secret));
        for public in [None, Some(other.public_text()), Some(damaged), Some("garbage".into())] {
            let (read, derived) = SealingKey::read(secret, public.as_deref()).unwrap();
            assert!(derived, "{public:?}");
            assert_eq!(read.public, key.public, "{public:?}");
            assert_eq!(read.open(&sealed).as_deref(), Some(&b"x"[..]));
        }
        // A recipient written with this secret's check is taken as stored: whoever can
        // write it can replace the secret too. It opens nothing of this key's.
        let (wrong, derived) = SealingKey::read(secret, Some(&another_recipient)).unwrap();
        assert!(!derived);
        assert_eq!(wrong.open(&sealed), None, "the salt names the recipient: a wrong one fails the AEAD");
        for text in ["", "AGE-SECRET-KEY-1QQQ", &format!("{secret}\n{secret}")] {
            assert!(SealingKey::read(text, None).is_none(), "{text:?}");
        }
    }

    #[test]
    fn malformed_stanzas_are_refused() {
        let key = SealingKey::generate();
        let share = base64::engine::general_purpose::STANDARD_NO_PAD.encode([9u8; 32]);
        let stanza = |args: Vec<String>, body: Vec<u8>| Stanza { tag: STANZA_TAG.into(), args, body };
        use age::Identity;
        let refused = |s: Stanza| matches!(key.unwrap_stanza(&s), Some(Err(age::DecryptError::InvalidHeader)));
        assert!(refused(stanza(vec![], vec![0; 32])), "no share");
        assert!(refused(stanza(vec![share.clone(), share.clone()], vec![0; 32])), "two shares");
        assert!(refused(stanza(vec![format!("{share}=")], vec![0; 32])), "padded");
        assert!(refused(stanza(vec![share.clone()], vec![0; 31])), "short body");
        // The all-zero share makes a non-contributory exchange.
        let zero = base64::engine::general_purpose::STANDARD_NO_PAD.encode([0u8; 32]);
        assert!(refused(stanza(vec![zero], vec![0; 32])), "zero share");
        // Another tag is not ours to judge; a well-formed stanza for another key is not ours.
        assert!(key.unwrap_stanza(&Stanza { tag: "scrypt".into(), args: vec![], body: vec![] }).is_none());
        assert!(key.unwrap_stanza(&stanza(vec![share], vec![0; 32])).is_none());
    }
}
