//! `mayfly-sts`'s audit log: a token is answered only once its line is written, and the
//! file rotates by size, keeping the configured number of old files.

use std::path::Path;

use mayfly_tests::{Stack, spawn_sts_on};
use serde_json::{Value, json};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real exchange, allowed to grant reads of `org0/*` on host0 by one Cedar policy.
fn exchange(stack: &Stack, dir: &Path, audit: &Path, max_size: Option<u64>, keep: Option<usize>) -> (Killed, String) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/read.cedar"),
        "@id(\"read\")\npermit(principal, action == Action::\"read\", resource is GitRepository in Host::\"host0.example\")\n\
         when { principal.hasTag(\"repository\") && principal.getTag(\"repository\") like \"org0/*\" && resource.path like \"org0/*\" };\n",
    )
    .unwrap();
    let (listener, url) = mayfly_tests::https_listener();
    let config = mayfly_sts::ConfigFile {
        issuer: url.clone(),
        audit_log: Some(audit.to_owned()),
        audit_max_size: max_size,
        audit_keep: keep,
        policies: vec![dir.join("policies")],
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        ..Default::default()
    };
    (Killed(spawn_sts_on(dir, "audit-sts", listener, &config)), url)
}

fn post(stack: &Stack, url: &str) -> (u16, Value) {
    let subject = stack.issuer.mint("mayfly-sts", &json!({"sub": "repo:org0/app", "repository": "org0/app"}));
    let form = [
        ("grant_type", mayfly_core::TOKEN_EXCHANGE_GRANT),
        ("subject_token", &subject),
        ("subject_token_type", mayfly_core::ID_TOKEN_TYPE),
        ("audience", "https://host0.example"),
        ("scope", "repo:org0/app:read"),
    ];
    let response = stack.https_client().post(format!("{url}/token")).form(&form).send().expect("answers");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn a_token_whose_audit_line_cannot_be_written_is_not_answered() {
    let stack = Stack::builder().start();
    let dir = stack.dir.path().join("unwritable");
    // Opens like any file; every write fails with ENOSPC.
    let (_sts, url) = exchange(&stack, &dir, Path::new("/dev/full"), None, None);
    let (status, body) = post(&stack, &url);
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "server_error", "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(!mayfly_core::contains_jwt(body.to_string().as_bytes()), "{body}");
    let log = std::fs::read_to_string(dir.join("audit-sts.log")).unwrap();
    assert!(log.contains("cannot write the audit log"), "{log}");
}

#[test]
fn the_audit_log_rotates_at_its_size_and_keeps_the_configured_files() {
    let stack = Stack::builder().start();
    let dir = stack.dir.path().join("rotating");
    let audit = dir.join("audit.jsonl");
    let (_sts, url) = exchange(&stack, &dir, &audit, Some(2048), Some(2));
    let mut jtis = Vec::new();
    for _ in 0..30 {
        let (status, body) = post(&stack, &url);
        assert_eq!(status, 200, "{body}");
        jtis.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.unwrap().file_name().into_string().ok()).collect();
    names.retain(|n| n.starts_with("audit.jsonl"));
    names.sort();
    assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
    let mut kept = 0;
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.len() <= 2048, "{name} is {} bytes", text.len());
        for line in text.lines() {
            let line: Value = serde_json::from_str(line).expect("whole JSON lines across rotation");
            assert_eq!(line["outcome"], "issued");
            kept += 1;
        }
    }
    // Thirty lines do not fit in three files of 2 KiB: the oldest were dropped.
    assert!(kept < jtis.len(), "{kept} lines kept");
    let newest = std::fs::read_to_string(&audit).unwrap();
    let last: Value = serde_json::from_str(newest.lines().last().unwrap()).unwrap();
    assert_eq!(last["fingerprint"], mayfly_core::Fingerprint::of(jtis.last().unwrap()).to_string());
}
