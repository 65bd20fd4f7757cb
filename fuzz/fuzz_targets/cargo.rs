//! cargo's credential provider protocol: `serve` over the JSON lines cargo writes.
//!
//! Input: a header line (`routed` picks the routed config), then stdin.
//!
//! Invariants:
//! - the first line is the hello `{"v":[1]}`, then exactly one answer per request line;
//! - every answer is one line of JSON, `{"Ok":…}` or `{"Err":…}`, that serialises back to
//!   the same bytes;
//! - no route, no token: without routes an `Ok` is only a logout; under the routed config
//!   an `Ok` `get` carries only the public-index marker, never a credential.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::cargo::{NO_READ_TOKEN, serve};
use mayfly_fuzz::{Header, empty_ancestry, no_ancestry};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let mut out = Vec::new();
    let ancestry: &dyn Fn() -> Vec<_> = if header.routed { &empty_ancestry } else { &no_ancestry };
    let code = serve(&["--cargo-plugin".to_owned()], &mut &header.rest[..], &mut out, header.env.clone(), ancestry);
    assert_eq!(code, 0, "reading from memory cannot fail");
    let text = String::from_utf8(out).expect("answers are UTF-8");
    let answers: Vec<&str> = text.strip_suffix('\n').expect("answers end with LF").split('\n').collect();
    assert_eq!(answers[0], r#"{"v":[1]}"#);
    let requests = header.rest.split_inclusive(|&b| b == b'\n').count();
    assert_eq!(answers.len() - 1, requests, "not one answer per request line");
    for line in &answers[1..] {
        let value: Value = serde_json::from_str(line).expect("an answer is JSON");
        assert_eq!(serde_json::to_string(&value).unwrap(), *line, "an answer does not round-trip");
        let object = value.as_object().expect("an answer is an object");
        assert_eq!(object.len(), 1, "an answer is Ok or Err: {line}");
        if let Some(ok) = object.get("Ok") {
            match ok["kind"].as_str() {
                Some("logout") => {}
                Some("get") if header.routed => assert_eq!(ok["token"], NO_READ_TOKEN, "a credential: {line}"),
                _ => panic!("an Ok answer without a token to give: {line}"),
            }
        } else {
            assert!(object.contains_key("Err"), "an answer is Ok or Err: {line}");
        }
    }
});
