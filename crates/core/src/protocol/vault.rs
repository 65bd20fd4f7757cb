//! Vault's and OpenBao's token helper protocol.
//!
//! The CLIs run the program `token_helper` names in their config file (`~/.vault` for
//! `vault`, `~/.bao` for `bao`, or the file `VAULT_CONFIG_PATH`/`BAO_CONFIG_PATH` names)
//! with one argument, through `$SHELL -c`. `bao` sets `BAO_ADDR` and `VAULT_ADDR` to the
//! address it talks to; HashiCorp's `vault` passes only the environment it inherited, so
//! an `-address` on its command line (or `VAULT_AGENT_ADDR`) would send the token for
//! `VAULT_ADDR`'s server elsewhere. The helper therefore reads the calling CLI's command
//! line from the process ancestry and refuses when it names another address:
//!
//! - `get` prints the token for the route of the address's host (tool `vault`), or
//!   nothing when no route serves it (the CLI's "no token"), exit 0.
//! - `store` is how `vault login` keeps the token it got: the helper reads it to the end
//!   and refuses, so the login fails with one line and no token reaches a file. mayfly
//!   logs in itself, when a command needs a token; a token kept from another login would
//!   only shadow the route's.
//! - `erase` (`vault token revoke -self`) drops the cached token and revokes it.

use std::io::{Read, Write};

use crate::protocol::{Refusal, Reply};
use crate::{EnvVars, Operation, Process, Target, Tool};

/// The `vault-token-helper-mayfly` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "vault-token-helper-mayfly",
    help: r#"Vault's and OpenBao's token helper: `get` answers with a token for the server in VAULT_ADDR.

Wire it in ~/.vault (vault) or ~/.bao (bao), with the binary's absolute path:
  token_helper = "/usr/local/bin/vault-token-helper-mayfly"
"#,
    serve: |args, stdin, stdout, env, ancestry| serve(args, stdin, stdout, env, ancestry),
};

/// Runs one helper invocation; returns the exit code.
pub fn serve(
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    env: crate::Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> i32 {
    match handle(args, stdin, env, ancestry) {
        Ok(None) => 0,
        // No newline: the CLI takes the output as it is for the `X-Vault-Token` header.
        Ok(Some(token)) => i32::from(stdout.write_all(token.as_bytes()).and_then(|()| stdout.flush()).is_err()),
        Err(refusal) => refuse(&refusal).write(stdout),
    }
}

/// How the CLI is answered without a token: nothing and exit 0 is its "no token", for a
/// server no route serves; anything else is one line on stderr and exit 1, which the CLI
/// reports as the helper's failure.
fn refuse(refusal: &Refusal) -> Reply {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => Reply::default(),
        Refusal::Refused { .. } | Refusal::Failed(_) | Refusal::Unsupported(_) => Reply::line(refusal.to_string()),
    }
}

fn handle(
    args: &[String],
    stdin: &mut dyn Read,
    env: crate::Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> Result<Option<String>, Refusal> {
    let [verb] = args else {
        return Err(Refusal::Unsupported("usage: vault-token-helper-mayfly get|store|erase".into()));
    };
    match verb.as_str() {
        "get" => {
            let target = target(&env)?;
            // The chain is walked once: for the address check and for the audit line.
            let chain = ancestry();
            elsewhere(&target, &env, &chain)?;
            let issued = crate::protocol::token_for(&target, &|_| Operation::Read, env, &|| chain.clone())?;
            Ok(Some(issued.token.expose().to_owned()))
        }
        "store" => {
            // The CLI writes the token and expects it read before the helper fails.
            let _ = std::io::copy(stdin, &mut std::io::sink());
            Err(Refusal::Failed(
                "mayfly logs in to Vault when a command needs a token and never stores one: the token of this login was not kept".into(),
            ))
        }
        "erase" => match crate::protocol::erase(&target(&env)?, env, ancestry) {
            // Nothing cached for a server no route serves: erased already.
            Ok(()) | Err(Refusal::NotOurs | Refusal::NeedsPath { .. }) => Ok(None),
            Err(refusal) => Err(refusal),
        },
        other => Err(Refusal::Unsupported(format!(
            "unknown verb `{}` (get, store or erase)",
            crate::sanitize_for_terminal(other)
        ))),
    }
}

/// The server the CLI talks to: `VAULT_ADDR`, or `BAO_ADDR`; the two must agree when both
/// are set.
fn target(env: &crate::Env) -> Result<Target, Refusal> {
    let given = |name| env.get(name).filter(|v| !v.is_empty());
    let addr = match (given(EnvVars::VAULT_ADDR), given(EnvVars::BAO_ADDR)) {
        (Some(vault), Some(bao)) if vault != bao => {
            return Err(Refusal::Failed(format!(
                "`VAULT_ADDR` ({}) and `BAO_ADDR` ({}) name different servers",
                shown(vault),
                shown(bao)
            )));
        }
        (Some(addr), _) | (None, Some(addr)) => addr,
        (None, None) => return Err(Refusal::Failed("`VAULT_ADDR` is not set, so the server is unknown".into())),
    };
    let bad = || Refusal::Failed(format!("`VAULT_ADDR` `{}` is not a URL", shown(addr)));
    let url = crate::target::strict_url(addr).ok_or_else(bad)?;
    let host = crate::target::host_port(&url).ok_or_else(bad)?;
    Target::new(Tool::Vault, url.scheme(), &host, None).map_err(|e| Refusal::Failed(e.to_string()))
}

/// An address as an error line shows it: scheme and host only, so no password or path
/// in it reaches stderr.
fn shown(addr: &str) -> String {
    let text = match url::Url::parse(addr) {
        Ok(url) => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
        Err(_) => "an address that is not a URL".to_owned(),
    };
    crate::sanitize_for_terminal(&text)
}

/// Options of the `vault` and `bao` CLIs that name the server or an agent.
const ADDRESS_FLAGS: [&str; 2] = ["address", "agent-address"];

/// Why the CLI may talk to another server than `target`: an address option on the command
/// line of the CLI that ran the helper (the nearest `vault` or `bao` above it, or, when
/// none is named so, every ancestor), or an agent address, that names another.
fn elsewhere(target: &Target, env: &crate::Env, chain: &[Process]) -> Result<(), Refusal> {
    let same = |addr: &str| {
        crate::target::strict_url(addr)
            .and_then(|url| Some((url.scheme().to_owned(), crate::target::host_port(&url)?)))
            .is_some_and(|(scheme, host)| Target::new(Tool::Vault, &scheme, &host, None).is_ok_and(|t| t == *target))
    };
    for var in [EnvVars::VAULT_AGENT_ADDR, EnvVars::BAO_AGENT_ADDR] {
        if let Some(agent) = env.get(var).filter(|a| !a.is_empty() && !same(a)) {
            return Err(Refusal::Failed(format!(
                "`{var}` ({}) names another server than {}, so no token is given",
                shown(agent),
                target.display()
            )));
        }
    }
    let cli = chain.iter().position(|p| {
        let program = p.argv.first().map(|a| a.rsplit('/').next().unwrap_or(a));
        matches!(program, Some("vault" | "bao"))
    });
    let callers = &chain[..cli.map_or(chain.len(), |i| i + 1)];
    for process in callers {
        let mut args = process.argv.iter().skip(1).peekable();
        while let Some(arg) = args.next() {
            let Some(option) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else { continue };
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (option, None),
            };
            if !ADDRESS_FLAGS.contains(&name) {
                continue;
            }
            let value = value.or_else(|| args.peek().map(|v| v.as_str())).unwrap_or_default();
            if !same(value) {
                return Err(Refusal::Failed(format!(
                    "the CLI's `-{name}` ({}) names another server than {}, which is the one the token would be for: set `VAULT_ADDR` instead",
                    shown(value),
                    target.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], addr: Option<&str>, input: &[u8]) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let mut pairs = vec![("MAYFLY_CONFIG".to_owned(), config.display().to_string())];
        pairs.extend(addr.map(|a| ("VAULT_ADDR".to_owned(), a.to_owned())));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let code = serve(&args, &mut &input[..], &mut out, crate::Env::from_pairs(pairs), &Vec::new);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn no_route_is_no_token_and_success() {
        assert_eq!(run(&["get"], Some("https://vault.example:8200"), b""), (0, String::new()));
        assert_eq!(run(&["erase"], Some("https://vault.example:8200"), b""), (0, String::new()));
    }

    #[test]
    fn store_reads_the_token_then_refuses() {
        let big = vec![b'x'; 1 << 20];
        assert_eq!(run(&["store"], Some("https://vault.example:8200"), &big), (1, String::new()));
    }

    #[test]
    fn odd_requests_fail() {
        assert_eq!(run(&["get"], None, b"").0, 1, "no address");
        assert_eq!(run(&["get"], Some("vault.example:8200/\u{1b}[2J"), b"").0, 1);
        assert_eq!(run(&["get"], Some("https://user:pw@vault.example"), b"").0, 1);
        assert_eq!(run(&["frobnicate"], Some("https://vault.example"), b"").0, 1);
        assert_eq!(run(&[], Some("https://vault.example"), b"").0, 1);
        assert_eq!(run(&["get", "extra"], Some("https://vault.example"), b"").0, 1);
        let env = crate::Env::from_pairs([("VAULT_ADDR", "https://a.example"), ("BAO_ADDR", "https://b.example")]);
        let err = target(&env).unwrap_err().to_string();
        assert!(err.contains("name different servers"), "{err}");
        let env = crate::Env::from_pairs([("BAO_ADDR", "https://b.example:8200")]);
        assert_eq!(target(&env).unwrap().display(), "https://b.example:8200");
    }

    #[test]
    fn error_lines_show_no_password() {
        let env =
            crate::Env::from_pairs([("VAULT_ADDR", "https://user:pw@a.example/p"), ("BAO_ADDR", "https://b.example")]);
        let err = target(&env).unwrap_err().to_string();
        assert!(err.contains("https://a.example") && !err.contains("pw") && !err.contains("user"), "{err}");
        let env = crate::Env::from_pairs([("VAULT_ADDR", "ftp://user:pw@a.example/")]);
        let err = target(&env).unwrap_err().to_string();
        assert!(err.contains("ftp://a.example") && !err.contains("pw"), "{err}");
        let err = elsewhere(
            &target(&crate::Env::from_pairs([("VAULT_ADDR", "https://a.example")])).unwrap(),
            &crate::Env::from_pairs([("VAULT_AGENT_ADDR", "https://u:secret@agent.example")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("https://agent.example") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn an_address_the_cli_was_given_elsewhere_is_refused() {
        let target = target(&crate::Env::from_pairs([("VAULT_ADDR", "https://vault.corp")])).unwrap();
        let none = crate::Env::from_pairs(Vec::<(String, String)>::new());
        let chain = |argv: &[&str]| {
            vec![
                Process {
                    pid: 3,
                    argv: vec!["/bin/sh".into(), "-c".into(), "/bin/vault-token-helper-mayfly get".into()],
                },
                Process { pid: 2, argv: argv.iter().map(|a| a.to_string()).collect() },
                Process { pid: 1, argv: vec!["bash".into(), "--address".into(), "https://evil".into()] },
            ]
        };
        for argv in [
            &["vault", "kv", "get", "-address=https://evil.example", "k"][..],
            &["/usr/bin/vault", "-address", "https://evil.example", "kv", "get", "k"],
            &["bao", "kv", "get", "--address=https://evil.example", "k"],
            &["vault", "kv", "get", "--address", "https://evil.example", "k"],
            &["vault", "kv", "get", "-agent-address=https://evil.example", "k"],
            &["vault", "kv", "get", "-address"],
            &["my-vault", "kv", "get", "-address=https://evil.example"],
        ] {
            let err = elsewhere(&target, &none, &chain(argv)).unwrap_err().to_string();
            assert!(err.contains("names another server than https://vault.corp"), "{argv:?}: {err}");
        }
        for argv in [
            &["vault", "kv", "get", "k"][..],
            &["vault", "kv", "get", "-address=https://vault.corp/", "k"],
            &["bao", "-address", "https://vault.corp:443", "kv", "get", "k"],
            &["vault", "kv", "put", "k", "address=https://evil.example"],
        ] {
            assert_eq!(elsewhere(&target, &none, &chain(argv)), Ok(()), "{argv:?}");
        }
        for (var, agent) in [("VAULT_AGENT_ADDR", "https://evil.example"), ("BAO_AGENT_ADDR", "http://127.0.0.1:8100")]
        {
            let env = crate::Env::from_pairs([(var, agent)]);
            let err = elsewhere(&target, &env, &chain(&["vault", "kv", "get", "k"])).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
        let env = crate::Env::from_pairs([("VAULT_AGENT_ADDR", "https://vault.corp")]);
        assert_eq!(elsewhere(&target, &env, &chain(&["vault", "kv", "get", "k"])), Ok(()));
    }

    #[test]
    fn each_refusal_gets_the_clis_answer() {
        let answers: Vec<Reply> = crate::protocol::every_refusal().iter().map(refuse).collect();
        assert_eq!(
            answers,
            [
                Reply::default(),
                Reply::default(),
                Reply::line("no token for https://h.example/org/app (git write): route `r` does not allow write"),
                Reply::line("the request is malformed"),
                Reply::line("unknown action"),
            ]
        );
    }
}
