//! The docker credential helper protocol: `serve` with the server URL clients send.
//!
//! Input: a header line (the action, `get`, `erase`, `list` ..., and the word `routed` to
//! run under the routed config), then stdin.
//!
//! Invariants:
//! - every answer is one line on stdout;
//! - `get` of a server no route serves answers exactly the not-found text clients compare
//!   against, and exits 1; so does any server URL mayfly cannot read;
//! - a routed server that cannot be served gets an error line, never a credentials
//!   document;
//! - `erase` and `list` print nothing and `{}`; no answer is a credentials document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::docker::{NOT_FOUND, serve};
use mayfly_fuzz::{Header, OCI_HOST, empty_ancestry, no_ancestry};

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let args = vec![header.action.clone()];
    let mut out = Vec::new();
    let ancestry: &dyn Fn() -> Vec<_> = if header.routed { &empty_ancestry } else { &no_ancestry };
    let code = serve(&args, &mut &header.rest[..], &mut out, header.env.clone(), ancestry);
    let text = String::from_utf8(out).expect("answers are UTF-8");
    let document = serde_json::from_str::<serde_json::Value>(text.trim()).ok();
    assert!(document.is_none_or(|d| d.get("Secret").is_none()), "an answer carries a credential: {text:?}");
    let body = text.strip_suffix('\n').unwrap_or(&text);
    assert!(!body.contains(['\n', '\r']), "an answer of more than one line: {text:?}");
    // The helper reads the first 64 KiB.
    let input = std::str::from_utf8(&header.rest[..header.rest.len().min(64 * 1024)]).ok();
    match header.action.as_str() {
        "get" => {
            assert_eq!(code, 1, "a get without a route succeeded: {text:?}");
            match input.map(str::trim) {
                None => assert_eq!(body, "server URL is not UTF-8"),
                Some("") => assert_eq!(body, "no credentials server URL"),
                Some(_) if !header.routed => assert_eq!(body, NOT_FOUND, "an unrouted server got {text:?}"),
                Some(_) => {
                    let refused = format!("no token for https://{OCI_HOST}");
                    assert!(body == NOT_FOUND || body.starts_with(&refused), "a routed get answered {text:?}");
                }
            }
        }
        "erase" => assert_eq!((code, body), (0, "")),
        "list" => assert_eq!((code, body), (0, "{}")),
        _ => {}
    }
});
