//! The approvers' web page end to end: a real `git push` waits while the exchange holds
//! the write for a maintainer, who signs in at a real OpenID provider (oidc-provider) in
//! headless Chromium and approves or denies on the page; the requester and an outsider
//! are refused, the requester's hostile values are shown escaped, and a callback the
//! browser did not start is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mayfly_tests::oidc_provider::{OidcProvider, WEB_CLIENT_ID, browser};
use mayfly_tests::{Stack, mayfly_lines, require_tool};
use serde_json::json;

const HELD: &str = r#"
@id("app-writes-need-a-maintainer")
@approval("maintainers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/app" }
unless { context.approval.state == "approved" };
"#;

/// The requester's `sub`: hostile markup the page must show as text.
const HOSTILE_SUB: &str = "user:bob<script>alert(1)</script>";
const WEB_CLIENT_SECRET: &str = "approval-page-client-secret";

/// A stack whose exchange holds writes to org/app for `maintainers` (alice and bob at the
/// provider) and signs them in to its approval page there; org/app is reached as bob,
/// with an ID token of the stack's issuer whose `sub` is [`HOSTILE_SUB`].
fn page_stack() -> (Stack, OidcProvider) {
    let slot: Arc<Mutex<Option<OidcProvider>>> = Arc::default();
    let started = slot.clone();
    let stack = Stack::builder()
        .git()
        .sts_config(move |config, dir| {
            let policies = dir.join("policies");
            std::fs::create_dir_all(&policies).unwrap();
            std::fs::write(policies.join("app.cedar"), HELD).unwrap();
            config.policies = vec![policies];
            config.approval_interval = Some("1s".into());
            config.same_person_claim = Some("email".into());
            // The provider's web client redirects to this exchange, whose URL is known now.
            let redirect_uri = format!("{}/approve/callback", config.issuer);
            let provider = OidcProvider::with_web_client(dir, 600, &redirect_uri, WEB_CLIENT_SECRET);
            let secret_file = dir.join("approval-client-secret");
            std::fs::write(&secret_file, format!("{WEB_CLIENT_SECRET}\n")).unwrap();
            config.trusted_issuers.push(mayfly_sts::TrustedIssuer {
                issuer: provider.issuer.clone(),
                audiences: vec![WEB_CLIENT_ID.into()],
                ..Default::default()
            });
            config.approvers = ["alice", "bob"]
                .map(|sub| mayfly_sts::ApproverEntry {
                    name: "maintainers".into(),
                    issuer: provider.issuer.clone(),
                    claims: [("sub".to_owned(), sub.to_owned())].into(),
                })
                .into();
            config.approval_login = Some(mayfly_sts::ApprovalLogin {
                issuer: provider.issuer.clone(),
                client_id: WEB_CLIENT_ID.into(),
                client_secret_file: Some(secret_file),
                ..Default::default()
            });
            *started.lock().unwrap() = Some(provider);
        })
        .start();
    let provider = slot.lock().unwrap().take().expect("the provider started with the exchange");
    stack.write_config(&stack.route("org/app", &["read", "write"], "given"));
    (stack, provider)
}

/// `git` as bob (his email is the one he signs in to the provider with).
fn git_as_bob(stack: &Stack, dir: &Path, args: &[&str]) -> std::process::Command {
    let token = stack.issuer.mint("mayfly-sts", &json!({"sub": HOSTILE_SUB, "email": "bob@example.test"}));
    let mut command = stack.git_cmd(dir, args);
    command.env("MAYFLY_TEST_SUBJECT", token).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn committed_clone(stack: &Stack, name: &str) -> PathBuf {
    let out = git_as_bob(stack, &stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), name]).output().unwrap();
    assert!(out.status.success(), "clone failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = stack.work.join(name);
    stack.commit_file(&tree, &format!("{name}.txt"));
    tree
}

fn push(stack: &Stack, tree: &Path) -> Child {
    git_as_bob(stack, tree, &["push", "origin", "main"]).spawn().unwrap()
}

/// The approval page of the newest approval the exchange opened.
fn pending_approval(stack: &Stack) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = stack.sts_audit().into_iter().rev().find(|l| l["outcome"] == "pending");
        if let Some(id) = pending.and_then(|l| l["approval"].as_str().map(str::to_owned)) {
            return (format!("{}/approve/{id}", stack.sts.url), id);
        }
        assert!(Instant::now() < deadline, "no approval was opened: {:?}", stack.sts_audit());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finished(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
#[cfg_attr(
    any(
        missing = "git",
        missing = "node",
        missing = "chromium",
        missing = "oidc-provider",
        missing = "playwright-core"
    ),
    ignore = "needs git, node, chromium, oidc-provider, playwright-core: one is not installed"
)]
fn a_maintainer_approves_a_held_push_in_the_browser_and_others_are_refused() {
    if !require_tool("git") || !require_tool("node") || !require_tool("chromium") {
        return;
    }
    let (stack, _provider) = page_stack();
    let tree = committed_clone(&stack, "work");
    let waiting = push(&stack, &tree);
    let (url, id) = pending_approval(&stack);

    // The requester signs in as himself: refused, with no buttons to press.
    let bob = browser(&url, "bob", "approve", "");
    assert_eq!(bob.page.status, 403, "{}", bob.page.html);
    assert!(bob.page.html.contains("you asked for this request yourself"), "{}", bob.page.html);
    assert!(bob.result.is_none() && !bob.page.html.contains("id=\"approve\""));
    // Someone outside the group: refused too.
    let eve = browser(&url, "eve", "approve", "");
    assert_eq!(eve.page.status, 403, "{}", eve.page.html);
    assert!(eve.page.html.contains("is not in approver group `maintainers`"), "{}", eve.page.html);

    // A maintainer sees what is asked, the requester's markup as text, and approves.
    let alice = browser(&url, "alice", "approve", "");
    let page = &alice.page.html;
    assert_eq!(alice.page.status, 200, "{page}");
    assert!(page.contains("user:bob&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    for shown in ["repo:org/app:write", "app-writes-need-a-maintainer", "maintainers", "git push", "claimed"] {
        assert!(page.contains(shown), "`{shown}` is not on the page: {page}");
    }
    assert!(page.contains("alice@example.test"), "{page}");
    let result = alice.result.expect("alice could decide");
    assert_eq!(result.status, 200, "{}", result.html);
    assert!(result.html.contains("Approved"), "{}", result.html);

    let out = finished(waiting);
    assert!(out.status.success(), "the approved push failed: {}", String::from_utf8_lossy(&out.stderr));
    let audit = stack.sts_audit();
    let approved = audit.iter().find(|l| l["outcome"] == "approved" && l["approval"] == id.as_str());
    assert!(approved.is_some_and(|l| l["approver"]["email"] == "alice@example.test"), "{audit:?}");
    assert!(audit.iter().any(|l| l["outcome"] == "issued" && l["approval"] == id.as_str()), "{audit:?}");

    // Used: the page says so with 409.
    let again = browser(&url, "alice", "view", "");
    assert_eq!(again.page.status, 409, "{}", again.page.html);
    assert!(again.page.html.contains("the approval is already used"), "{}", again.page.html);
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(
        missing = "git",
        missing = "node",
        missing = "chromium",
        missing = "oidc-provider",
        missing = "playwright-core"
    ),
    ignore = "needs git, node, chromium, oidc-provider, playwright-core: one is not installed"
)]
fn a_denial_on_the_page_ends_the_push_with_its_reason() {
    if !require_tool("git") || !require_tool("node") || !require_tool("chromium") {
        return;
    }
    let (stack, _provider) = page_stack();
    let tree = committed_clone(&stack, "work");
    let waiting = push(&stack, &tree);
    let (url, id) = pending_approval(&stack);
    let alice = browser(&url, "alice", "deny", "not during the freeze");
    let result = alice.result.expect("alice could decide");
    assert_eq!(result.status, 200, "{}", result.html);
    assert!(result.html.contains("Denied"), "{}", result.html);
    let out = finished(waiting);
    assert!(!out.status.success(), "a denied push went through");
    let lines = mayfly_lines(&out.stderr);
    assert!(lines.iter().any(|l| l.contains("denied by alice@example.test: not during the freeze")), "{lines:?}");
    assert!(!stack.sts_audit().iter().any(|l| l["outcome"] == "issued" && l["approval"] == id.as_str()));
}

#[test]
#[cfg_attr(
    any(missing = "git", missing = "node", missing = "oidc-provider"),
    ignore = "needs git, node, oidc-provider: one is not installed"
)]
fn a_callback_the_browser_did_not_start_is_refused() {
    if !require_tool("git") || !require_tool("node") {
        return;
    }
    let (stack, provider) = page_stack();
    let client = reqwest::blocking::Client::builder()
        .tls_certs_merge(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&stack.ca.ca_cert).unwrap()).expect("CA certificate"),
        )
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("{}/approve/{}", stack.sts.url, "0".repeat(32));

    // The CLI's API is unchanged: no Bearer token, no HTML asked for, a JSON 401.
    let response = client.get(&url).send().unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<serde_json::Value>().unwrap()["error"], "invalid_token");

    // A browser is sent to the provider with state, nonce and PKCE S256, under a
    // pre-login cookie that scripts cannot read.
    let response = client.get(&url).header("Accept", "text/html").send().unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{}/auth?", provider.issuer)), "{location}");
    let query: Vec<(String, String)> = url::Url::parse(&location).unwrap().query_pairs().into_owned().collect();
    let param = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param("client_id").as_deref(), Some(WEB_CLIENT_ID));
    assert_eq!(param("redirect_uri"), Some(format!("{}/approve/callback", stack.sts.url)));
    let state = param("state").unwrap();
    assert!(state.len() >= 43 && param("nonce").is_some_and(|n| n.len() >= 43), "{location}");
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("__Host-mayfly-approval-login="), "{set_cookie}");
    assert!(set_cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let callback = |state: &str, cookie: Option<&str>| {
        let mut request = client
            .get(format!("{}/approve/callback", stack.sts.url))
            .query(&[("code", "forged-code"), ("state", state)]);
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        let response = request.send().unwrap();
        let headers = response.headers().clone();
        (response.status().as_u16(), headers, response.text().unwrap())
    };
    // A forged state under the browser's own cookie: refused, and the sign-in is spent.
    let (status, headers, page) = callback("forged", Some(&cookie));
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("does not match the sign-in this browser started"), "{page}");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(
        (&headers["cache-control"], &headers["referrer-policy"]),
        (&"no-store".parse().unwrap(), &"no-referrer".parse().unwrap())
    );
    assert!(headers.get_all("set-cookie").iter().any(|c| c.to_str().unwrap().contains("Max-Age=0")));
    let (status, _, page) = callback(&state, Some(&cookie));
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("was not started in this browser"), "{page}");
    // The right state without the browser's cookie (a link sent to someone else): refused.
    let (status, _, page) = callback(&state, None);
    assert_eq!(status, 400, "{page}");

    // A made-up session cookie decides nothing.
    let response = client
        .post(&url)
        .header("Cookie", "__Host-mayfly-approval-session=made-up")
        .form(&[("decision", "approve"), ("csrf", "x")])
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().unwrap().contains("your sign-in expired"));
}
