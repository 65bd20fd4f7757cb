//! Cloud metadata servers: the machine's own identity, asked over plain HTTP on a
//! link-local address.
//!
//! - [`GceMetadata`] (`gce-metadata`): Google Compute Engine and GKE's metadata server,
//!   `GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=AUD&format=full`
//!   with `Metadata-Flavor: Google`; the answer is the raw JWT, and one without
//!   `Metadata-Flavor: Google` is refused (it is not the metadata server). The host is
//!   `$GCE_METADATA_HOST` when set, as Google's client libraries read it.
//! - [`AzureImds`] (`azure-imds`): Azure's Instance Metadata Service managed identity,
//!   `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=AUD`
//!   with `Metadata: true`; the answer is JSON with `access_token` and `expires_on`. The
//!   base is `$AZURE_POD_IDENTITY_AUTHORITY_HOST` when set, as the Azure SDKs (MSAL) read
//!   it. `IDENTITY_ENDPOINT` with `IDENTITY_HEADER` or `IMDS_ENDPOINT` (App Service, Arc)
//!   is another protocol, not this one.
//!
//! Both are probed by `auto` only after every variable- and file-based source, with a
//! 300 ms connect limit: a probe that fails means "not here".

use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::Env;

/// Google's client libraries' override of the metadata server's host.
pub(crate) const GCE_HOST_VAR: &str = "GCE_METADATA_HOST";
/// The metadata server's documented host name.
const GCE_HOST: &str = "metadata.google.internal";
/// The identity endpoint's path.
const GCE_IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
/// The Azure SDKs' override of the IMDS base URL.
pub(crate) const AZURE_BASE_VAR: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
/// IMDS's documented address.
const AZURE_BASE: &str = "http://169.254.169.254";
/// The managed identity token endpoint's path.
const AZURE_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The largest token body taken from a metadata server: ID and access tokens are a few
/// kilobytes; anything larger is not one.
const MAX_TOKEN: usize = 16 * 1024;

/// `kind = "gce-metadata"`.
#[derive(Debug)]
pub(crate) struct GceMetadata;

/// `kind = "azure-imds"`.
#[derive(Debug)]
pub(crate) struct AzureImds {
    /// A user-assigned managed identity's client id; the system-assigned one when `None`.
    pub(crate) client_id: Option<String>,
}

impl GceMetadata {
    /// `http://HOST`, the host from `$GCE_METADATA_HOST` when set.
    fn base(env: &Env) -> Result<url::Url, String> {
        let host = env.get(GCE_HOST_VAR).filter(|h| !h.is_empty()).unwrap_or(GCE_HOST);
        url::Url::parse(&format!("http://{host}")).map_err(|e| format!("`{GCE_HOST_VAR}`: {e}"))
    }

    /// True when a metadata server answers at its root with `Metadata-Flavor: Google`.
    pub(crate) fn probe(env: &Env) -> bool {
        let Ok(url) = Self::base(env) else { return false };
        matches!(
            crate::http::metadata_get(&url, &[("Metadata-Flavor", "Google")], "Metadata-Flavor", true),
            Ok((200, Some(flavor), _)) if flavor == "Google"
        )
    }
}

impl Source for GceMetadata {
    fn kind(&self) -> &'static str {
        "gce-metadata"
    }

    fn origin(&self, env: &Env) -> String {
        Self::base(env).ok().and_then(|u| crate::target::host_port(&u)).unwrap_or_else(|| GCE_HOST.into())
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn look(&self, env: &Env) -> Presence {
        match Self::base(env) {
            Ok(_) => Presence::Ready,
            Err(why) => Presence::Absent(why),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let name = ask.name;
        let audience = needs_audience(ask)?;
        let mut url = Self::base(ask.env).map_err(|why| Error::Unavailable(format!("identity `{name}`: {why}")))?;
        url.set_path(GCE_IDENTITY_PATH);
        url.query_pairs_mut().append_pair("audience", audience).append_pair("format", "full");
        let (status, flavor, body) =
            crate::http::metadata_get(&url, &[("Metadata-Flavor", "Google")], "Metadata-Flavor", false)?;
        let token = gce_answer(name, status, flavor.as_deref(), &body)?;
        SubjectToken::new(name, token, ask.now).map(Some)
    }
}

/// The audience a metadata server is asked for: it has no default.
fn needs_audience<'a>(ask: &Ask<'a>) -> Result<&'a str, Error> {
    ask.audience.filter(|a| !a.is_empty()).ok_or_else(|| {
        Error::Unavailable(format!("identity `{}`: a metadata server needs an audience: set `audience`", ask.name))
    })
}

/// The JWT in a GCE metadata server's answer.
fn gce_answer(source: &str, status: u16, flavor: Option<&str>, body: &[u8]) -> Result<String, Error> {
    if flavor != Some("Google") {
        return Err(Error::Malformed(format!(
            "identity `{source}`: the answer has no `Metadata-Flavor: Google`: not a GCE metadata server"
        )));
    }
    if status != 200 {
        return Err(Error::Unavailable(format!(
            "identity `{source}`: the GCE metadata server answered {status} (does the instance have a service account?)"
        )));
    }
    jwt(source, body)
}

/// A body that is one JWT and nothing else, at most [`MAX_TOKEN`] bytes.
fn jwt(source: &str, body: &[u8]) -> Result<String, Error> {
    if body.len() > MAX_TOKEN {
        return Err(Error::Malformed(format!(
            "identity `{source}`: the metadata server's answer is larger than {MAX_TOKEN} bytes"
        )));
    }
    let text = std::str::from_utf8(body).unwrap_or_default().trim();
    if text.split('.').count() != 3 || crate::jwt::peek_claims(text).is_none() {
        return Err(Error::Malformed(format!("identity `{source}`: the metadata server's answer is not a JWT")));
    }
    Ok(text.to_owned())
}

impl AzureImds {
    /// The IMDS base URL, `$AZURE_POD_IDENTITY_AUTHORITY_HOST` when set.
    fn base(env: &Env) -> Result<url::Url, String> {
        let base = env.get(AZURE_BASE_VAR).filter(|b| !b.is_empty()).unwrap_or(AZURE_BASE);
        url::Url::parse(base.trim_end_matches('/')).map_err(|e| format!("`{AZURE_BASE_VAR}`: {e}"))
    }

    /// True when IMDS answers its token endpoint, asked without `Metadata: true` as the
    /// Azure SDKs probe it, with its JSON refusal (`{"error": ...}`): no other server on
    /// the link-local address answers that way.
    pub(crate) fn probe(env: &Env) -> bool {
        let Ok(mut url) = Self::base(env) else { return false };
        url.set_path(AZURE_TOKEN_PATH);
        url.query_pairs_mut().append_pair("api-version", "2018-02-01");
        match crate::http::metadata_get(&url, &[], "Content-Type", true) {
            Ok((_, _, body)) => {
                serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.get("error").is_some())
            }
            Err(_) => false,
        }
    }
}

impl Source for AzureImds {
    fn kind(&self) -> &'static str {
        "azure-imds"
    }

    fn origin(&self, env: &Env) -> String {
        Self::base(env).ok().and_then(|u| crate::target::host_port(&u)).unwrap_or_else(|| "169.254.169.254".into())
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn look(&self, env: &Env) -> Presence {
        match Self::base(env) {
            Ok(_) => Presence::Ready,
            Err(why) => Presence::Absent(why),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let name = ask.name;
        let audience = needs_audience(ask)?;
        let mut url = Self::base(ask.env).map_err(|why| Error::Unavailable(format!("identity `{name}`: {why}")))?;
        url.set_path(AZURE_TOKEN_PATH);
        url.query_pairs_mut().append_pair("api-version", "2018-02-01").append_pair("resource", audience);
        if let Some(client_id) = &self.client_id {
            url.query_pairs_mut().append_pair("client_id", client_id);
        }
        let (status, _, body) = crate::http::metadata_get(&url, &[("Metadata", "true")], "Content-Type", false)?;
        let (token, expires_on) = azure_answer(name, status, &body)?;
        if let Some(expires_on) = expires_on.filter(|e| *e <= ask.now) {
            return Err(Error::Expired { source_name: name.into(), expired_at: crate::audit::rfc3339(expires_on) });
        }
        SubjectToken::new(name, token, ask.now).map(Some)
    }
}

/// The token in IMDS's answer and its `expires_on` (unix seconds, sent as a string).
fn azure_answer(source: &str, status: u16, body: &[u8]) -> Result<(String, Option<i64>), Error> {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_on: Option<serde_json::Value>,
        error: Option<String>,
    }
    if body.len() > MAX_TOKEN {
        return Err(Error::Malformed(format!(
            "identity `{source}`: the metadata server's answer is larger than {MAX_TOKEN} bytes"
        )));
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| Error::Malformed(format!("identity `{source}`: Azure IMDS's answer is not JSON")))?;
    if status != 200 {
        let error = answer.error.unwrap_or_else(|| "no error code".into());
        return Err(Error::Unavailable(format!(
            "identity `{source}`: Azure IMDS answered {status} ({error}; does the VM have a managed identity?)"
        )));
    }
    let token = answer
        .access_token
        .ok_or_else(|| Error::Malformed(format!("identity `{source}`: Azure IMDS's answer has no `access_token`")))?;
    let expires_on = match answer.expires_on {
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    Ok((jwt(source, token.as_bytes())?, expires_on))
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn jwt_text() -> String {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"aud":"sts","exp":100}"#);
        format!("e30.{payload}.c2ln")
    }

    #[test]
    fn gce_answers_need_the_flavor_and_a_jwt() {
        let token = jwt_text();
        assert_eq!(gce_answer("t", 200, Some("Google"), token.as_bytes()).unwrap(), token);
        let err = gce_answer("t", 200, None, token.as_bytes()).unwrap_err().to_string();
        assert_eq!(err, "identity `t`: the answer has no `Metadata-Flavor: Google`: not a GCE metadata server");
        assert!(gce_answer("t", 200, Some("Other"), token.as_bytes()).is_err());
        let err = gce_answer("t", 200, Some("Google"), b"<html>hello</html>").unwrap_err().to_string();
        assert_eq!(err, "identity `t`: the metadata server's answer is not a JWT");
        assert!(gce_answer("t", 200, Some("Google"), b"a.b.c").is_err(), "three parts are not enough");
        let err = gce_answer("t", 404, Some("Google"), b"").unwrap_err().to_string();
        assert!(err.contains("answered 404"), "{err}");
        let oversize = format!("{token}{}", "A".repeat(MAX_TOKEN));
        let err = gce_answer("t", 200, Some("Google"), oversize.as_bytes()).unwrap_err().to_string();
        assert_eq!(err, format!("identity `t`: the metadata server's answer is larger than {MAX_TOKEN} bytes"));
        assert!(!err.contains(&token));
    }

    #[test]
    fn azure_answers_give_the_access_token_and_its_expiry() {
        let token = jwt_text();
        let body = serde_json::json!({"access_token": token, "expires_on": "1700000000", "token_type": "Bearer"});
        let (got, expires_on) = azure_answer("t", 200, body.to_string().as_bytes()).unwrap();
        assert_eq!((got, expires_on), (token.clone(), Some(1_700_000_000)));
        let refused = br#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#;
        let err = azure_answer("t", 400, refused).unwrap_err().to_string();
        assert!(err.contains("Azure IMDS answered 400 (invalid_request;"), "{err}");
        let opaque = serde_json::json!({"access_token": "opaque", "expires_on": "1"});
        let err = azure_answer("t", 200, opaque.to_string().as_bytes()).unwrap_err().to_string();
        assert_eq!(err, "identity `t`: the metadata server's answer is not a JWT");
        assert!(azure_answer("t", 200, b"{}").unwrap_err().to_string().contains("no `access_token`"));
        assert!(azure_answer("t", 200, b"<html>").unwrap_err().to_string().contains("not JSON"));
        let big = serde_json::json!({"access_token": "A".repeat(MAX_TOKEN)}).to_string();
        assert!(azure_answer("t", 200, big.as_bytes()).unwrap_err().to_string().contains("larger than"));
    }

    #[test]
    fn hosts_come_from_the_sdks_variables() {
        let env = Env::default();
        assert_eq!(GceMetadata.origin(&env), "metadata.google.internal");
        assert_eq!(AzureImds { client_id: None }.origin(&env), "169.254.169.254");
        let env = Env::from_pairs([(GCE_HOST_VAR, "127.0.0.1:8080"), (AZURE_BASE_VAR, "http://127.0.0.1:9090/")]);
        assert_eq!(GceMetadata.origin(&env), "127.0.0.1:8080");
        assert_eq!(AzureImds { client_id: None }.origin(&env), "127.0.0.1:9090");
        // Nothing listens on port 9 of loopback: not here, at once.
        let dead = Env::from_pairs([(GCE_HOST_VAR, "127.0.0.1:9"), (AZURE_BASE_VAR, "http://127.0.0.1:9")]);
        assert!(!GceMetadata::probe(&dead) && !AzureImds::probe(&dead));
    }

    /// A loopback server answering each of `answers` (raw HTTP responses) once, in order.
    fn answering(answers: Vec<&'static str>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        address
    }

    #[test]
    fn probes_recognise_each_server_by_its_own_answer() {
        let google = "HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Length: 16\r\nConnection: close\r\n\r\ncomputeMetadata/";
        let plain = "HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\ncomputeMetadata/";
        let host = answering(vec![google, plain]);
        let env = Env::from_pairs([(GCE_HOST_VAR, host.as_str())]);
        assert!(GceMetadata::probe(&env), "Metadata-Flavor: Google");
        assert!(!GceMetadata::probe(&env), "the same body without the flavor is another server");

        let imds = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 88\r\nConnection: close\r\n\r\n{\"error\":\"invalid_request\",\"error_description\":\"Required metadata header not specified\"}";
        let other = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found";
        let host = answering(vec![imds, other]);
        let env = Env::from_pairs([(AZURE_BASE_VAR, format!("http://{host}"))]);
        assert!(AzureImds::probe(&env), "IMDS's JSON refusal");
        assert!(!AzureImds::probe(&env), "another server on the address (another cloud's metadata service)");
    }

    #[test]
    fn an_audience_is_needed() {
        let no_http = || -> Result<crate::HttpClient, crate::http::Error> { panic!("no network expected") };
        let env = Env::default();
        let ask = Ask { name: "t", audience: None, env: &env, http: &no_http, now: 0 };
        let err = GceMetadata.fetch(&ask).unwrap_err().to_string();
        assert_eq!(err, "identity `t`: a metadata server needs an audience: set `audience`");
        assert!(AzureImds { client_id: None }.fetch(&ask).is_err());
    }
}
