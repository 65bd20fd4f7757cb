//! Bazel's credential helper protocol: `serve` with the request Bazel writes on stdin.
//!
//! Input: a header line (the command, `get` or anything else, and the word `routed` to run
//! under the routed config, whose `http` route refuses the `read` every request is), then
//! stdin.
//!
//! Invariants:
//! - every answer is one line, on stdout or on stderr, never both;
//! - no answer carries headers: without a route nothing is minted, and the routed config
//!   refuses;
//! - a `get` whose URI no route serves answers `{}` with exit 0; one that cannot be read
//!   exits 1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::bazel::serve;
use mayfly_fuzz::{Header, empty_ancestry, no_ancestry};

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let args = vec![header.action.clone()];
    let mut out = Vec::new();
    let ancestry: &dyn Fn() -> Vec<_> = if header.routed { &empty_ancestry } else { &no_ancestry };
    let code = serve(&args, &mut &header.rest[..], &mut out, header.env.clone(), ancestry);
    let text = String::from_utf8(out).expect("answers are UTF-8");
    let body = text.strip_suffix('\n').unwrap_or(&text);
    assert!(!body.contains(['\n', '\r']), "an answer of more than one line: {text:?}");
    assert!(!body.contains("headers"), "an answer carries a credential: {text:?}");
    match (code, body) {
        (0, "{}") => {}
        (1, "") => {}
        _ => panic!("exit {code} with {text:?}"),
    }
    if header.action != "get" {
        assert_eq!(code, 1, "a command other than get was served: {text:?}");
    }
});
