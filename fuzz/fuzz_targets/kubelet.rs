//! The kubelet's image credential provider: `serve` with the `CredentialProviderRequest`
//! the kubelet writes on stdin.
//!
//! Input: a header line (empty, or words passed as arguments, which are refused; the word
//! `routed` runs under the routed config, whose `oci` route refuses the `read` a pull is),
//! then stdin.
//!
//! Invariants:
//! - every answer is one line, on stdout or on stderr, never both;
//! - no answer carries a password: nothing is minted without a route, and the routed
//!   config refuses;
//! - an exit 0 answer is a v1 `CredentialProviderResponse` with an empty `auth`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::kubelet::serve;
use mayfly_fuzz::{Header, empty_ancestry, no_ancestry};

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let args: Vec<String> = match header.action.as_str() {
        "" | "routed" => Vec::new(),
        other => vec![other.to_owned()],
    };
    let mut out = Vec::new();
    let ancestry: &dyn Fn() -> Vec<_> = if header.routed { &empty_ancestry } else { &no_ancestry };
    let code = serve(&args, &mut &header.rest[..], &mut out, header.env.clone(), ancestry);
    let text = String::from_utf8(out).expect("answers are UTF-8");
    let body = text.strip_suffix('\n').unwrap_or(&text);
    assert!(!body.contains(['\n', '\r']), "an answer of more than one line: {text:?}");
    assert!(!body.contains("password"), "an answer carries a credential: {text:?}");
    match code {
        0 => {
            let answer: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
            assert_eq!(answer["kind"], "CredentialProviderResponse", "{text:?}");
            assert_eq!(answer["apiVersion"], "credentialprovider.kubelet.k8s.io/v1", "{text:?}");
            assert_eq!(answer["auth"], serde_json::json!({}), "{text:?}");
        }
        _ => assert_eq!(body, "", "a refusal wrote to stdout: {text:?}"),
    }
    if !args.is_empty() {
        assert_ne!(code, 0, "an argument was accepted: {text:?}");
    }
});
