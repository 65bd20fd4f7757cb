//! Signing keys: ES256 for minted tokens (and RS256 for development issuers), each with
//! the public JWK that verifiers fetch. The private key is parsed once, when the key is
//! made or loaded: signing through `jsonwebtoken::encode` would parse it again per token.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde::Serialize;
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
