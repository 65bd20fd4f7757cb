//! The key that seals cache entries and logins: an age X25519 identity, stored the way
//! `age-keygen` writes one, its recipient on a `# public key:` line above the secret.
//!
//! Sealing and opening are plain age (`age::encrypt` to the recipient, `age::decrypt`
//! with this key), so any age tool opens what mayfly seals. Opening is the one thing done
//! here rather than by `age::x25519::Identity`: that identity derives its own public key
//! again for every file it opens (the X25519 stanza's key derivation is salted with it), a
//! second curve multiplication beside the key exchange, a fifth of a cached `get`'s
//! instructions. Kept with the secret, the public key is read, not computed.

use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use age_core::secrecy::SecretString;
use base64::Engine;
use bech32::FromBase32;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

/// The X25519 stanza's tag and its key derivation's label (age's specification, c2sp.org/age).
const STANZA_TAG: &str = "X25519";
const KEY_LABEL: &[u8] = b"age-encryption.org/v1/X25519";
/// The line `age-keygen` writes above the secret.
const PUBLIC_KEY_LINE: &str = "# public key: ";
/// The file key's size, and its size sealed in the stanza's body (plus the AEAD tag).
const FILE_KEY_BYTES: usize = 16;
const SEALED_FILE_KEY_BYTES: usize = FILE_KEY_BYTES + 16;

/// An age X25519 identity and its recipient.
pub(crate) struct SealingKey {
    /// age's view of the secret, which writes it back as text.
    identity: age::x25519::Identity,
    /// The same secret, for the key exchange.
    secret: StaticSecret,
    public: PublicKey,
    recipient: age::x25519::Recipient,
}

impl SealingKey {
    /// A new random key.
    pub(crate) fn generate() -> Self {
        let identity = age::x25519::Identity::generate();
        Self::parse(identity.to_string().expose_secret()).expect("age writes keys it reads").0
    }

    /// Reads a key as [`Self::text`] (or `age-keygen`) writes it; the flag says its public
    /// key was missing (a key stored by an older mayfly, the bare secret) and had to be
    /// derived, so the key is worth storing again. `None` when there is no valid secret.
    pub(crate) fn parse(text: &str) -> Option<(Self, bool)> {
        let mut secret_line = None;
        let mut public_line = None;
        for line in text.lines().map(str::trim) {
            if let Some(public) = line.strip_prefix(PUBLIC_KEY_LINE) {
                public_line = Some(public);
            } else if !line.is_empty() && !line.starts_with('#') {
                // One secret only: a second is not a key this module wrote.
                if secret_line.replace(line).is_some() {
                    return None;
                }
            }
        }
        let secret_line = secret_line?;
        let identity = age::x25519::Identity::from_str(secret_line).ok()?;
        let secret = StaticSecret::from(secret_bytes(secret_line)?);
        let recipient = match public_line {
            Some(public) => age::x25519::Recipient::from_str(public).ok()?,
            None => identity.to_public(),
        };
        let public = PublicKey::from(recipient_bytes(&recipient)?);
        Some((Self { identity, secret, public, recipient }, public_line.is_none()))
    }

    /// The key as stored: the `# public key:` line, then the secret (`age-keygen`'s layout).
    pub(crate) fn text(&self) -> SecretString {
        let text = format!("{PUBLIC_KEY_LINE}{}\n{}\n", self.recipient, self.identity.to_string().expose_secret());
        SecretString::from(text)
    }

    /// `plain`, sealed to this key as an age file.
    pub(crate) fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, age::EncryptError> {
        age::encrypt(&self.recipient, plain)
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
        let shared = self.secret.diffie_hellman(&PublicKey::from(share));
        if !shared.was_contributory() {
            return invalid;
        }
        let mut salt = [0; 64];
        salt[..32].copy_from_slice(&share);
        salt[32..].copy_from_slice(self.public.as_bytes());
        let key = age_core::primitives::hkdf(&salt, KEY_LABEL, shared.as_bytes());
        // Not ours is not an error: another identity may open the stanza.
        let mut plain = age_core::primitives::aead_decrypt(&key, FILE_KEY_BYTES, &sealed_file_key).ok()?;
        let file_key = FileKey::init_with_mut(|file_key| file_key.copy_from_slice(&plain));
        plain.zeroize();
        Some(Ok(file_key))
    }
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
        // The same file opens with age's own identity: the format is plain age.
        let secret = key.text();
        let age_identity = age::x25519::Identity::from_str(secret.expose_secret().lines().nth(1).unwrap()).unwrap();
        assert_eq!(age::decrypt(&age_identity, &sealed).unwrap(), b"entry");
        // And what age seals to the recipient opens here.
        let by_age = age::encrypt(&age_identity.to_public(), b"other").unwrap();
        assert_eq!(key.open(&by_age).as_deref(), Some(&b"other"[..]));
        assert_eq!(SealingKey::generate().open(&sealed), None, "another key");
    }

    #[test]
    fn a_stored_key_reads_back_and_a_bare_secret_gets_its_public_key() {
        let key = SealingKey::generate();
        let text = key.text();
        let (read, derived) = SealingKey::parse(text.expose_secret()).unwrap();
        assert!(!derived);
        assert_eq!(read.public.as_bytes(), key.public.as_bytes());
        let sealed = key.seal(b"x").unwrap();
        assert_eq!(read.open(&sealed).as_deref(), Some(&b"x"[..]));

        // What older versions stored: the secret alone.
        let bare = text.expose_secret().lines().nth(1).unwrap().to_owned();
        let (read, derived) = SealingKey::parse(&bare).unwrap();
        assert!(derived);
        assert_eq!(read.public.as_bytes(), key.public.as_bytes());
        assert_eq!(read.open(&sealed).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn a_wrong_public_key_opens_nothing_and_garbage_is_no_key() {
        let key = SealingKey::generate();
        let sealed = key.seal(b"x").unwrap();
        let other = SealingKey::generate();
        let secret = key.text().expose_secret().lines().nth(1).unwrap().to_owned();
        let mixed = format!("{PUBLIC_KEY_LINE}{}\n{secret}\n", other.recipient);
        let (wrong, _) = SealingKey::parse(&mixed).unwrap();
        assert_eq!(wrong.open(&sealed), None, "the salt names the recipient: a wrong one fails the AEAD");
        for text in ["", "# public key: age1x\n", "AGE-SECRET-KEY-1QQQ", &format!("{secret}\n{secret}\n")] {
            assert!(SealingKey::parse(text).is_none(), "{text:?}");
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
