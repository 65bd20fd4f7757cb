//! A slow, failing, lying or redirecting exchange: one clear line, never a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use mayfly_tests::{bin, mayfly_lines};

const SUBJECT: &str = "subject-token-marker-do-not-leak";

/// A fake exchange on loopback; returns its URL and a hit counter.
fn serve(runtime: &tokio::runtime::Runtime, app: Router) -> String {
    let listener = mayfly_devstack::loopback_listener().unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _guard = runtime.enter();
    runtime.spawn(axum_server::from_tcp(listener).unwrap().serve(app.into_make_service()));
    url
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the helper for a routed target against an exchange at `endpoint`.
fn helper_against(endpoint: &str, timeout: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[identities.given]\nkind = \"env\"\nvar = \"SUBJECT\"\n\n[exchanges.x]\nkind = \"rfc8693\"\ntoken_endpoint = \"{endpoint}\"\ntimeout = \"{timeout}\"\n\n[[routes]]\ntool = \"git\"\nhost = \"git.example.com\"\nidentity = \"given\"\nexchange = \"x\"\n"
        ),
    )
    .unwrap();
    let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .env("HOME", dir.path())
        .env("MAYFLY_CONFIG", &config)
        .env("MAYFLY_RUNTIME_DIR", dir.path().join("no-memory-backed-key-here"))
        .env("SUBJECT", SUBJECT)
        .write_stdin("protocol=https\nhost=git.example.com\npath=org/app.git\n")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!run.stderr.contains(SUBJECT) && !run.stdout.contains(SUBJECT), "subject token leaked");
    run
}

fn assert_refused(run: &Run, reason: &str) {
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "quit=1\n", "nothing but quit on stdout");
    let lines = mayfly_lines(run.stderr.as_bytes());
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].contains(reason), "want `{reason}`: {}", lines[0]);
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[test]
fn a_redirect_to_another_origin_is_not_followed() {
    let runtime = mayfly_devstack::runtime().unwrap();
    let hits = counter();
    let seen = hits.clone();
    let elsewhere = serve(
        &runtime,
        Router::new().route(
            "/token",
            post(move || async move {
                seen.fetch_add(1, Ordering::SeqCst);
                "{}"
            }),
        ),
    );
    let target = format!("{elsewhere}/token");
    let redirecting = serve(
        &runtime,
        Router::new().route(
            "/token",
            post(move || async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]) }),
        ),
    );
    let run = helper_against(&format!("{redirecting}/token"), "5s");
    assert_refused(&run, "redirected to another origin; not followed");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the subject token never reached the other origin");
}

#[test]
fn a_slow_exchange_times_out() {
    let runtime = mayfly_devstack::runtime().unwrap();
    let slow = serve(
        &runtime,
        Router::new().route(
            "/token",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(20)).await;
                "{}"
            }),
        ),
    );
    assert_refused(&helper_against(&format!("{slow}/token"), "1s"), "timed out");
}

#[test]
fn a_lying_exchange_is_not_believed() {
    let runtime = mayfly_devstack::runtime().unwrap();
    let bodies = [
        ("not json at all", "a body that is not a token response"),
        (r#"{"token_type":"Bearer","issued_token_type":"x"}"#, "no `access_token`"),
        (
            r#"{"access_token":"a\nurl=https://evil","token_type":"Bearer","issued_token_type":"x"}"#,
            "control characters",
        ),
    ];
    for (body, reason) in bodies {
        let lying = serve(
            &runtime,
            Router::new()
                .route("/token", post(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) })),
        );
        assert_refused(&helper_against(&format!("{lying}/token"), "5s"), reason);
    }
}

#[test]
fn an_exchange_error_is_one_sanitised_line() {
    let runtime = mayfly_devstack::runtime().unwrap();
    let refusing = serve(
        &runtime,
        Router::new().route(
            "/token",
            post(|| async {
                let body = r#"{"error":"invalid_target","error_description":"no\u001b[2J audience\nfor you"}"#;
                (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body)
            }),
        ),
    );
    let run = helper_against(&format!("{refusing}/token"), "5s");
    assert_refused(&run, "refused: invalid_target: no\u{fffd}[2J audience\u{fffd}for you");
    assert!(!run.stderr.contains('\x1b'));
}

#[test]
fn a_failing_exchange_is_retried_only_when_nothing_was_minted() {
    let runtime = mayfly_devstack::runtime().unwrap();
    let hits = counter();
    let seen = hits.clone();
    let flaky = serve(&runtime, Router::new().route("/token", post(move || async move {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
        }
        let body = r#"{"access_token":"minted.after.retry","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":300}"#;
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    })));
    let run = helper_against(&format!("{flaky}/token"), "5s");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("password=minted.after.retry\n"));
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    let hits = counter();
    let seen = hits.clone();
    let broken = serve(
        &runtime,
        Router::new().route(
            "/token",
            post(move || async move {
                seen.fetch_add(1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, "oops")
            }),
        ),
    );
    assert_refused(&helper_against(&format!("{broken}/token"), "5s"), "answered 500");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a 500 may have minted: no retry");
}

#[test]
fn an_unreachable_exchange_is_one_line() {
    let port = mayfly_tests::free_port();
    assert_refused(&helper_against(&format!("http://127.0.0.1:{port}/token"), "2s"), "request to `http://127.0.0.1");
}

#[test]
fn plain_http_to_a_remote_exchange_is_a_config_error() {
    let run = helper_against("http://sts.example.com/token", "2s");
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    let lines = mayfly_lines(run.stderr.as_bytes());
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].contains("refusing plain http"), "{}", lines[0]);
}
