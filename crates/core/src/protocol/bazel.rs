//! Bazel's credential helper protocol (`--credential_helper`), as the Credential Helpers
//! specification (EngFlow/credential-helpers-spec, from bazelbuild's "Credential Helpers
//! for Bazel" design) has it.
//!
//! `bazel-credential-mayfly get` reads `{"uri": "https://..."}` on stdin and answers
//! `{"headers": {"Authorization": ["Bearer ..."]}, "expires": "RFC 3339"}`. A URI no route
//! serves gets `{}`: no headers, exit 0, so Bazel fetches it without credentials (the
//! specification makes every field optional; a failed helper fails the whole fetch).
//! Anything malformed is one line on stderr and exit 1. Routes use `tool = "http"`: a
//! bearer token for a host and a path prefix, operation `read`.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::protocol::{Refusal, Reply};
use crate::{Env, Operation, Process, Scheme, Target, Tool};

/// Most of stdin read: a request is one URI.
const MAX_INPUT: u64 = 64 * 1024;

/// The `bazel-credential-mayfly` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "bazel-credential-mayfly",
    help: r#"Bazel's credential helper: `get` reads {"uri": "https://..."} and answers with an
Authorization header minted for that URI (routes with tool = "http"), or {} when no route
serves it.

Wire it per host in .bazelrc:
  common --credential_helper=HOST=/path/to/bazel-credential-mayfly
"#,
    serve: |args, stdin, stdout, env, ancestry| serve(args, stdin, stdout, env, ancestry),
};

/// Runs one helper invocation; returns the exit code.
pub fn serve(
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> i32 {
    match handle(args, stdin, env, ancestry) {
        Ok(answer) => {
            let mut line = answer.to_string().into_bytes();
            line.push(b'\n');
            i32::from(stdout.write_all(&line).and_then(|()| stdout.flush()).is_err())
        }
        Err(refusal) => refuse(&refusal).write(stdout),
    }
}

/// How Bazel is answered without a token: `{}` (no headers) and exit 0 for a URI no route
/// serves, so the fetch goes on without credentials; anything else is one line on stderr
/// and exit 1, which Bazel shows as it fails the fetch.
fn refuse(refusal: &Refusal) -> Reply {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => Reply { code: 0, stdout: "{}\n".into(), stderr: None },
        Refusal::Refused { .. } | Refusal::Failed(_) | Refusal::Unsupported(_) => Reply::line(refusal.to_string()),
    }
}

fn handle(
    args: &[String],
    stdin: &mut dyn Read,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> Result<serde_json::Value, Refusal> {
    let [verb] = args else {
        return Err(Refusal::Unsupported("usage: bazel-credential-mayfly get (the request on stdin)".into()));
    };
    if verb != "get" {
        let why = format!("unknown command `{}` (only `get`)", crate::sanitize_for_terminal(verb));
        return Err(Refusal::Unsupported(why));
    }
    let mut input = Vec::new();
    let read = stdin.take(MAX_INPUT + 1).read_to_end(&mut input);
    if read.is_err() || input.len() as u64 > MAX_INPUT {
        return Err(Refusal::Failed("Bazel credential request: cannot read stdin, or it is too long".into()));
    }
    let target = parse_request(&input)?;
    let issued = crate::protocol::token_for(&target, &|_| Operation::Read, env, ancestry)?;
    let value = match issued.scheme {
        Scheme::Bearer => format!("Bearer {}", issued.token.expose()),
        Scheme::Basic => format!("Basic {}", STANDARD.encode(format!("{}:{}", issued.username, issued.token.expose()))),
        Scheme::Plain => issued.token.expose().to_owned(),
    };
    let mut answer = json!({"headers": {"Authorization": [value]}});
    if let Some(expires) = issued.expires_at {
        answer["expires"] = json!(crate::audit::rfc3339(expires));
    }
    Ok(answer)
}

/// The target of a request: `uri`'s host and path, for `tool = "http"`.
fn parse_request(input: &[u8]) -> Result<Target, Refusal> {
    #[derive(serde::Deserialize)]
    struct Request {
        uri: String,
    }
    let malformed = |why: &str| Refusal::Failed(format!("Bazel credential request refused: {why}"));
    let request: Request =
        serde_json::from_slice(input).map_err(|_| malformed("stdin is not a JSON object with a string `uri`"))?;
    let url = crate::target::strict_url(&request.uri).ok_or_else(|| malformed("`uri` is not a URL"))?;
    if url.query().is_some() || url.fragment().is_some() {
        // A token is bound to a path; a query could name anything.
        return Err(malformed("`uri` has a query or fragment"));
    }
    let host = crate::target::host_port(&url).ok_or_else(|| malformed("`uri` has no host"))?;
    let path = url.path();
    Target::new(Tool::Http, url.scheme(), &host, Some(path)).map_err(|e| malformed(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], input: &str) -> (i32, String) {
        crate::protocol::serve_unrouted(&HOOK, args, input.as_bytes())
    }

    #[test]
    fn unrouted_uris_get_no_headers_and_exit_0() {
        for input in [
            r#"{"uri": "https://example.com/foo/bar.tar.gz"}"#,
            r#"{"uri": "https://example.com"}"#,
            r#"{"uri": "https://mirror.example:8443/a/b", "extra": 1}"#,
        ] {
            assert_eq!(run(&["get"], input), (0, "{}\n".into()), "{input}");
        }
    }

    #[test]
    fn malformed_requests_fail_with_nothing_on_stdout() {
        for input in [
            "",
            "not json",
            r#"{"url": "https://example.com/x"}"#,
            r#"{"uri": 42}"#,
            r#"{"uri": "example.com/x"}"#,
            r#"{"uri": "ftp://example.com/x"}"#,
            r#"{"uri": "https://user:pw@example.com/x"}"#,
            r#"{"uri": "https://example.com/x?token=1"}"#,
            r#"{"uri": "https://example.com/x\n"}"#,
        ] {
            assert_eq!(run(&["get"], input), (1, String::new()), "{input:?}");
        }
        assert_eq!(run(&[], "{}"), (1, String::new()));
        assert_eq!(run(&["store"], "{}"), (1, String::new()));
        assert_eq!(run(&["get", "extra"], "{}"), (1, String::new()));
    }

    #[test]
    fn uris_name_host_and_path() {
        let t = parse_request(br#"{"uri": "https://Mirror.Example:443/releases/v1/x.tar.gz"}"#).unwrap();
        assert_eq!(t.tool, Tool::Http);
        assert_eq!((t.host.as_str(), t.path.as_deref()), ("mirror.example", Some("releases/v1/x.tar.gz")));
        let t = parse_request(br#"{"uri": "https://mirror.example"}"#).unwrap();
        assert_eq!(t.path, None);
    }

    #[test]
    fn each_refusal_gets_the_answer_bazel_reads() {
        let none = Reply { code: 0, stdout: "{}\n".into(), stderr: None };
        let answers: Vec<Reply> = crate::protocol::every_refusal().iter().map(refuse).collect();
        assert_eq!(
            answers,
            [
                none.clone(),
                none,
                Reply::line("no token for https://h.example/org/app (git write): route `r` does not allow write"),
                Reply::line("the request is malformed"),
                Reply::line("unknown action"),
            ]
        );
    }
}
