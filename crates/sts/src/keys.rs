//! Signing keys: ES256 for minted tokens (and RS256 for development issuers), each with
//! the public JWK that verifiers fetch. The private key is parsed once, when the key is
//! made or loaded: signing through `jsonwebtoken::encode` would parse it again per token.
//!
//! A [`KeySet`] holds every configured key: one active key signs, the published ones are
//! in the JWKS and still verify the tokens they signed, the retired ones verify nothing.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Supported signature algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

/// A parsed private key, ready to sign.
enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A private key, its key id and its public JWK.
pub struct SigningKey {
    algorithm: Algorithm,
    kid: String,
    signer: Signer,
    jwk: Value,
    pem: String,
    cert_der: Option<Vec<u8>>,
    cert_pem: Option<String>,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate(algorithm: Algorithm) -> Result<Self, String> {
        let alg = match algorithm {
            Algorithm::Es256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::Rs256 => &rcgen::PKCS_RSA_SHA256,
        };
        let pair = rcgen::KeyPair::generate_for(alg).map_err(|e| e.to_string())?;
        Self::from_pair(algorithm, &pair)
    }

    /// An ES256 key from a PKCS#8 PEM file.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err("signing key must be ECDSA P-256".into());
        }
        Self::from_pair(Algorithm::Es256, &pair)
    }

    fn from_pair(algorithm: Algorithm, pair: &rcgen::KeyPair) -> Result<Self, String> {
        let raw = pair.public_key_raw();
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(raw)[..12]);
        let pkcs8 = pair.serialize_der();
        let (signer, jwk) = match algorithm {
            Algorithm::Es256 => {
                // Uncompressed point: 0x04 || x || y.
                let (x, y) = raw[1..].split_at(32);
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256", "use": "sig"});
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).map_err(|e| e.to_string())?;
                (Signer::Es256(pair), jwk)
            }
            Algorithm::Rs256 => {
                let (n, e) = rsa_public_components(raw).ok_or("cannot read RSA public key")?;
                let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e), "kid": kid, "alg": "RS256", "use": "sig"});
                (Signer::Rs256(RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| e.to_string())?), jwk)
            }
        };
        Ok(Self { algorithm, kid, signer, jwk, pem: pair.serialize_pem(), cert_der: None, cert_pem: None })
    }

    /// The same key under another key id.
    pub fn with_kid(mut self, kid: &str) -> Self {
        kid.clone_into(&mut self.kid);
        self.jwk["kid"] = Value::from(kid);
        self
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The private key as PKCS#8 PEM (to hand to a registry or persist by the operator).
    pub fn private_pem(&self) -> &str {
        &self.pem
    }

    /// A self-signed certificate for this key, placed in the `x5c` header of every token
    /// so that resource servers that pin certificates (the distribution registry) can
    /// trust the exchange directly.
    pub fn with_certificate(mut self, common_name: &str) -> Result<Self, String> {
        let pair = rcgen::KeyPair::from_pem(&self.pem).map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&pair).map_err(|e| e.to_string())?;
        self.cert_der = Some(cert.der().to_vec());
        self.cert_pem = Some(cert.pem());
        Ok(self)
    }

    /// The certificate from [`SigningKey::with_certificate`], PEM (a registry's
    /// `rootcertbundle`).
    pub fn certificate_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Signs claims into a compact JWS with `kid` (and `typ` when given).
    pub fn sign<T: Serialize>(&self, typ: Option<&str>, claims: &T) -> Result<String, String> {
        let mut header = Header::new(match self.algorithm {
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
        });
        header.kid = Some(self.kid.clone());
        header.typ = typ.map(str::to_owned);
        if let Some(der) = &self.cert_der {
            header.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(der)]);
        }
        // JWS compact serialization (RFC 7515 §7.1), as `jsonwebtoken::encode` builds it.
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|e| e.to_string())?);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).map_err(|e| e.to_string())?, &mut token);
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Es256(pair) => pair.sign(&rng, token.as_bytes()).map_err(|e| e.to_string())?.as_ref().to_vec(),
            Signer::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut signature).map_err(|e| e.to_string())?;
                signature
            }
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

/// What a configured key does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Signs every new token (exactly one key is active), and verifies.
    #[default]
    Active,
    /// In the JWKS and verifies the tokens it signed, but signs nothing: a key about to
    /// become active, or one that was and whose tokens still live.
    Published,
    /// Neither published nor trusted: a token it signed is refused.
    Retired,
}

/// A `[[signing_keys]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyEntry {
    /// PKCS#8 PEM file of a P-256 key.
    pub file: PathBuf,
    /// The key id (`kid`); derived from the public key when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `active`, `published` or `retired`.
    pub state: KeyState,
}

/// Why a token presented back is not verified by any key of the set.
#[derive(Debug)]
pub(crate) enum KeyRefusal {
    /// No `kid`, or one this exchange never had (or no longer lists).
    Unknown,
    /// A key the config retired.
    Retired,
    /// The key is trusted but the token does not verify (signature, claims, expiry).
    Invalid(jsonwebtoken::errors::Error),
}

/// One key of a set, with what verifies with it.
struct Member {
    key: Arc<SigningKey>,
    state: KeyState,
    decoding: jsonwebtoken::DecodingKey,
}

/// The exchange's keys: exactly one active, any number published or retired.
pub struct KeySet {
    members: Vec<Member>,
    active: usize,
}

/// The subject of the certificate each key carries in `x5c`.
const CERTIFICATE_NAME: &str = "mayfly-sts token signer";

impl KeySet {
    /// One key, active.
    pub fn single(key: SigningKey) -> Result<Self, String> {
        Self::new(vec![(Arc::new(key.with_certificate(CERTIFICATE_NAME)?), KeyState::Active)])
    }

    /// The keys the config lists, read from their files. A key `previous` already holds
    /// (same key id, same key) is kept as it is, certificate included, so that a reload
    /// changes nothing a registry pinned.
    pub fn load(entries: &[SigningKeyEntry], previous: Option<&Self>) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.file.display();
            let pem = std::fs::read_to_string(&entry.file).map_err(|e| format!("cannot read `{path}`: {e}"))?;
            let mut key = SigningKey::from_pem(&pem).map_err(|e| format!("`{path}`: {e}"))?;
            if let Some(kid) = &entry.kid {
                key = key.with_kid(kid);
            }
            let kept = previous
                .and_then(|p| p.members.iter().find(|m| m.key.kid == key.kid && m.key.pem == key.pem))
                .map(|m| m.key.clone());
            let key = match kept {
                Some(key) => key,
                None => Arc::new(key.with_certificate(CERTIFICATE_NAME)?),
            };
            keys.push((key, entry.state));
        }
        Self::new(keys)
    }

    fn new(keys: Vec<(Arc<SigningKey>, KeyState)>) -> Result<Self, String> {
        let active: Vec<usize> =
            keys.iter().enumerate().filter(|(_, (_, s))| *s == KeyState::Active).map(|(i, _)| i).collect();
        let [active] = active[..] else {
            return Err(format!("signing keys: {} are `active`; exactly one must be", active.len()));
        };
        let mut members: Vec<Member> = Vec::new();
        for (key, state) in keys {
            if members.iter().any(|m| m.key.kid == key.kid) {
                return Err(format!("signing keys: key id `{}` is listed twice", key.kid));
            }
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk.clone()).map_err(|e| e.to_string())?;
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
            members.push(Member { key, state, decoding });
        }
        Ok(Self { members, active })
    }

    /// The key that signs.
    pub fn active(&self) -> &SigningKey {
        &self.members[self.active].key
    }

    /// The keys verifiers may see: the active and the published ones.
    pub fn published(&self) -> impl Iterator<Item = &SigningKey> {
        self.members.iter().filter(|m| m.state != KeyState::Retired).map(|m| &*m.key)
    }

    /// The JWKS: every published key.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.published().map(SigningKey::jwk).collect::<Vec<_>>()})
    }

    /// The certificates of the published keys, one PEM bundle (a registry's
    /// `rootcertbundle`).
    pub fn certificates_pem(&self) -> String {
        self.published().filter_map(SigningKey::certificate_pem).collect()
    }

    /// Key ids and states, for a log line.
    pub fn summary(&self) -> String {
        let state = |s: KeyState| match s {
            KeyState::Active => "active",
            KeyState::Published => "published",
            KeyState::Retired => "retired",
        };
        self.members.iter().map(|m| format!("{} {}", m.key.kid, state(m.state))).collect::<Vec<_>>().join(", ")
    }

    /// Decodes a token signed by one of the set's active or published keys, chosen by the
    /// `kid` of its header, with `validation` (whose algorithm is set to the key's).
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        mut validation: jsonwebtoken::Validation,
    ) -> Result<jsonwebtoken::TokenData<T>, KeyRefusal> {
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid).ok_or(KeyRefusal::Unknown)?;
        let member = self.members.iter().find(|m| m.key.kid == kid).ok_or(KeyRefusal::Unknown)?;
        if member.state == KeyState::Retired {
            return Err(KeyRefusal::Retired);
        }
        validation.algorithms = vec![match member.key.algorithm {
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
        }];
        jsonwebtoken::decode(token, &member.decoding, &validation).map_err(KeyRefusal::Invalid)
    }
}

/// `n` and `e` from a PKCS#1 `RSAPublicKey` (SEQUENCE { INTEGER n, INTEGER e }).
fn rsa_public_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let count = (first & 0x7f) as usize;
            let (bytes, rest) = rest.split_at_checked(count)?;
            (bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize), rest)
        };
        rest.split_at_checked(len)
    }
    let (sequence, _) = element(der, 0x30)?;
    let (n, rest) = element(sequence, 0x02)?;
    let (e, _) = element(rest, 0x02)?;
    Some((n.strip_prefix(&[0]).unwrap_or(n), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_round_trip_through_the_public_jwk() {
        let key = SigningKey::generate(Algorithm::Es256).unwrap();
        let token = key.sign(Some("at+jwt"), &json!({"sub": "s", "exp": 4_000_000_000u64})).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "s");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        let reloaded = SigningKey::from_pem(key.private_pem()).unwrap();
        assert_eq!(reloaded.kid(), key.kid());
    }

    #[test]
    fn a_key_set_signs_with_the_active_key_and_verifies_by_kid_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, SigningKey::generate(Algorithm::Es256).unwrap().private_pem()).unwrap();
            path
        };
        let (old, new) = (write("old.pem"), write("new.pem"));
        let entry = |file: &PathBuf, state| SigningKeyEntry { file: file.clone(), kid: None, state };
        let before = KeySet::load(&[entry(&old, KeyState::Active), entry(&new, KeyState::Published)], None).unwrap();
        let token = before.active().sign(None, &json!({"sub": "s", "exp": 4_000_000_000u64})).unwrap();
        let validation = || {
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
            v.required_spec_claims.clear();
            v
        };
        assert!(before.decode::<Value>(&token, validation()).is_ok());
        assert_eq!(before.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(before.certificates_pem().matches("BEGIN CERTIFICATE").count(), 2);

        // Rotated: the new key signs, the old one still verifies; the same key keeps its
        // certificate across the reload.
        let rotated =
            KeySet::load(&[entry(&old, KeyState::Published), entry(&new, KeyState::Active)], Some(&before)).unwrap();
        assert_ne!(rotated.active().kid(), before.active().kid());
        assert!(rotated.decode::<Value>(&token, validation()).is_ok());
        assert_eq!(rotated.certificates_pem(), before.certificates_pem());

        // Retired: the old key's tokens are refused, and it leaves the JWKS.
        let retired =
            KeySet::load(&[entry(&old, KeyState::Retired), entry(&new, KeyState::Active)], Some(&rotated)).unwrap();
        assert!(matches!(retired.decode::<Value>(&token, validation()), Err(KeyRefusal::Retired)));
        assert_eq!(retired.jwks()["keys"].as_array().unwrap().len(), 1);
        let gone = KeySet::load(&[entry(&new, KeyState::Active)], None).unwrap();
        assert!(matches!(gone.decode::<Value>(&token, validation()), Err(KeyRefusal::Unknown)));

        let named =
            KeySet::load(&[SigningKeyEntry { kid: Some("2026-06".into()), ..entry(&new, KeyState::Active) }], None)
                .unwrap();
        assert_eq!((named.active().kid(), &named.jwks()["keys"][0]["kid"]), ("2026-06", &json!("2026-06")));

        let two = KeySet::load(&[entry(&old, KeyState::Active), entry(&new, KeyState::Active)], None);
        assert!(two.is_err_and(|e| e.contains("2 are `active`")));
        let twice = KeySet::load(&[entry(&new, KeyState::Active), entry(&new, KeyState::Published)], None);
        assert!(twice.is_err_and(|e| e.contains("listed twice")));
    }

    #[test]
    fn rs256_round_trip_through_the_public_jwk() {
        let key = SigningKey::generate(Algorithm::Rs256).unwrap();
        let token = key.sign(None, &json!({"sub": "s", "exp": 4_000_000_000u64})).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.required_spec_claims.clear();
        assert!(jsonwebtoken::decode::<Value>(&token, &decoding, &validation).is_ok());
    }
}
