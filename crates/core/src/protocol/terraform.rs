//! Terraform's (and OpenTofu's) credentials helper protocol.
//!
//! `terraform-credentials-mayfly [args] get HOST` prints `{"token": ...}`, or `{}` when no
//! route serves the host (Terraform's "no credentials", exit 0). `store` reads its input to
//! the end and refuses: mayfly never keeps a credential. `forget` drops the cached token.

use std::io::{Read, Write};

use serde_json::json;

use crate::protocol::{Refusal, Reply};
use crate::{Env, Operation, Process, Target, Tool};

/// The `terraform-credentials-mayfly` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "terraform-credentials-mayfly",
    help: r#"Terraform's credentials helper: `get HOSTNAME` answers with a token for that registry.

Wire it in the CLI config, with this binary in ~/.terraform.d/plugins:
  credentials_helper "mayfly" {}
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
        Ok(None) => 0,
        Ok(Some(answer)) => {
            let mut line = answer.to_string().into_bytes();
            line.push(b'\n');
            i32::from(stdout.write_all(&line).and_then(|()| stdout.flush()).is_err())
        }
        Err(refusal) => refuse(&refusal).write(stdout),
    }
}

/// How Terraform is answered without a token: `{}` and exit 0 is its "no credentials",
/// for a host no route serves; anything else is one line on stderr and exit 1, which
/// Terraform shows as it stops.
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
) -> Result<Option<serde_json::Value>, Refusal> {
    let [.., verb, host] = args else {
        let usage = "usage: terraform-credentials-mayfly [args] get|store|forget HOSTNAME";
        return Err(Refusal::Unsupported(usage.into()));
    };
    let target = || Target::new(Tool::Terraform, "https", host, None).map_err(|e| Refusal::Failed(e.to_string()));
    match verb.as_str() {
        "get" => {
            let issued = crate::protocol::token_for(&target()?, &|_| Operation::Read, env, ancestry)?;
            Ok(Some(json!({"token": issued.token.expose()})))
        }
        "store" => {
            // Terraform writes the credentials object and expects it read before we fail.
            let _ = std::io::copy(stdin, &mut std::io::sink());
            Err(Refusal::Failed("mayfly mints tokens when Terraform asks and never stores one: remove the token from `terraform login`, mayfly needs none".into()))
        }
        "forget" => match crate::protocol::erase(&target()?, env, ancestry) {
            // Nothing cached for a host no route serves: forgotten already.
            Ok(()) | Err(Refusal::NotOurs | Refusal::NeedsPath { .. }) => Ok(None),
            Err(refusal) => Err(refusal),
        },
        other => Err(Refusal::Unsupported(format!(
            "unknown verb `{}` (get, store or forget)",
            crate::sanitize_for_terminal(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], input: &[u8]) -> (i32, String) {
        crate::protocol::serve_unrouted(&HOOK, args, input)
    }

    #[test]
    fn no_route_is_an_empty_object_and_success() {
        assert_eq!(run(&["get", "app.terraform.io"], b""), (0, "{}\n".into()));
        assert_eq!(run(&["--some-arg", "get", "APP.Terraform.io"], b""), (0, "{}\n".into()));
    }

    #[test]
    fn store_reads_everything_then_refuses_and_forget_succeeds() {
        let big = vec![b'x'; 1 << 20];
        assert_eq!(run(&["store", "app.terraform.io"], &big), (1, String::new()));
        assert_eq!(run(&["forget", "app.terraform.io"], b""), (0, String::new()));
    }

    #[test]
    fn unknown_verbs_and_bad_hosts_fail() {
        assert_eq!(run(&["frobnicate", "app.terraform.io"], b"").0, 1);
        assert_eq!(run(&["get"], b"").0, 1);
        assert_eq!(run(&["get", "evil.example/x"], b"").0, 1);
    }

    #[test]
    fn each_refusal_gets_terraforms_answer() {
        let answers: Vec<Reply> = crate::protocol::every_refusal().iter().map(refuse).collect();
        let none = Reply { code: 0, stdout: "{}\n".into(), stderr: None };
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
