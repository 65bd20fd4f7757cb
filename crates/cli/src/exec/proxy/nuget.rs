//! NuGet through the proxy: `nuget push` and `dotnet nuget push` send the API key as the
//! whole `X-NuGet-ApiKey` value of `PUT /api/v2/package` (a multipart form holding the
//! `.nupkg`). The client holds no key (or the placeholder); the proxy mints one through the
//! route's exchange and sets the header on the push alone. Reads (`nuget push` probes the
//! source with a `GET` first, and v3 clients read the service index) need no key and get
//! none. Unlisting and relisting (`DELETE`/`POST` on a version) are refused: a trusted
//! publishing key pushes.
//!
//! The client shows a refused push as the answer's reason phrase (`Failed to process
//! request. 'REASON'.`), so mayfly's one-line refusal goes there as well as in the body.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Response, StatusCode, header};
use mayfly_core::Operation;

#[cfg(test)]
use super::PLACEHOLDER;
use super::operation::{Detected, Family, Subject};
use super::{Body, placeholder};

/// The header NuGet's push API reads the key from.
pub(super) const API_KEY: &str = "x-nuget-apikey";

/// A NuGet request: reads are keyless; `PUT /api/v2/package` publishes.
pub(super) fn detect(method: &Method, path: &str) -> Result<Detected, String> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(Detected { operation: Operation::Read, subject: Subject::Host });
    }
    let push = path.strip_suffix('/').unwrap_or(path).ends_with("/api/v2/package");
    if *method == Method::PUT && push {
        return Ok(Detected { operation: Operation::Publish, subject: Subject::Host });
    }
    Err(format!(
        "`{method} {}` is not a NuGet push, the one request mayfly adds a key to",
        mayfly_core::sanitize_for_terminal(&path.chars().take(120).collect::<String>())
    ))
}

/// True when a request of `family` goes upstream without a key: a NuGet gallery's reads.
pub(super) fn keyless(family: Family, operation: Operation) -> bool {
    family == Family::Nuget && operation == Operation::Read
}

/// Removes a placeholder key, so a request without a minted key carries none.
pub(super) fn drop_placeholder(headers: &mut header::HeaderMap) {
    if headers.get(API_KEY).is_some_and(|v| placeholder(v.as_bytes())) {
        headers.remove(API_KEY);
    }
}

/// A refusal as the client shows it: the line as the reason phrase, and as the body.
pub(super) fn refusal(status: StatusCode, line: &str) -> Response<Body> {
    let mut response =
        Response::new(Full::new(Bytes::from(format!("{line}\n"))).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(line.as_bytes().to_vec()) {
        response.extensions_mut().insert(phrase);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_push_gets_a_key() {
        let push = detect(&Method::PUT, "/api/v2/package/").unwrap();
        assert_eq!((push.operation, push.subject), (Operation::Publish, Subject::Host));
        assert_eq!(detect(&Method::PUT, "/api/v2/package").unwrap().operation, Operation::Publish);
        assert_eq!(detect(&Method::GET, "/").unwrap().operation, Operation::Read);
        assert_eq!(detect(&Method::GET, "/v3/index.json").unwrap().operation, Operation::Read);
        for (method, path) in [
            (Method::DELETE, "/api/v2/package/Mayfly.Demo/1.0.0"),
            (Method::POST, "/api/v2/package/Mayfly.Demo/1.0.0"),
            (Method::PUT, "/api/v2/package/Mayfly.Demo"),
            (Method::PUT, "/api/v2/packagex"),
        ] {
            assert!(detect(&method, path).is_err(), "{method} {path}");
        }
        assert!(keyless(Family::Nuget, Operation::Read) && !keyless(Family::Nuget, Operation::Publish));
        assert!(!keyless(Family::Rest, Operation::Read));
    }

    #[test]
    fn a_placeholder_key_is_dropped_and_a_refusal_is_its_reason_phrase() {
        let mut headers = header::HeaderMap::new();
        headers.insert(API_KEY, header::HeaderValue::from_static(PLACEHOLDER));
        drop_placeholder(&mut headers);
        assert!(headers.get(API_KEY).is_none());
        headers.insert(API_KEY, header::HeaderValue::from_static("oy2-someone-elses"));
        drop_placeholder(&mut headers);
        assert!(headers.get(API_KEY).is_some());
        let response = refusal(StatusCode::FORBIDDEN, "mayfly: no");
        let phrase = response.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(phrase.as_bytes(), b"mayfly: no");
    }
}
