//! `mayfly exec --proxy` sending requests again, concurrently: several `curl` PUTs at once
//! through one session to a REST API (the stand-in Kubernetes API), whose token the test
//! has the server refuse between rounds. The requests that carried the refused token are
//! sent again with one fresh token (minted once for all of them), each body arriving once;
//! bodies past the proxy's replay budget are not kept, and say so; the budget comes back.

use std::process::Command;

use mayfly_core::RouteEntry;
use mayfly_devstack::Stored;
use mayfly_tests::{KillOnDrop, Stack, await_marker, bin, read_work as read, require_tool, routes_toml};
use serde_json::Value;

const SESSION: &str = "replays";
/// The proxy's cap on one kept body and its budget for all at once (`MAX_REPLAY`,
/// `REPLAY_BUDGET` in the proxy); its refusal names the cap, which the test checks.
const MAX_REPLAY: usize = 32 << 20;
const REPLAY_BUDGET: usize = 64 << 20;
/// A body the proxy keeps (under its cap) of which two, not three, fit its budget at once.
const LARGE: usize = 28 << 20;
const _: () = assert!(LARGE <= MAX_REPLAY && 2 * LARGE <= REPLAY_BUDGET && 3 * LARGE > REPLAY_BUDGET);

/// A body of `size` bytes that names `name` and its position throughout.
fn body(name: &str, size: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(size + 64);
    let mut line = 0u64;
    while body.len() < size {
        body.extend_from_slice(format!("{name}:{line:010}\n").as_bytes());
        line += 1;
    }
    body.truncate(size);
    body
}

/// The fingerprints of the tokens issued in the session so far, in order.
fn issued(stack: &Stack) -> Vec<String> {
    stack
        .client_audit()
        .into_iter()
        .filter(|l| l["session"] == SESSION && l["outcome"] == "issued")
        .filter_map(|l| l["fingerprint"].as_str().map(str::to_owned))
        .collect()
}

#[test]
#[cfg_attr(missing = "curl", ignore = "needs curl, which is not installed")]
fn concurrent_puts_whose_token_is_refused_are_sent_again_once_with_one_fresh_token() {
    if !require_tool("curl") {
        return;
    }
    let stack = Stack::builder().kube().start();
    let api = stack.kube().base_url.clone();
    let route = RouteEntry {
        tool: "kubectl".into(),
        host: Some(api.trim_start_matches("https://").to_owned()),
        identity: "ci".into(),
        exchange: "sts".into(),
        operations: Some(vec!["read".into(), "write".into()]),
        ca_file: Some(stack.ca.ca_cert.clone()),
        ..Default::default()
    };
    stack.write_config(&routes_toml(vec![route]));
    let rounds: [(&[&str], usize); 4] = [
        (&["a1", "b1", "c1"], 1 << 20),
        (&["a2", "b2", "c2"], 1 << 20),
        (&["a3", "b3", "c3"], LARGE),
        (&["a4", "b4"], LARGE),
    ];
    for (names, size) in rounds {
        for name in names {
            std::fs::write(stack.work.join(format!("{name}.bin")), body(name, size)).unwrap();
        }
    }
    // Each round's PUTs at once; between rounds the script waits (with a deadline) for the
    // test to refuse the current token.
    let mut script = String::from(
        "put() { curl -sS -H 'Expect:' -X PUT -H 'Content-Type: application/octet-stream' --data-binary @$1.bin \
           -o answer-$1.txt -w '%{http_code}' \"$API/api/v1/namespaces/default/configmaps/$1\" > status-$1.txt 2> err-$1.txt; }; \
         await() { n=0; while [ ! -e $1 ]; do n=$((n+1)); [ $n -gt 3600 ] && exit 3; sleep 0.05; done; }; ",
    );
    for (round, (names, _)) in rounds.iter().enumerate() {
        let puts: Vec<String> = names.iter().map(|n| format!("put {n} &")).collect();
        script.push_str(&format!("{} wait; touch ready{round}; ", puts.join(" ")));
        if round + 1 < rounds.len() {
            script.push_str(&format!("await go{round}; "));
        }
    }
    let mut child = Command::new(bin("mayfly"));
    child
        .args(["exec", "--session", SESSION, "--proxy", "--", "sh", "-c", &script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("API", &api);
    let child = KillOnDrop::spawn(&mut child, &stack.work, "session");
    let kube = stack.kube();
    let path = |name: &str| format!("/api/v1/namespaces/default/configmaps/{name}");

    // Round 0: three PUTs at once get one token between them.
    await_marker(&stack, "ready0");
    let mut tokens = issued(&stack);
    assert_eq!(tokens.len(), 1, "one token for the first round's three PUTs: {tokens:?}");
    let mut replayed = 0;
    for (round, (names, size)) in rounds.iter().enumerate().skip(1) {
        // The server refuses the current token, and holds its refusals until every PUT of
        // the round has come: they are in flight at once, whatever the timing.
        let refused = tokens.last().unwrap().clone();
        let before = tokens.len();
        kube.refuse(&refused);
        kube.hold_refusals(names.len());
        std::fs::write(stack.work.join(format!("go{}", round - 1)), "").unwrap();
        await_marker(&stack, &format!("ready{round}"));
        assert!(!kube.hold_timed_out(), "round {round}: its PUTs were all in flight at once");
        tokens = issued(&stack);
        assert_eq!(tokens.len(), before + 1, "round {round}: one fresh token for all its PUTs: {tokens:?}");
        let fresh = tokens.last().unwrap();
        let seen = kube.seen();
        let mut not_sent = 0;
        for name in *names {
            let carried: Vec<_> = seen.iter().filter(|s| s.path == path(name)).collect();
            let status = read(&stack, &format!("status-{name}.txt"));
            let answer = read(&stack, &format!("answer-{name}.txt"));
            let stored = kube.stored(&path(name));
            if carried.first().is_some_and(|s| s.fingerprint.as_deref() == Some(refused.as_str())) {
                assert!(carried[0].refused, "{name}: {carried:?}");
                if status == "503" {
                    // Not kept (past the budget): sent once, refused, and said so.
                    assert!(answer.contains("could not be sent again"), "{name}: {answer}");
                    let cap = format!("over {} MiB", MAX_REPLAY >> 20);
                    assert!(answer.contains(&cap), "the proxy's cap is the one restated here: {answer}");
                    assert_eq!(carried.len(), 1, "{name} was sent once: {carried:?}");
                    assert!(stored.is_empty(), "{name} was stored");
                    not_sent += 1;
                    continue;
                }
                assert_eq!(carried.len(), 2, "{name}: sent once more, no more: {carried:?}");
                assert_eq!(carried[1].fingerprint.as_deref(), Some(fresh.as_str()), "{name}: with the fresh token");
                replayed += 1;
            }
            assert_eq!(status, "200", "{name}: {answer}{} {carried:?}", read(&stack, &format!("err-{name}.txt")));
            assert_eq!(stored.len(), 1, "{name}'s body arrived once");
            assert_eq!(stored[0], Stored::of(&body(name, *size)), "{name}'s body arrived byte for byte");
        }
        let all_refused = names.iter().all(|n| seen.iter().any(|s| s.path == path(n) && s.refused));
        if round == 2 && all_refused {
            // Three LARGE bodies in flight at once: two fit the budget.
            assert_eq!(not_sent, 1, "one body past the replay budget");
        } else {
            // Below the budget, or once it is whole again: every body was kept.
            assert_eq!(not_sent, 0, "round {round}: every body was kept");
        }
    }
    let out = child.wait_with_output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The audit names each resent request and the token it replaced.
    let lines: Vec<Value> =
        stack.client_audit().into_iter().filter(|l| l["session"] == SESSION && l["tool"] == "proxy").collect();
    let resent = lines
        .iter()
        .filter(|l| l["outcome"] == "proxied" && l["reason"].as_str().is_some_and(|r| r.contains("sent again")))
        .count();
    assert!(replayed >= 3, "the second round's PUTs were sent again");
    assert_eq!(resent, replayed, "{lines:?}");
    stack.assert_no_tokens_on_disk();
}
