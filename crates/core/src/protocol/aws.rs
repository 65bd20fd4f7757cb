//! AWS `credential_process`: `mayfly-aws-credential ROUTE` prints
//! `{"Version":1,"AccessKeyId",...,"Expiration"}` on stdout and exits 0, or one line on
//! stderr and exits 1. botocore shows that stderr in its error (and may log it), so it
//! never carries a secret.

use std::io::Write;

use crate::protocol::{Refusal, Reply};
use crate::{Env, Operation, Process, Target};

/// The `mayfly-aws-credential` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "mayfly-aws-credential",
    help: r#"The AWS CLI's and SDKs' credential_process: `mayfly-aws-credential ROUTE` prints
credentials from AssumeRoleWithWebIdentity for the aws route named ROUTE.

Wire it in ~/.aws/config:
  [profile NAME]
  credential_process = mayfly-aws-credential ROUTE
"#,
    serve: |args, _stdin, stdout, env, ancestry| serve(args, stdout, env, ancestry),
};

/// Runs one invocation; returns the exit code.
pub fn serve(args: &[String], stdout: &mut dyn Write, env: Env, ancestry: &dyn Fn() -> Vec<Process>) -> i32 {
    let target = match args {
        [name] => match Target::aws(name) {
            Ok(target) => target,
            Err(_) => {
                let why = format!("`{}` is not a route name", crate::sanitize_for_terminal(name));
                return refuse(&Refusal::Failed(why), None).write(stdout);
            }
        },
        _ => {
            let usage = "usage: mayfly-aws-credential ROUTE (the name of an aws route in the mayfly config)";
            return refuse(&Refusal::Unsupported(usage.into()), None).write(stdout);
        }
    };
    let issued = match crate::protocol::token_for(&target, &|_| Operation::Read, env, ancestry) {
        Ok(issued) => issued,
        Err(refusal) => return refuse(&refusal, Some(&target)).write(stdout),
    };
    let mut document = issued.token.expose().as_bytes().to_vec();
    document.push(b'\n');
    match stdout.write_all(&document).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => refuse(&Refusal::Failed(e.to_string()), Some(&target)).write(stdout),
    }
}

/// How the AWS SDKs are answered without a token. `credential_process` has no "not
/// found": any exit but 0 fails the profile and shows stderr, so every refusal is one
/// line there, and a route name no route has is named in it.
fn refuse(refusal: &Refusal, route: Option<&Target>) -> Reply {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => Reply::line(format!(
            "no aws route named `{}` in the mayfly config",
            route.map_or("", |target| target.host.as_str())
        )),
        Refusal::Refused { .. } | Refusal::Failed(_) | Refusal::Unsupported(_) => Reply::line(refusal.to_string()),
    }
}

/// Reads AWS STS's answer to `AssumeRoleWithWebIdentity`, as the aws exchange does: the
/// fuzz targets' way in to a parser that is otherwise reached only over the network.
#[doc(hidden)]
pub fn parse_sts_answer(status: u16, body: &[u8]) -> Result<crate::ExchangeResponse, crate::ExchangeError> {
    crate::exchange::aws_sts::parse("aws", status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_unknown_routes_fail_with_nothing_on_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let env = Env::from_pairs([("MAYFLY_CONFIG", config.display().to_string())]);
        for args in [vec![], vec!["a", "b"], vec!["bad name"], vec!["deploy"]] {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            let mut out = Vec::new();
            assert_eq!(serve(&args, &mut out, env.clone(), &Vec::new), 1, "{args:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn sts_answers_read_as_the_aws_exchange_reads_them() {
        let body = "<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>";
        let err = parse_sts_answer(403, body.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "exchange `aws` refused: AccessDenied: no");
        assert!(parse_sts_answer(200, b"<html>proxy</html>").is_err());
    }

    #[test]
    fn each_refusal_is_one_line_and_exit_1() {
        let target = Target::aws("deploy").unwrap();
        let answers: Vec<Reply> =
            crate::protocol::every_refusal().iter().map(|refusal| refuse(refusal, Some(&target))).collect();
        let no_route = Reply::line("no aws route named `deploy` in the mayfly config");
        assert_eq!(
            answers,
            [
                no_route.clone(),
                no_route,
                Reply::line("no token for https://h.example/org/app (git write): route `r` does not allow write"),
                Reply::line("the request is malformed"),
                Reply::line("unknown action"),
            ]
        );
    }
}
