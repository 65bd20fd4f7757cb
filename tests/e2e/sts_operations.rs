//! Running the real `mayfly-sts` binary as a service: its `/metrics` after real
//! exchanges, its rate limits as a client and the helper meet them, and its JSON logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mayfly_core::{ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::{Stack, bin, mayfly_lines, post_exchange, require_tool};
use serde_json::{Value, json};

/// The subject of the stack's ID tokens.
const SUBJECT: &str = "repo:org/app:ref:refs/heads/main";

const RELEASE: &str = r#"
@id("app-release")
@approval("release-managers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/app" }
unless { context.approval.state == "approved" };
"#;

fn get(stack: &Stack, path: &str) -> reqwest::blocking::Response {
    stack.https_client().get(format!("{}{path}", stack.sts.url)).send().expect("the exchange answers")
}

/// The samples of an exposition, `name{labels}` -> value, after checking every line's shape.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut samples = BTreeMap::new();
    assert!(text.ends_with("# EOF\n"), "an exposition ends with `# EOF`");
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(is_name(rest.split(' ').next().unwrap()), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(is_name(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not `series value`: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for pair in split_labels(labels) {
                    let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
                    assert!(is_name(key), "{line}");
                    assert!(quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'), "{line}");
                }
                name
            }
            None => series,
        };
        assert!(is_name(name), "{line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

/// `a="x",b="y,z"` -> `a="x"`, `b="y,z"` (commas inside quotes kept, escapes skipped).
fn split_labels(labels: &str) -> Vec<String> {
    let (mut pairs, mut current, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in labels.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pairs.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        pairs.push(current);
    }
    pairs
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no `{series}` in {:#?}", samples.keys().collect::<Vec<_>>()))
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn metrics_count_issued_denied_and_pending_exchanges_with_bounded_labels() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder()
        .git()
        .sts_binary()
        .sts_config(|config, dir: &Path| {
            let policies = dir.join("policies");
            std::fs::create_dir_all(&policies).unwrap();
            std::fs::write(policies.join("git.cedar"), RELEASE).unwrap();
            config.policies = vec![policies];
            let issuer = config.trusted_issuers[0].issuer.clone();
            config.approvers =
                vec![mayfly_sts::ApproverEntry { name: "release-managers".into(), issuer, claims: Default::default() }];
        })
        .start();
    let client = stack.https_client();
    let git = stack.git_server().base_url.clone();
    let (status, issued) = post_exchange(&client, &stack.sts.url, &stack.issuer, &git, "repo:org/app:read");
    assert_eq!(status, 200, "{issued}");
    let (status, denied) = post_exchange(&client, &stack.sts.url, &stack.issuer, &git, "repo:org/other:read");
    assert_eq!((status, denied["error"].as_str()), (400, Some("invalid_scope")), "{denied}");
    let (status, held) = post_exchange(&client, &stack.sts.url, &stack.issuer, &git, "repo:org/app:write");
    assert_eq!((status, held["error"].as_str()), (400, Some("authorization_pending")), "{held}");

    let response = get(&stack, "/metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().unwrap();
    let samples = parse_exposition(&text);

    assert_eq!(sample(&samples, r#"mayfly_sts_decisions_total{outcome="issued",code=""}"#), 1.0);
    assert_eq!(sample(&samples, r#"mayfly_sts_decisions_total{outcome="denied",code="invalid_scope"}"#), 1.0);
    assert_eq!(
        sample(&samples, r#"mayfly_sts_rule_decisions_total{outcome="issued",rule="org/app reads and pushes itself"}"#),
        1.0
    );
    assert_eq!(sample(&samples, r#"mayfly_sts_decisions_total{outcome="pending",code=""}"#), 1.0);
    assert_eq!(sample(&samples, r#"mayfly_sts_policy_decisions_total{outcome="pending",policy="app-release"}"#), 1.0);
    assert_eq!(sample(&samples, r#"mayfly_sts_requests_total{endpoint="/token",status="200"}"#), 1.0);
    assert_eq!(sample(&samples, r#"mayfly_sts_requests_total{endpoint="/token",status="400"}"#), 2.0);
    assert_eq!(sample(&samples, "mayfly_sts_exchange_duration_seconds_count"), 3.0);
    let issuer = stack.issuer.issuer();
    assert!(sample(&samples, &format!(r#"mayfly_sts_jwks_fetches_total{{issuer="{issuer}"}}"#)) >= 1.0);
    assert_eq!(sample(&samples, "mayfly_sts_approvals_pending"), 1.0);
    assert_eq!(sample(&samples, "mayfly_sts_revocations_total"), 0.0);

    // A revocation moves its counter; a scrape counts itself only afterwards.
    let token = issued["access_token"].as_str().unwrap();
    let response = client.post(format!("{}/revoke", stack.sts.url)).form(&[("token", token)]).send().unwrap();
    assert_eq!(response.status(), 200);
    let again = parse_exposition(&get(&stack, "/metrics").text().unwrap());
    assert_eq!(sample(&again, "mayfly_sts_revocations_total"), 1.0);
    assert_eq!(sample(&again, r#"mayfly_sts_requests_total{endpoint="/metrics",status="200"}"#), 1.0);

    // No subject, token or token id is ever a label.
    let audit = stack.sts_audit();
    let jti = audit.iter().find(|l| l["outcome"] == "issued").unwrap()["jti"].as_str().unwrap().to_owned();
    let approval_code = held["approval_code"].as_str().unwrap();
    let approval_id = held["approval_id"].as_str().unwrap();
    for secret in [SUBJECT, token, &jti, approval_code, approval_id, "eyJ"] {
        assert!(!text.contains(secret), "`{secret}` in /metrics");
    }
}

/// A stack whose exchange (the real binary) has these `[rate_limit]` settings.
fn limited_stack(rate_limit: mayfly_sts::RateLimitEntry) -> Stack {
    Stack::builder()
        .git()
        .sts_binary()
        .sts_config(move |config, _: &Path| config.rate_limit = Some(rate_limit.clone()))
        .start()
}

fn exchange_as(stack: &Stack, subject: &str, scope: &str) -> reqwest::blocking::Response {
    let token = stack.issuer.mint("mayfly-sts", &json!({"sub": subject}));
    let form = [
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", &token),
        ("subject_token_type", ID_TOKEN_TYPE),
        ("audience", &stack.git_server().base_url),
        ("scope", scope),
    ];
    stack.https_client().post(format!("{}/token", stack.sts.url)).form(&form).send().unwrap()
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_subject_over_its_limit_gets_429_and_the_helper_says_so_in_one_line() {
    if !require_tool("git") {
        return;
    }
    // Two an hour: nothing refills while the test runs.
    let stack = limited_stack(mayfly_sts::RateLimitEntry { per_subject: Some("2/h".into()), ..Default::default() });
    for _ in 0..2 {
        assert_eq!(exchange_as(&stack, SUBJECT, "repo:org/app:read").status(), 200);
    }
    let refused = exchange_as(&stack, SUBJECT, "repo:org/app:read");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "Retry-After: {retry_after}");
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"], "slow_down");
    assert!(body["error_description"].as_str().unwrap().contains("this subject"), "{body}");

    // Another subject has its own bucket.
    let docs = "repo:org/docs:ref:refs/heads/main";
    assert_eq!(exchange_as(&stack, docs, "repo:org/docs:read").status(), 200);

    // The helper, for the limited subject, fails with one line naming the limit.
    let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin(format!("protocol=https\nhost={}\npath=org/app.git\n", stack.git_host()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("slow_down") && lines[0].contains("try again in"), "{}", lines[0]);
    assert!(!stderr.contains("eyJ"), "{stderr}");

    // One audit line for the run of refusals (two here), naming the subject and the code.
    let limited: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["code"] == "slow_down").collect();
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!((limited[0]["outcome"].as_str(), limited[0]["subject"].as_str()), (Some("denied"), Some(SUBJECT)));
    let metrics = parse_exposition(&get(&stack, "/metrics").text().unwrap());
    assert_eq!(sample(&metrics, r#"mayfly_sts_rate_limited_total{limit="subject"}"#), 2.0);
}

/// Three requests to `/token` claiming to come from these addresses; their statuses.
fn from_addresses(stack: &Stack, addresses: &[&str]) -> Vec<u16> {
    let client = stack.https_client();
    addresses
        .iter()
        .map(|address| {
            let response = client
                .post(format!("{}/token", stack.sts.url))
                .header("x-forwarded-for", *address)
                .form(&[("grant_type", TOKEN_EXCHANGE_GRANT)])
                .send()
                .unwrap();
            if response.status() == 429 {
                assert!(response.headers().contains_key("retry-after"));
            }
            response.status().as_u16()
        })
        .collect()
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn x_forwarded_for_is_ignored_from_a_peer_that_is_not_a_trusted_proxy() {
    if !require_tool("git") {
        return;
    }
    let stack = limited_stack(mayfly_sts::RateLimitEntry {
        per_address: Some("2/h".into()),
        trusted_proxies: vec!["10.0.0.0/8".into()],
        ..Default::default()
    });
    // All three come from 127.0.0.1, whatever the header says.
    assert_eq!(from_addresses(&stack, &["203.0.113.1", "203.0.113.2", "203.0.113.3"]), [400, 400, 429]);
    let limited: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["code"] == "slow_down").collect();
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0]["reason"], "rate limit per address reached");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn x_forwarded_for_names_the_client_behind_a_trusted_proxy() {
    if !require_tool("git") {
        return;
    }
    let stack = limited_stack(mayfly_sts::RateLimitEntry {
        per_address: Some("2/h".into()),
        trusted_proxies: vec!["127.0.0.1/32".into()],
        ..Default::default()
    });
    let (a, b) = ("203.0.113.1", "203.0.113.2");
    // Behind a chain, the nearest hop that is not a trusted proxy is the client (here `b`).
    let chained = format!("198.51.100.7, {b}");
    assert_eq!(from_addresses(&stack, &[a, a, a, b, &chained, b]), [400, 400, 429, 400, 400, 429]);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn json_logs_and_the_audit_go_to_stdout_one_object_a_line() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().git().start();
    let dir = stack.dir.path();
    let port = mayfly_tests::free_port();
    let config = mayfly_sts::ConfigFile {
        issuer: format!("http://127.0.0.1:{port}"),
        listen: Some(format!("127.0.0.1:{port}")),
        audit_log: Some("-".into()),
        log_format: Some("json".into()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        ..Default::default()
    };
    let config_path = dir.join("json-sts.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let stdout_path = dir.join("json-sts.out");
    let stderr_path = dir.join("json-sts.err");
    let mut child = Command::new(bin("mayfly-sts"))
        .arg("--config")
        .arg(&config_path)
        .env_remove("LISTEN_FDS")
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&stdout_path).unwrap_or_default().contains("listening on") {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("mayfly-sts did not start: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A denied exchange (no rule) writes its audit line to stdout too.
    let token = stack.issuer.mint("mayfly-sts", &Value::Null);
    let response = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/token"))
        .form(&[
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", &token),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("audience", "https://git.example"),
            ("scope", "repo:org/app:read"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let _ = child.kill();
    let _ = child.wait();

    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let lines: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let logs: Vec<&Value> = lines.iter().filter(|l| l.get("level").is_some()).collect();
    assert!(logs.iter().all(|l| l["time"].is_string() && l["message"].is_string()), "{stdout}");
    assert!(logs.iter().any(|l| l["level"] == "info" && l["message"].as_str().unwrap().starts_with("listening on")));
    assert!(logs.iter().any(|l| l["message"].as_str().unwrap().contains("no `revocation_store`")), "{stdout}");
    assert!(lines.iter().any(|l| l["outcome"] == "denied"), "the audit line is on stdout: {stdout}");
    assert!(!stdout.contains(&token));
    assert_eq!(std::fs::read_to_string(&stderr_path).unwrap(), "", "nothing on stderr");
}
