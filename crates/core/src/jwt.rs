//! Reading a JWT's claims without verifying it: for expiry and for audit lines only.
//! Verification is the exchange's job, never the helper's.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// The claims mayfly looks at. Unverified: never used for an access decision.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: Option<String>,
    /// Subject.
    pub sub: Option<String>,
    /// Expiry, unix seconds.
    pub exp: Option<i64>,
    /// Token id.
    pub jti: Option<String>,
    /// Audience: one value or several (`mayfly status` shows it). Any other shape is empty
    /// rather than an unreadable token.
    #[serde(default, deserialize_with = "audiences")]
    pub aud: Vec<String>,
}

fn audiences<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(one) => vec![one],
        serde_json::Value::Array(many) => many.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    })
}

/// The payload claims of a compact JWS, or `None` if it is not one.
pub fn peek_claims(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"i","sub":"s","exp":5,"extra":[1]}"#);
        let claims = peek_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims.iss.as_deref(), Some("i"));
        assert_eq!(claims.exp, Some(5));
        assert!(claims.aud.is_empty());
        let aud = |json: &str| peek_claims(&format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(json))).unwrap().aud;
        assert_eq!(aud(r#"{"aud":"a"}"#), ["a"]);
        assert_eq!(aud(r#"{"aud":["a","b"]}"#), ["a", "b"]);
        assert!(aud(r#"{"aud":7,"exp":1}"#).is_empty());
        assert!(peek_claims("not-a-jwt").is_none());
        assert!(peek_claims("a.b.c.d").is_none());
    }
}
