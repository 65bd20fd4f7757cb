//! Targets: the host and repository path normalisation every hook relies on to match
//! routes, and AWS route names (`mayfly-aws-credential NAME`).
//!
//! Input: a protocol line, a host line, then the path (absent when there is no third
//! line).
//!
//! Invariants:
//! - an accepted target is normalised: normalising its host or path again, or building
//!   it again from its parts, changes nothing, and its display URL names the same host;
//! - an accepted host has no userinfo, path, query or fragment, and the same host in
//!   another case normalises the same;
//! - `mayfly-aws-credential` with any name and no routes exits 1 and prints nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::{Target, Tool, normalize_host};
use mayfly_fuzz::{assert_normalised, fixture, no_ancestry};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let (protocol, host, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next());
    if let Ok(target) = Target::new(Tool::Git, protocol, host, path) {
        assert_normalised(&target);
        assert!(!target.host.contains(['@', '/', '\\', '?', '#']), "{target:?}");
        let upper = normalize_host(&target.protocol, &host.to_uppercase()).ok();
        if host.is_ascii() {
            assert_eq!(upper.as_ref(), Some(&target.host), "case changes the host of {target:?}");
        }
    }
    if let Ok(target) = Target::aws(host) {
        assert_eq!(target.host, host);
    }
    let mut out = Vec::new();
    let code = mayfly_core::protocol::aws::serve(&[host.to_owned()], &mut out, fixture().empty.clone(), &no_ancestry);
    assert_eq!((code, out.len()), (1, 0), "an aws route no config has");
});
