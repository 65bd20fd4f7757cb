//! git's credential helper protocol: `parse`, `answer` and `serve`.
//!
//! Input: a header line (the helper's action, `get`, `erase`, `store` ..., and the word
//! `routed` to run under the routed config), then what git writes on stdin.
//!
//! Invariants:
//! - an accepted request holds no CR, LF or NUL in any value, and no percent-encoded line
//!   break or NUL in `protocol`, `host` or `path`;
//! - written back as `key=value` lines, an accepted request parses to the same request;
//! - the answer for it is refused exactly when a value it writes as text would break a
//!   line, and otherwise parses back to the same credential with no other credential
//!   field;
//! - a target made from it is normalised (re-normalising changes nothing);
//! - `serve` prints nothing for a refused or unrouted request and exactly `quit=1` for a
//!   routed `get` it cannot serve (or a routed `erase` without the path), and reads the process ancestry only for a routed host.
#![no_main]

use std::cell::Cell;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::git::{Action, MAX_LINE, Request, answer, parse, serve};
use mayfly_core::{Issued, Scheme, Secret, Target, TargetError, Tool};
use mayfly_fuzz::{GIT_HOST, Header, assert_normalised, has_line_break};

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let request = parse(header.rest);
    if let Ok(request) = &request {
        check_fields(request);
        check_round_trip(request);
        check_answer(request);
    }
    check_serve(&header, request.as_ref().ok());
});

fn check_fields(request: &Request) {
    let secrets = [&request.password, &request.credential].map(|s| s.as_ref().map(|s| s.expose().to_owned()));
    let scalars = [Some(&request.protocol), Some(&request.host), request.path.as_ref()];
    let others = [request.username.as_ref(), request.authtype.as_ref()];
    let lists = request.capabilities.iter().chain(&request.wwwauth).chain(&request.state);
    for value in scalars.iter().chain(&others).flatten().copied().chain(lists).chain(secrets.iter().flatten()) {
        assert!(!has_line_break(value), "a parsed value holds a line break or NUL: {value:?}");
    }
    for value in scalars.into_iter().flatten() {
        let lower = value.to_ascii_lowercase();
        assert!(!["%0a", "%0d", "%00"].iter().any(|p| lower.contains(p)), "an encoded control in {value:?}");
    }
}

/// The request as git would have written it.
fn write_back(request: &Request) -> Vec<u8> {
    let mut out = String::new();
    let mut line = |key: &str, value: &str| out.push_str(&format!("{key}={value}\n"));
    request.capabilities.iter().for_each(|c| line("capability[]", c));
    line("protocol", &request.protocol);
    line("host", &request.host);
    request.path.iter().for_each(|p| line("path", p));
    request.username.iter().for_each(|u| line("username", u));
    request.password.iter().for_each(|p| line("password", p.expose()));
    request.credential.iter().for_each(|c| line("credential", c.expose()));
    request.authtype.iter().for_each(|a| line("authtype", a));
    request.wwwauth.iter().for_each(|w| line("wwwauth[]", w));
    request.state.iter().for_each(|s| line("state[]", s));
    out.into_bytes()
}

fn same(a: &Request, b: &Request) -> bool {
    let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
    (&a.protocol, &a.host, &a.path, &a.username, &a.authtype)
        == (&b.protocol, &b.host, &b.path, &b.username, &b.authtype)
        && (&a.capabilities, &a.wwwauth, &a.state) == (&b.capabilities, &b.wwwauth, &b.state)
        && (secret(&a.password), secret(&a.credential)) == (secret(&b.password), secret(&b.credential))
}

fn check_round_trip(request: &Request) {
    let written = write_back(request);
    if written.split(|&b| b == b'\n').any(|l| l.len() >= MAX_LINE) {
        return; // a list value git sent in a line of its own, now beside others: not a round trip
    }
    let again = parse(&written).expect("a parsed request, written back, parses");
    assert!(same(request, &again), "a parsed request, written back, parses to another request");
}

/// An answer carrying a token made from the request: its password, percent-decoded, so
/// that line breaks can reach the writer.
fn check_answer(request: &Request) {
    let raw = request.password.as_ref().map_or("tok.en", |p| p.expose());
    let token = url::form_urlencoded::parse(format!("t={raw}").as_bytes()).next().map(|(_, v)| v.into_owned());
    let token = token.unwrap_or_default();
    let scheme = if request.authtype.as_deref() == Some("Basic") { Scheme::Basic } else { Scheme::Bearer };
    let username = request.username.clone().unwrap_or_else(|| "x-access-token".into());
    let issued = Issued {
        token: Secret::new(token.clone()),
        expires_at: Some(1_767_225_600),
        token_id: request.state.first().cloned(),
        scheme,
        username: username.clone(),
        from_cache: false,
    };
    let modern = request.has_capability("authtype");
    // A modern Basic answer carries username and token only base64-encoded.
    let raw = !(modern && matches!(scheme, Scheme::Basic));
    let breaks = (raw && has_line_break(&token)) || (!modern && has_line_break(&username));
    let Ok(out) = answer(request, &issued) else {
        assert!(breaks, "an answer without line breaks in its values was refused");
        return;
    };
    assert!(!breaks, "an answer with a line break in a value was written");
    if out.split(|&b| b == b'\n').any(|l| l.len() >= MAX_LINE) {
        return;
    }
    let mut read = b"protocol=https\nhost=h\n".to_vec();
    read.extend_from_slice(&out);
    let back = parse(&read).expect("an answer parses as git reads it");
    let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
    if modern {
        let credential = match scheme {
            Scheme::Basic => base64::engine::general_purpose::STANDARD.encode(format!("{username}:{token}")),
            _ => token,
        };
        assert_eq!(secret(&back.credential), Some(credential), "the answer's credential differs");
        assert_eq!(back.password.is_none() && back.username.is_none(), true, "a modern answer carries a password");
    } else {
        assert_eq!(secret(&back.password), Some(token), "the answer's password differs");
        assert_eq!(back.username, Some(username));
        assert!(back.credential.is_none());
    }
}

fn check_serve(header: &Header<'_>, request: Option<&Request>) {
    let read = Cell::new(false);
    let ancestry = || {
        read.set(true);
        Vec::new()
    };
    let args = vec![header.action.clone()];
    let mut out = Vec::new();
    let code = serve(&args, &mut &header.rest[..], &mut out, header.env.clone(), &ancestry);
    let action = Action::from_args(&args);
    let target = request.map(|r| Target::new(Tool::Git, &r.protocol, &r.host, r.path.as_deref()));
    if let Some(Ok(target)) = &target {
        assert_normalised(target);
    }
    let ours = header.routed && matches!(&target, Some(Ok(t)) if t.host == GIT_HOST && t.protocol == "https");
    let expected: (i32, &[u8]) = match (&action, &target) {
        (Action::Store | Action::Unknown, _) => (0, b""),
        (_, None) => (1, b""),
        (_, Some(Err(TargetError::Protocol(_)))) => (0, b""),
        (_, Some(Err(_))) => (1, b""),
        (Action::Get, Some(Ok(_))) if ours => (1, b"quit=1\n"),
        // git reads no output on erase; a routed host without the path it binds tokens to
        // gets the same `quit=1` and one-line fix as on `get`.
        (Action::Erase, Some(Ok(t))) if ours && t.path.is_none() => (1, b"quit=1\n"),
        (_, Some(Ok(_))) => (0, b""),
    };
    assert_eq!((code, out.as_slice()), expected, "serve answered {:?}", String::from_utf8_lossy(&out));
    assert!(!read.get() || ours, "the process ancestry was read for a request no route serves");
}
