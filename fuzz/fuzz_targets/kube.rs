//! kubectl's exec credential plugin: `serve` with `KUBERNETES_EXEC_INFO` and the plugin's
//! arguments.
//!
//! Input: a header line (`routed` picks the routed config), one argument per line up to a
//! line `--- exec-info`, then the variable's value.
//!
//! Invariants: no config here can serve a cluster, so every run exits 1 with nothing on
//! stdout (client-go would read anything there as a credential), and the process ancestry
//! is read only for the routed cluster.
#![no_main]

use std::cell::Cell;

use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::kube::serve;
use mayfly_core::{Env, EnvVars};
use mayfly_fuzz::{Header, lines, section, sections};

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let parts = sections(header.rest);
    let args = lines(section(&parts, "").unwrap_or_default());
    let mut vars: Vec<(String, String)> = header.env.vars().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    if let Some(info) = section(&parts, "exec-info") {
        vars.push((EnvVars::KUBERNETES_EXEC_INFO.to_owned(), String::from_utf8_lossy(info).into_owned()));
    }
    let read = Cell::new(false);
    let ancestry = || {
        read.set(true);
        Vec::new()
    };
    let mut out = Vec::new();
    let code = serve(&args, &mut out, Env::from_pairs(vars), &ancestry);
    assert_eq!(
        (code, out.as_slice()),
        (1, &b""[..]),
        "a cluster no config serves got {:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(!read.get() || header.routed, "the process ancestry was read with no routes");
});
