//! cargo's credential provider protocol, version 1 (cargo 1.74 and later).
//!
//! cargo runs `PROVIDER --cargo-plugin`, reads the hello line `{"v":[1]}`, writes one JSON
//! request per line and reads one JSON answer per line, wrapped as `{"Ok":…}` or
//! `{"Err":…}`. Unlike git, cargo names the operation: `read` gets a read token; `publish`,
//! `yank` and `owners` get a token for that one crate, minted when cargo is about to use it.
//! `operation_independent: false` stops cargo from reusing a read token to publish.

use std::io::{BufRead, Read, Write};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::protocol::{Answer, Refusal};
use crate::{Env, Issued, Operation, Process, Scheme, Target, Tool};

/// Longest request line read.
const MAX_LINE: u64 = 1 << 20;

#[derive(Deserialize)]
struct Request {
    v: u32,
    registry: Registry,
    #[serde(flatten)]
    action: Action,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Registry {
    index_url: String,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Action {
    Get {
        operation: String,
        name: Option<String>,
    },
    Login,
    Logout,
    #[serde(other)]
    Unknown,
}

/// The `cargo-credential-mayfly` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "cargo-credential-mayfly",
    help: r#"cargo's credential provider: read tokens for a registry, publish tokens for one crate.

Wire it in .cargo/config.toml:
  [registries.NAME]
  credential-provider = ["cargo-credential-mayfly"]
"#,
    serve,
};

/// Runs the provider: hello, then one answer per request line until cargo closes stdin.
pub fn serve(
    args: &[String],
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> i32 {
    if !args.iter().any(|a| a == "--cargo-plugin") {
        crate::protocol::warn(
            "cargo-credential-mayfly is run by cargo: set `credential-provider` for a registry in .cargo/config.toml",
        );
        return 1;
    }
    if write_line(stdout, &json!({"v": [1]})).is_err() {
        return 1;
    }
    loop {
        let mut line = Vec::new();
        match stdin.take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(_) => return 1,
        }
        let answer = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => answer(request, &env, ancestry).unwrap_or_else(|refusal| refuse(&refusal)),
            Err(_) => {
                refuse(&Refusal::Failed("cargo's request is not a credential request of protocol version 1".into()))
            }
        };
        if write_line(stdout, &answer).is_err() {
            return 1;
        }
    }
}

fn write_line(stdout: &mut dyn Write, value: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    stdout.write_all(&line)?;
    stdout.flush()
}

/// How cargo is answered without a token. `url-not-supported` lets cargo ask the
/// registry's next provider; `operation-not-supported` says mayfly does not do what was
/// asked; anything else is `other`, whose message cargo shows as it stops.
fn refuse(refusal: &Refusal) -> Value {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => json!({"Err": {"kind": "url-not-supported"}}),
        Refusal::Unsupported(_) => json!({"Err": {"kind": "operation-not-supported"}}),
        Refusal::Refused { .. } | Refusal::Failed(_) => {
            json!({"Err": {"kind": "other", "message": crate::sanitize_for_terminal(&refusal.to_string())}})
        }
    }
}

fn answer(request: Request, env: &Env, ancestry: &dyn Fn() -> Vec<Process>) -> Result<Value, Refusal> {
    if request.v != 1 {
        return Err(Refusal::Failed(format!("unsupported credential protocol version {}", request.v)));
    }
    let index = request.registry.index_url.strip_prefix("sparse+").unwrap_or(&request.registry.index_url);
    let url = crate::target::strict_url(index);
    let (url, host) = url.and_then(|u| crate::target::host_port(&u).map(|h| (u, h))).ok_or(Refusal::NotOurs)?;
    match request.action {
        Action::Get { operation, name } => {
            let operation = match operation.as_str() {
                "read" => Operation::Read,
                "publish" => Operation::Publish,
                "yank" | "unyank" => Operation::Yank,
                "owners" => Operation::Owners,
                other => {
                    let why = format!("unknown operation `{}`", crate::sanitize_for_terminal(other));
                    return Err(Refusal::Unsupported(why));
                }
            };
            // Reads are registry-wide; the rest are for one crate.
            let krate = name.filter(|_| operation != Operation::Read);
            let target =
                Target::new(Tool::Cargo, url.scheme(), &host, krate.as_deref()).map_err(|_| Refusal::NotOurs)?;
            match crate::protocol::answer_for(&target, &|_| operation, env.clone(), ancestry)? {
                Answer::Token(issued) => Ok(token_answer(&issued)),
                Answer::NoTokenNeeded => Ok(no_read_token()),
            }
        }
        Action::Login => {
            Err(Refusal::Failed("mayfly mints a token for each request: there is nothing to log in with".into()))
        }
        Action::Logout => {
            if let Ok(target) = Target::new(Tool::Cargo, url.scheme(), &host, None) {
                let _ = crate::protocol::erase(&target, env.clone(), ancestry);
            }
            Ok(json!({"Ok": {"kind": "logout"}}))
        }
        Action::Unknown => Err(Refusal::Unsupported("unknown request kind".into())),
    }
}

/// `cargo publish` asks for a read token before the publish token, and sends it only to
/// registries whose index needs one. A public index does not: the answer is a marker that
/// is not a credential, so no ID token is spent and no publish token is handed out to read.
fn no_read_token() -> Value {
    json!({"Ok": {"kind": "get", "token": NO_READ_TOKEN, "cache": "session", "operation_independent": false}})
}

/// What cargo holds as the read token of a publish-only route.
pub const NO_READ_TOKEN: &str = "mayfly-public-index-needs-no-token";

fn token_answer(issued: &Issued) -> Value {
    // cargo sends the token as the whole `Authorization` value.
    let token = match issued.scheme {
        Scheme::Bearer => format!("Bearer {}", issued.token.expose()),
        Scheme::Basic => {
            use base64::Engine;
            let pair = format!("{}:{}", issued.username, issued.token.expose());
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        }
        Scheme::Plain => issued.token.expose().to_owned(),
    };
    let mut ok = json!({"kind": "get", "token": token, "operation_independent": false});
    match issued.expires_at {
        Some(expiration) => {
            ok["cache"] = json!("expires");
            ok["expiration"] = json!(expiration);
        }
        None => ok["cache"] = json!("never"),
    }
    json!({"Ok": ok})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (i32, Vec<Value>) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let env = Env::from_pairs([("MAYFLY_CONFIG", config.display().to_string())]);
        let mut out = Vec::new();
        let code = serve(&["--cargo-plugin".to_owned()], &mut input.as_bytes(), &mut out, env, &Vec::new);
        let lines = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (code, lines)
    }

    #[test]
    fn hello_then_one_answer_per_request_in_cargos_shapes() {
        let input = [
            r#"{"v":1,"registry":{"index-url":"sparse+https://registry.example/index/","name":"x"},"kind":"get","operation":"read","args":[]}"#,
            r#"{"v":1,"registry":{"index-url":"https://registry.example/index/"},"kind":"get","operation":"frobnicate"}"#,
            r#"{"v":1,"registry":{"index-url":"sparse+https://registry.example/"},"kind":"login","token":"t"}"#,
            r#"{"v":1,"registry":{"index-url":"sparse+https://registry.example/"},"kind":"logout"}"#,
            r#"{"v":1,"registry":{"index-url":"sparse+https://registry.example/"},"kind":"teleport"}"#,
            r#"{"v":2,"registry":{"index-url":"sparse+https://registry.example/"},"kind":"get","operation":"read"}"#,
            r#"not json"#,
        ]
        .join("\n");
        let (code, lines) = run(&input);
        assert_eq!(code, 0);
        assert_eq!(lines[0], json!({"v": [1]}));
        assert_eq!(lines[1], json!({"Err": {"kind": "url-not-supported"}}), "no route: the next provider may answer");
        assert_eq!(lines[2], json!({"Err": {"kind": "operation-not-supported"}}));
        assert_eq!(lines[3]["Err"]["kind"], "other");
        assert_eq!(lines[4], json!({"Ok": {"kind": "logout"}}));
        assert_eq!(lines[5], json!({"Err": {"kind": "operation-not-supported"}}));
        assert_eq!(lines[6]["Err"]["kind"], "other");
        assert_eq!(lines[7]["Err"]["kind"], "other");
        assert_eq!(lines.len(), 8);
    }

    #[test]
    fn token_answers_carry_expiry_and_are_operation_dependent() {
        let issued = Issued {
            token: crate::Secret::new("jwt"),
            expires_at: Some(1_900_000_000),
            token_id: None,
            scheme: Scheme::Bearer,
            username: String::new(),
            from_cache: false,
        };
        assert_eq!(
            token_answer(&issued),
            json!({"Ok": {"kind": "get", "token": "Bearer jwt", "cache": "expires", "expiration": 1_900_000_000, "operation_independent": false}})
        );
    }

    #[test]
    fn without_cargo_plugin_it_explains_itself() {
        let mut out = Vec::new();
        assert_eq!(serve(&[], &mut &b""[..], &mut out, Env::default(), &Vec::new), 1);
        assert!(out.is_empty());
    }

    #[test]
    fn each_refusal_gets_cargos_error_kind() {
        let other = |message: &str| json!({"Err": {"kind": "other", "message": message}});
        let answers: Vec<Value> = crate::protocol::every_refusal().iter().map(refuse).collect();
        assert_eq!(
            answers,
            [
                json!({"Err": {"kind": "url-not-supported"}}),
                json!({"Err": {"kind": "url-not-supported"}}),
                other("no token for https://h.example/org/app (git write): route `r` does not allow write"),
                other("the request is malformed"),
                json!({"Err": {"kind": "operation-not-supported"}}),
            ]
        );
    }
}
