//! NuGet through the proxy: `nuget push` and `dotnet nuget push` send the API key as the
//! whole `X-NuGet-ApiKey` value of `PUT /api/v2/package` (a multipart form holding the
//! `.nupkg`). The client holds no key (or the placeholder); the proxy mints one through the
//! route's exchange and sets the header on the push alone. Reads (`nuget push` probes the
//! source with a `GET` first, and v3 clients read the service index) need no key and get
//! none. Unlisting and relisting (`DELETE`/`POST` on a version) are refused: a trusted
//! publishing key pushes.
//!
//! The push path is the gallery's own, exactly: the exchange's token endpoint
//! (`.../api/v2/token`) with `token` replaced by `package`, with or without a final `/`.
//! `dotnet nuget push` also pushes a `.snupkg` beside the `.nupkg` as
//! `PUT .../api/v2/symbolpackage`: that is a publish to the same gallery and gets the
//! gallery's key the same way (nuget.org decides whether the key covers it).
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

/// The last segments of the two pushes: a package and a symbol package.
const PUSHES: [&str; 2] = ["/package", "/symbolpackage"];

/// A NuGet request: reads are keyless; a `PUT` of a package or symbol package publishes
/// (its path is matched against the route's gallery by [`push_path`]).
pub(super) fn detect(method: &Method, path: &str) -> Result<Detected, String> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(Detected { operation: Operation::Read, subject: Subject::Host });
    }
    let last = path.strip_suffix('/').unwrap_or(path);
    if *method == Method::PUT && PUSHES.iter().any(|push| last.ends_with(push)) {
        return Ok(Detected { operation: Operation::Publish, subject: Subject::Host });
    }
    Err(not_a_push(method, path))
}

fn not_a_push(method: &Method, path: &str) -> String {
    format!(
        "`{method} {}` is not a NuGet push, the one request mayfly adds a key to",
        mayfly_core::sanitize_for_terminal(&path.chars().take(120).collect::<String>())
    )
}

/// A routed NuGet push must be the gallery's own push path, exactly: the path of the
/// exchange's token endpoint with its final `/token` replaced by `/package` (or
/// `/symbolpackage`), with or without a final `/`. Nothing is decoded or normalised: a
/// `//`, a `..`, or anything before the gallery's prefix is refused.
pub(super) fn push_path(token_endpoint: &url::Url, method: &Method, path: &str) -> Result<(), String> {
    let Some(prefix) = token_endpoint.path().strip_suffix("/token") else {
        return Err(format!("the token endpoint `{}` does not end in `/token`", token_endpoint.path()));
    };
    let push = path.strip_suffix('/').unwrap_or(path);
    match push.strip_prefix(prefix) {
        Some(last) if PUSHES.contains(&last) => Ok(()),
        _ => Err(not_a_push(method, path)),
    }
}

/// For a routed request of `family`: a NuGet push must go to the route's gallery's push
/// path (see [`push_path`]); anything else passes.
pub(super) fn check_routed(
    family: Family,
    config: &mayfly_core::Config,
    route: &mayfly_core::Route,
    method: &Method,
    path: &str,
) -> Result<(), String> {
    if family != Family::Nuget {
        return Ok(());
    }
    match config.exchanges.get(&route.exchange) {
        Some(exchange) => push_path(&exchange.token_endpoint, method, path),
        None => Err(format!("route `{}` names no exchange of this config", route.name)),
    }
}

/// True when a request of `family` goes upstream without a key: a NuGet gallery's reads.
pub(super) fn keyless(family: Family, operation: Operation) -> bool {
    family == Family::Nuget && operation == Operation::Read
}

/// Removes every placeholder key, so a request without a minted key carries none; other
/// values stay as they were.
pub(super) fn drop_placeholder(headers: &mut header::HeaderMap) {
    if !headers.get_all(API_KEY).iter().any(|v| placeholder(v.as_bytes())) {
        return;
    }
    let kept: Vec<_> = headers.get_all(API_KEY).iter().filter(|v| !placeholder(v.as_bytes())).cloned().collect();
    headers.remove(API_KEY);
    for value in kept {
        headers.append(API_KEY, value);
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
    fn a_push_gets_a_key_only_at_the_gallerys_own_push_path() {
        let nuget_org = url::Url::parse("https://www.nuget.org/api/v2/token").unwrap();
        for path in ["/api/v2/package", "/api/v2/package/", "/api/v2/symbolpackage", "/api/v2/symbolpackage/"] {
            assert!(detect(&Method::PUT, path).is_ok(), "{path}");
            assert!(push_path(&nuget_org, &Method::PUT, path).is_ok(), "{path}");
        }
        // Each a PUT the client would not send to nuget.org's push API, but whose end
        // looks like it: none gets the key.
        for path in [
            "/anything/api/v2/package",
            "//api/v2/package",
            "/x/../api/v2/package",
            "/api/v2/../v2/package",
            "/api/v2//package",
            "/api/v2/package//",
            "/api/v2/./package",
            "/api/v2/%70ackage",
            "/API/v2/package",
            "/api/v3/package",
            "/package",
            "/api/v2/token",
        ] {
            let err = push_path(&nuget_org, &Method::PUT, path).unwrap_err();
            assert!(err.contains("is not a NuGet push") && !err.contains('\n'), "{path}: {err}");
        }
        // A gallery under a prefix: its push path is under the same prefix, and only there.
        let prefixed = url::Url::parse("http://localhost:8080/gallery/api/v2/token").unwrap();
        assert!(push_path(&prefixed, &Method::PUT, "/gallery/api/v2/package/").is_ok());
        assert!(push_path(&prefixed, &Method::PUT, "/gallery/api/v2/symbolpackage").is_ok());
        for path in ["/api/v2/package", "/other/gallery/api/v2/package", "/gallery/../api/v2/package"] {
            assert!(push_path(&prefixed, &Method::PUT, path).is_err(), "{path}");
        }
        let odd = url::Url::parse("https://www.nuget.org/api/v2/mint").unwrap();
        assert!(push_path(&odd, &Method::PUT, "/api/v2/package").unwrap_err().contains("does not end in `/token`"));
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
        // Every placeholder goes, wherever it stands among the values; others stay.
        headers.insert(API_KEY, header::HeaderValue::from_static("oy2-first"));
        headers.append(API_KEY, header::HeaderValue::from_static(PLACEHOLDER));
        headers.append(API_KEY, header::HeaderValue::from_static(PLACEHOLDER));
        headers.append(API_KEY, header::HeaderValue::from_static("oy2-last"));
        drop_placeholder(&mut headers);
        let left: Vec<_> = headers.get_all(API_KEY).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(left, ["oy2-first", "oy2-last"]);
        headers.remove(API_KEY);
        headers.append(API_KEY, header::HeaderValue::from_static(PLACEHOLDER));
        headers.append(API_KEY, header::HeaderValue::from_static(PLACEHOLDER));
        drop_placeholder(&mut headers);
        assert!(!headers.contains_key(API_KEY));
        let response = refusal(StatusCode::FORBIDDEN, "mayfly: no");
        let phrase = response.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(phrase.as_bytes(), b"mayfly: no");
    }
}
