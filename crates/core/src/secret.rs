//! The one type every token travels in.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A token or key: no `Display`, a redacted `Debug`, zeroized on drop.
///
/// The only way to the bytes is [`Secret::expose`], so every place a token leaves the
/// process is a visible call site.
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret value. Call only where the value is handed to its one consumer.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A short, stable fingerprint that identifies the token in logs without revealing it.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.expose())
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self::new(self.expose().to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// `sha256:` and the first 16 hex digits of the SHA-256 of a token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Fingerprints any value.
    pub fn of(value: &str) -> Self {
        let digest = Sha256::digest(value.as_bytes());
        Self(format!("sha256:{}", &hex::encode(digest)[..16]))
    }

    /// The printable form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("ghs_very_secret");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert!(!format!("{:?}", Some(&secret)).contains("ghs_"));
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        let a = Secret::new("abc").fingerprint();
        assert_eq!(a.as_str(), "sha256:ba7816bf8f01cfea");
        assert_eq!(a, Fingerprint::of("abc"));
    }
}
