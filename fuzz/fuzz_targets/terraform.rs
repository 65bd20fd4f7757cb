//! Terraform's credentials helper protocol: `serve` with the arguments and stdin
//! Terraform passes.
//!
//! Input: a header line (`routed` picks the routed config), then one argument per line up
//! to a line `--- stdin`, then stdin.
//!
//! Invariants:
//! - exit 0 prints `{}` (no route: Terraform's "no credentials") for `get`, and nothing
//!   for `forget`; exit 1 prints nothing; no answer ever carries `token`;
//! - a host that `get` accepted is a valid, normalisable host name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::terraform::serve;
use mayfly_core::{Target, Tool};
use mayfly_fuzz::{Header, assert_normalised, empty_ancestry, lines, no_ancestry, section, sections};

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let parts = sections(header.rest);
    let args = lines(section(&parts, "").unwrap_or_default());
    let stdin = section(&parts, "stdin").unwrap_or_default();
    let mut out = Vec::new();
    let ancestry: &dyn Fn() -> Vec<_> = if header.routed { &empty_ancestry } else { &no_ancestry };
    let code = serve(&args, &mut &stdin[..], &mut out, header.env.clone(), ancestry);
    let text = String::from_utf8(out).expect("answers are UTF-8");
    assert!(!text.contains("token"), "an answer carries a token: {text:?}");
    match (code, args.as_slice()) {
        (0, [.., verb, host]) if verb == "get" => {
            assert_eq!(text, "{}\n");
            let target = Target::new(Tool::Terraform, "https", host, None).expect("an accepted host is valid");
            assert_normalised(&target);
        }
        (0, [.., verb, _]) if verb == "forget" => assert_eq!(text, ""),
        (0, _) => panic!("exit 0 for {args:?}: {text:?}"),
        (_, _) => assert_eq!((code, text.as_str()), (1, ""), "a failure printed on stdout"),
    }
});
