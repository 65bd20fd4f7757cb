//! The docker credential helper protocol, spoken by the docker CLI, containers/image
//! (skopeo, podman, buildah) and go-containerregistry (crane, ko, cosign).
//!
//! One argument names the action; `get` reads the bare server URL (no newline) and answers
//! `{"ServerURL","Username","Secret"}`. A registry with no route gets the exact text
//! `credentials not found in native keychain` and exit 1, which every client treats as "no
//! credentials". Errors go to stdout too (the protocol's channel) and, as one `mayfly:`
//! line, to stderr. `store` is refused, `list` names nothing: mayfly keeps no credentials.

use std::io::{Read, Write};

use serde_json::json;

use crate::protocol::{Refusal, Reply};
use crate::{Env, Process, Target, Tool, infer_oci_operation};

/// The not-found answer clients compare against, byte for byte.
pub const NOT_FOUND: &str = "credentials not found in native keychain";
/// Most of stdin read.
const MAX_INPUT: u64 = 64 * 1024;

/// The `docker-credential-mayfly` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "docker-credential-mayfly",
    help: r#"The credential helper of docker, skopeo, podman, buildah and crane: answers `get` with a
registry token minted for the operation, and never stores one.

Wire it per registry in the docker config or containers' auth.json:
  "credHelpers": {"REGISTRY": "mayfly"}
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
    let [action] = args else {
        return refuse(&Refusal::Unsupported("usage: docker-credential-mayfly store|get|erase|list|version".into()))
            .write(stdout);
    };
    if !["get", "erase", "store", "list", "version", "--version", "-v"].contains(&action.as_str()) {
        let why =
            format!("unknown action `{}` (store, get, erase, list or version)", crate::sanitize_for_terminal(action));
        return refuse(&Refusal::Unsupported(why)).write(stdout);
    }
    let mut input = String::new();
    let read = stdin.take(MAX_INPUT).read_to_string(&mut input);
    let _ = std::io::copy(stdin, &mut std::io::sink());
    let answer = match action.as_str() {
        "get" if read.is_err() => Err(Refusal::Failed("server URL is not UTF-8".into())),
        "get" => get(input.trim(), env, ancestry),
        "erase" => {
            if let Some(target) = parse_server(input.trim()) {
                let _ = crate::protocol::erase(&target, env, ancestry);
            }
            Ok(String::new())
        }
        "store" => Err(Refusal::Failed(
            "mayfly mints a token for each request and never stores one; remove this registry from `docker login`"
                .into(),
        )),
        "list" => Ok("{}".into()),
        // `version`, `--version` or `-v`: the only actions left.
        _ => Ok(concat!("docker-credential-mayfly (mayfly) ", env!("CARGO_PKG_VERSION")).into()),
    };
    match answer {
        Ok(answer) if answer.is_empty() => 0,
        Ok(answer) => {
            let _ = writeln!(stdout, "{answer}");
            0
        }
        Err(refusal) => refuse(&refusal).write(stdout),
    }
}

/// How docker's clients are answered without a token. [`NOT_FOUND`] is the one text
/// every client reads as "no credentials" (and goes on without them); other errors go on
/// stdout, the protocol's channel, and as one line on stderr. What is not a request of
/// the protocol gets the stderr line only.
fn refuse(refusal: &Refusal) -> Reply {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => {
            Reply { code: 1, stdout: format!("{NOT_FOUND}\n"), stderr: None }
        }
        Refusal::Refused { .. } | Refusal::Failed(_) => {
            let line = refusal.to_string();
            Reply { code: 1, stdout: format!("{line}\n"), stderr: Some(line) }
        }
        Refusal::Unsupported(_) => Reply::line(refusal.to_string()),
    }
}

fn get(server: &str, env: Env, ancestry: &dyn Fn() -> Vec<Process>) -> Result<String, Refusal> {
    if server.is_empty() {
        return Err(Refusal::Failed("no credentials server URL".into()));
    }
    let target = parse_server(server).ok_or(Refusal::NotOurs)?;
    let issued = crate::protocol::token_for(&target, &|chain| infer_oci_operation(chain), env, ancestry)?;
    Ok(json!({"ServerURL": server, "Username": issued.username, "Secret": issued.token.expose()}).to_string())
}

/// `host[:port]`, `https://host[:port][/...]` (docker CLI; the path is ignored) or
/// `host[:port]/namespace/repo` (go-containerregistry names the repository first).
fn parse_server(server: &str) -> Option<Target> {
    if server.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let (explicit_scheme, rest) = match server.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") => {
            (true, rest)
        }
        Some(_) => return None,
        None => (false, server),
    };
    let (host, path) = rest.split_once('/').map_or((rest, None), |(h, p)| (h, Some(p)));
    let path = if explicit_scheme { None } else { path.filter(|p| !p.is_empty()) };
    Target::new(Tool::Oci, "https", host, path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], input: &str) -> (i32, String) {
        crate::protocol::serve_unrouted(&HOOK, args, input.as_bytes())
    }

    #[test]
    fn unrouted_registries_get_the_exact_not_found_text() {
        for input in [
            "registry.example.com",
            "registry.example.com:5000\n",
            "https://index.docker.io/v1/",
            "gcr.io/proj/img",
            "  r.example  ",
        ] {
            assert_eq!(run(&["get"], input), (1, format!("{NOT_FOUND}\n")), "{input:?}");
        }
    }

    #[test]
    fn the_other_actions_answer_as_the_protocol_says() {
        assert_eq!(run(&["get"], ""), (1, "no credentials server URL\n".into()));
        assert_eq!(run(&["list"], "unused"), (0, "{}\n".into()));
        assert_eq!(run(&["erase"], "registry.example.com"), (0, String::new()));
        assert_eq!(run(&["store"], r#"{"ServerURL":"r","Username":"u","Secret":"s"}"#).0, 1);
        assert!(run(&["version"], "").1.starts_with("docker-credential-mayfly (mayfly) "));
        assert_eq!(run(&[], "").0, 1);
        assert_eq!(run(&["get", "extra"], "").0, 1);
        assert_eq!(run(&["teleport"], "").0, 1);
    }

    #[test]
    fn server_urls_name_host_and_sometimes_repository() {
        let t = parse_server("Registry.Example.com:443/team/app").unwrap();
        assert_eq!((t.host.as_str(), t.path.as_deref()), ("registry.example.com", Some("team/app")));
        let t = parse_server("https://index.docker.io/v1/").unwrap();
        assert_eq!((t.host.as_str(), t.path), ("index.docker.io", None));
        for bad in ["ftp://r", "r\u{1b}x", "a@b", "r/../x"] {
            assert!(parse_server(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn each_refusal_gets_the_answer_docker_clients_read() {
        let both = |line: &str| Reply { code: 1, stdout: format!("{line}\n"), stderr: Some(line.into()) };
        let not_found = Reply { code: 1, stdout: format!("{NOT_FOUND}\n"), stderr: None };
        let answers: Vec<Reply> = crate::protocol::every_refusal().iter().map(refuse).collect();
        assert_eq!(
            answers,
            [
                not_found.clone(),
                not_found,
                both("no token for https://h.example/org/app (git write): route `r` does not allow write"),
                both("the request is malformed"),
                Reply::line("unknown action"),
            ]
        );
    }
}
