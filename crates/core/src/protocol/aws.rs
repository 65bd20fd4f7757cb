//! AWS `credential_process`: `mayfly-aws-credential ROUTE` prints
//! `{"Version":1,"AccessKeyId",...,"Expiration"}` on stdout and exits 0, or one line on
//! stderr and exits 1. botocore shows that stderr in its error (and may log it), so it
//! never carries a secret.

use std::io::Write;

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
    let result = match args {
        [name] => {
            Target::aws(name).map_err(|_| format!("`{}` is not a route name", crate::sanitize_for_terminal(name)))
        }
        _ => Err("usage: mayfly-aws-credential ROUTE (the name of an aws route in the mayfly config)".into()),
    }
    .and_then(|target| {
        crate::protocol::token_for(&target, &|_| Operation::Read, env, ancestry)?
            .ok_or_else(|| format!("no aws route named `{}` in the mayfly config", target.host))
    })
    .and_then(|issued| {
        let mut document = issued.token.expose().as_bytes().to_vec();
        document.push(b'\n');
        stdout.write_all(&document).and_then(|()| stdout.flush()).map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => 0,
        Err(message) => {
            crate::protocol::warn(&message);
            1
        }
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
}
