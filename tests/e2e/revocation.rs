//! Revocation (RFC 7009) and introspection (RFC 7662) at the real `mayfly-sts`, and the
//! resource servers refusing a revoked token from the next request on.

use std::sync::atomic::Ordering;

use mayfly_tests::{Stack, require_tool};
use reqwest::header::{CACHE_CONTROL, HeaderMap, WWW_AUTHENTICATE};
use serde_json::{Value, json};

fn http(stack: &Stack) -> reqwest::blocking::Client {
    stack.https_client()
}

/// A token from `POST /token` for an ID token of the development issuer.
fn mint(stack: &Stack, audience: &str, scope: &str) -> String {
    mayfly_tests::exchange_token(&http(stack), &stack.sts.url, &stack.issuer, audience, scope)
}

/// `POST /revoke` with this form; returns the status and body.
fn revoke(stack: &Stack, form: &[(&str, &str)]) -> (u16, String) {
    let response = http(stack).post(format!("{}/revoke", stack.sts.url)).form(form).send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// How an introspection request authenticates.
enum Auth<'a> {
    Anonymous,
    /// The stack's resource-server client.
    Client,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

/// `POST /introspect`; returns the status, headers and JSON body.
fn introspect(stack: &Stack, token: &str, auth: Auth<'_>) -> (u16, HeaderMap, Value) {
    let client = &stack.sts.client;
    let request = http(stack)
        .post(format!("{}/introspect", stack.sts.url))
        .form(&[("token", token), ("token_type_hint", "access_token")]);
    let request = match auth {
        Auth::Anonymous => request,
        Auth::Client => request.basic_auth(&client.client_id, Some(client.client_secret.expose())),
        Auth::Basic(id, secret) => request.basic_auth(id, Some(secret)),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    let response = request.send().unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.json().unwrap())
}

fn fingerprint(token: &str) -> String {
    mayfly_core::Fingerprint::of(token).to_string()
}

#[test]
fn a_revoked_token_turns_inactive_and_revoking_again_is_fine() {
    let stack = Stack::new();
    let token = mint(&stack, &stack.git_server().base_url, "repo:org/app:read");

    let (status, headers, body) = introspect(&stack, &token, Auth::Client);
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "repo:org/app:read");
    assert_eq!(body["aud"], stack.git_server().base_url);
    assert_eq!(body["iss"], stack.sts.url);
    assert_eq!(body["sub"], "repo:org/app:ref:refs/heads/main");
    assert_eq!(body["client_id"], "mayfly");
    for claim in ["exp", "iat", "nbf"] {
        assert!(body[claim].is_i64(), "{claim}: {body}");
    }
    let jti = body["jti"].as_str().unwrap().to_owned();
    let (_, _, own) = introspect(&stack, &token, Auth::Bearer(&token));
    assert_eq!(own["active"], true, "a holder may introspect its own token");

    assert_eq!(revoke(&stack, &[("token", &token), ("token_type_hint", "access_token")]), (200, String::new()));
    for auth in [Auth::Client, Auth::Bearer(&token)] {
        let (status, headers, body) = introspect(&stack, &token, auth);
        assert_eq!((status, body), (200, json!({"active": false})));
        assert_eq!(headers[CACHE_CONTROL], "no-store");
    }
    assert_eq!(revoke(&stack, &[("token", &token)]), (200, String::new()), "revoking twice is fine");

    let revoked: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "revoked").collect();
    assert_eq!(revoked.len(), 2);
    assert_eq!(revoked[0]["jti"], jti.as_str());
    assert_eq!(revoked[0]["fingerprint"], fingerprint(&token));
    assert_eq!(revoked[0]["subject"], "repo:org/app:ref:refs/heads/main");
    assert!(stack.dir.path().join("sts-revocations.redb").is_file(), "the store is the configured file");
}

#[test]
fn revocation_takes_anything_and_introspection_takes_only_its_clients() {
    let stack = Stack::new();
    assert_eq!(revoke(&stack, &[("token", "garbage")]), (200, String::new()), "RFC 7009 2.2: invalid is no error");
    let stranger = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256).unwrap();
    let foreign = stranger.sign(Some("at+jwt"), &json!({"iss": stack.sts.url, "exp": 4_000_000_000u64, "jti": "x"}));
    assert_eq!(revoke(&stack, &[("token", &foreign.unwrap())]).0, 200);
    let (status, body) = revoke(&stack, &[("token_type_hint", "access_token")]);
    assert_eq!(status, 400);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "invalid_request");
    let ignored: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "revoke-ignored").collect();
    assert_eq!(ignored.len(), 2);
    assert_eq!(ignored[0]["fingerprint"], fingerprint("garbage"));
    assert_eq!(ignored[0]["reason"], "not a token signed by this exchange");

    let token = mint(&stack, &stack.git_server().base_url, "repo:org/app:read");
    let other = mint(&stack, &stack.git_server().base_url, "repo:org/app:read");
    let secret = stack.sts.client.client_secret.expose().to_owned();
    for auth in
        [Auth::Anonymous, Auth::Basic("mayfly-devstack", "wrong"), Auth::Basic("nobody", &secret), Auth::Bearer(&other)]
    {
        let (status, headers, body) = introspect(&stack, &token, auth);
        assert_eq!(status, 401);
        assert_eq!(headers[WWW_AUTHENTICATE], "Basic realm=\"mayfly-sts\"");
        assert_eq!(body["error"], "invalid_client");
    }
    let (_, _, body) = introspect(&stack, "garbage", Auth::Client);
    assert_eq!(body, json!({"active": false}));

    let discovery: Value =
        http(&stack).get(format!("{}/.well-known/openid-configuration", stack.sts.url)).send().unwrap().json().unwrap();
    assert_eq!(discovery["revocation_endpoint"], format!("{}/revoke", stack.sts.url));
    assert_eq!(discovery["introspection_endpoint"], format!("{}/introspect", stack.sts.url));
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn git_is_refused_a_revoked_token_on_the_next_request() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    // The helper mints (and caches) a read token for org/app, as it would for git.
    let token = stack.helper_token("org/app.git");
    let info_refs = format!("{}/info/refs?service=git-upload-pack", stack.repo_url("org/app.git"));
    assert_eq!(http(&stack).get(&info_refs).bearer_auth(&token).send().unwrap().status(), 200);

    assert_eq!(revoke(&stack, &[("token", &token), ("token_type_hint", "access_token")]).0, 200);

    let refused = http(&stack).get(&info_refs).bearer_auth(&token).send().unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.text().unwrap(), "token has been revoked\n");
    // git, through the helper, presents the cached (revoked) token and is refused.
    let unauthorized = stack.git_server().stats.unauthorized.load(Ordering::SeqCst);
    let out = stack.git(&stack.work, &["clone", &stack.repo_url("org/app.git"), "app"]);
    assert!(!out.status.success(), "a clone with a revoked token must fail");
    assert!(stack.git_server().stats.unauthorized.load(Ordering::SeqCst) > unauthorized);
    let served = stack.client_audit().into_iter().find(|l| l["outcome"] == "cache-hit").expect("served from cache");
    assert_eq!(served["fingerprint"], fingerprint(&token));

    let revoked = stack.sts_audit().into_iter().find(|l| l["outcome"] == "revoked").expect("revocation is audited");
    assert_eq!(revoked["fingerprint"], fingerprint(&token));
    assert_eq!(revoked["audience"], stack.git_server().base_url);
    stack.assert_no_tokens_on_disk();
}

#[test]
fn the_registry_token_endpoint_refuses_a_revoked_token() {
    let stack = Stack::builder().git().oci().start();
    let service = format!("127.0.0.1:{}", stack.oci_port());
    let token = mint(&stack, &service, &format!("oci:{service}/test/*:read"));
    let registry_token = || {
        http(&stack)
            .get(format!("{}/registry/token", stack.sts.url))
            .query(&[("service", service.as_str()), ("scope", "repository:test/app:pull")])
            .basic_auth("mayfly", Some(&token))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(registry_token(), 200);
    assert_eq!(revoke(&stack, &[("token", &token)]).0, 200);
    assert_eq!(registry_token(), 401);
    let denied = stack.sts_audit().into_iter().find(|l| l["outcome"] == "denied").expect("the refusal is audited");
    assert_eq!(denied["reason"], "registry: token has been revoked");
}

/// Whether the exchange reports `token` revoked within ten seconds (a detached copy of the
/// helper revokes a replaced token after the tool has its answer).
fn revoked_within_ten_seconds(stack: &Stack, token: &str) -> bool {
    for _ in 0..200 {
        if introspect(stack, token, Auth::Client).2["active"] == false {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn a_refresh_answers_the_tool_first_and_the_replaced_token_is_still_revoked() {
    // Six-second tokens: the margin is capped at half the lifetime, three seconds.
    let stack = Stack::with(mayfly_tests::Options { subject_lifetime: 6, max_ttl: "6s", ..Default::default() });
    let old = stack.helper_token("org/app.git");
    assert_eq!(introspect(&stack, &old, Auth::Client).2["active"], true);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let new = stack.helper_token("org/app.git");
    assert_ne!(new, old, "inside the margin the helper answers with a fresh token");
    assert_eq!(introspect(&stack, &new, Auth::Client).2["active"], true);
    // The old token is revoked by the helper's detached copy; wait for it to be done.
    let revoked = revoked_within_ten_seconds(&stack, &old);
    assert!(revoked, "the replaced token was never revoked");
    let mut audit = Vec::new();
    for _ in 0..200 {
        audit = stack.client_audit();
        if audit.len() == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let line = audit.iter().find(|l| l["outcome"] == "revoked").expect("a revoked line");
    assert_eq!(line["fingerprint"], fingerprint(&old));
    assert_eq!(line["target"], audit[0]["target"], "the line names what the token was for, as before");
    assert_eq!(audit.iter().filter(|l| l["outcome"] == "issued").count(), 2);
}

#[test]
fn a_helper_ended_by_a_signal_while_answering_a_refresh_still_revokes_the_replaced_token() {
    use std::io::{Read, Write};
    use std::os::unix::process::ExitStatusExt;
    let stack = Stack::with(mayfly_tests::Options { subject_lifetime: 6, max_ttl: "6s", ..Default::default() });
    let old = stack.helper_token("org/app.git");
    std::thread::sleep(std::time::Duration::from_millis(3500));

    // The helper's stdout is a pipe filled to the brim, so its answer waits: the hand-over
    // of the replaced token is held and the signals that would end it are caught.
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let size = nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    writer.write_all(&vec![b'#'; usize::try_from(size).unwrap()]).unwrap();
    let mut helper = std::process::Command::new(mayfly_tests::bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .stdin(std::process::Stdio::piped())
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let request = format!("protocol=https\nhost={}\npath=org/app.git\n", stack.git_host());
    helper.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
    let wchan = format!("/proc/{}/wchan", helper.id());
    let mut writing = false;
    for _ in 0..400 {
        if std::fs::read_to_string(&wchan).is_ok_and(|w| w.ends_with("pipe_write")) {
            writing = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(writing, "the helper never came to write its answer");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(helper.id()).unwrap()), nix::sys::signal::SIGTERM)
        .unwrap();

    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    let status = helper.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::SIGTERM as i32),
        "the signal still ends the helper, once it has answered: {status}"
    );
    let answer = String::from_utf8_lossy(&out[usize::try_from(size).unwrap()..]).into_owned();
    let new = answer.lines().find_map(|l| l.strip_prefix("password=")).expect("the tool got its answer first");
    assert_ne!(new, old);
    let revoked = revoked_within_ten_seconds(&stack, &old);
    assert!(revoked, "the replaced token was not revoked: the signal ended the helper before its hand-over");
}

#[test]
fn a_replaced_entry_that_does_not_open_is_said_on_a_revoke_failed_line() {
    let stack = Stack::with(mayfly_tests::Options { subject_lifetime: 60, max_ttl: "60s", ..Default::default() });
    let old = stack.helper_token("org/app.git");
    // The entries' files (the token's and the subject token's), each line saying it is due
    // for a refresh and each sealed part not one this cache key opens (a key made since,
    // or damage).
    let tokens = stack.home.join(".cache/mayfly/tokens");
    let entries: Vec<_> = std::fs::read_dir(&tokens)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "age"))
        .collect();
    assert!(!entries.is_empty());
    let far = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    for entry in &entries {
        std::fs::write(entry, format!("mayfly-entry/1 0 {far}\nage-encryption.org/v1\n-> X25519 damaged\n")).unwrap();
    }

    let new = stack.helper_token("org/app.git");
    assert_ne!(new, old, "due for a refresh by its line: a fresh token");
    let mut audit = Vec::new();
    for _ in 0..200 {
        audit = stack.client_audit();
        if audit.iter().any(|l| l["outcome"] == "revoke-failed") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let line = audit.iter().find(|l| l["outcome"] == "revoke-failed").expect("a revoke-failed line");
    assert!(line["reason"].as_str().unwrap().contains("does not open with the cache key"), "{line}");
    assert_eq!(line["target"], audit[0]["target"], "the line names what the entry was for");
    assert!(line.get("fingerprint").is_none(), "no token was read, so none is named: {line}");
    // What the damaged file held is unknown: the first token is not revoked.
    assert_eq!(introspect(&stack, &old, Auth::Client).2["active"], true);
}

/// The pids of detached revocation copies whose working directory is `dir`.
fn copies_in(dir: &std::path::Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_copy = cmdline.split(|&b| b == 0).any(|arg| arg == mayfly_core::deferred::REVOKE_ARG.as_bytes());
        if is_copy && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_refresh_whose_exchange_fails_leaves_no_copy_behind_and_keeps_the_old_token() {
    use std::io::Write;
    let stack = Stack::with(mayfly_tests::Options { subject_lifetime: 6, max_ttl: "6s", ..Default::default() });
    stack.helper_token("org/app.git");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // The exchange now accepts connections and never answers (the same route, so the
    // same cache entry, now inside its margin): the refresh starts its revocation copy
    // early and then fails after its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let config = std::fs::read_to_string(stack.home.join(".config/mayfly/config.toml")).unwrap();
    let config = config
        .replace(&format!("{}/token", stack.sts.url), &format!("https://127.0.0.1:{port}/token"))
        .replace("timeout = \"5s\"", "timeout = \"2s\"");
    stack.write_config_text(&config);
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path().canonicalize().unwrap();
    let mut helper = std::process::Command::new(mayfly_tests::bin("git-credential-mayfly"))
        .arg("get")
        .current_dir(&cwd)
        .env_clear()
        .envs(stack.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let request = format!("protocol=https\nhost={}\npath=org/app.git\n\n", stack.git_host());
    helper.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
    let mut seen = Vec::new();
    while seen.is_empty() && helper.try_wait().unwrap().is_none() {
        seen = copies_in(&cwd);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Nice, so its start does not take CPU from the helper; the helper's own threads not.
    let niceness = |stat: String| -> i64 {
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[16].parse().unwrap()
    };
    let copy_nice = seen.first().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok());
    let helper_tasks = std::fs::read_dir(format!("/proc/{}/task", helper.id())).map(|d| {
        d.flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .map(niceness)
            .collect::<Vec<_>>()
    });
    let out = helper.wait_with_output().unwrap();
    assert!(!out.status.success(), "the exchange never answered; the helper must fail");
    assert!(!seen.is_empty(), "the refresh started its copy while the exchange ran");
    assert_eq!(copy_nice.map(niceness), Some(19), "the copy runs nice");
    let helper_tasks = helper_tasks.unwrap();
    let own = niceness(std::fs::read_to_string("/proc/self/stat").unwrap());
    assert!(own < 19 && helper_tasks.contains(&own), "the helper keeps its niceness ({own}): {helper_tasks:?}");
    let mut left = copies_in(&cwd);
    for _ in 0..250 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = copies_in(&cwd);
    }
    assert!(left.is_empty(), "a copy handed nothing outlived its helper: {left:?}");
    // Nothing replaced the old token, so nothing revoked it.
    let outcomes: Vec<Value> = stack.client_audit().iter().map(|l| l["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("issued"), json!("failed")]);
}
