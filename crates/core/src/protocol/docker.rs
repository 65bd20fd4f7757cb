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
    // Not a request of the protocol: one line on stderr, nothing on its channel.
    let [action] = args else {
        crate::protocol::warn("usage: docker-credential-mayfly store|get|erase|list|version");
        return 1;
    };
    if !["get", "erase", "store", "list", "version", "--version", "-v"].contains(&action.as_str()) {
        crate::protocol::warn(&format!(
            "unknown action `{}` (store, get, erase, list or version)",
            crate::sanitize_for_terminal(action)
        ));
        return 1;
    }
    let mut input = String::new();
    let read = stdin.take(MAX_INPUT).read_to_string(&mut input);
    let _ = std::io::copy(stdin, &mut std::io::sink());
    let (code, answer) = match action.as_str() {
        "get" if read.is_err() => (1, "server URL is not UTF-8".to_owned()),
        "get" => get(input.trim(), env, ancestry),
        "erase" => {
            if let Some(target) = parse_server(input.trim()) {
                let _ = crate::protocol::erase(&target, env, ancestry);
            }
            (0, String::new())
        }
        "store" => (
            1,
            "mayfly mints a token for each request and never stores one; remove this registry from `docker login`"
                .into(),
        ),
        "list" => (0, "{}".into()),
        // `version`, `--version` or `-v`: the only actions left.
        _ => (0, concat!("docker-credential-mayfly (mayfly) ", env!("CARGO_PKG_VERSION")).into()),
    };
    if code != 0 && answer != NOT_FOUND {
        crate::protocol::warn(&answer);
    }
    if !answer.is_empty() {
        let _ = writeln!(stdout, "{answer}");
    }
    code
}

fn get(server: &str, env: Env, ancestry: &dyn Fn() -> Vec<Process>) -> (i32, String) {
    if server.is_empty() {
        return (1, "no credentials server URL".into());
    }
    let Some(target) = parse_server(server) else { return (1, NOT_FOUND.into()) };
    match crate::protocol::token_for(&target, &|chain| infer_oci_operation(chain), env, ancestry) {
        Ok(Some(issued)) => {
            let answer = json!({"ServerURL": server, "Username": issued.username, "Secret": issued.token.expose()});
            (0, answer.to_string())
        }
        Ok(None) => (1, NOT_FOUND.into()),
        Err(message) => (1, message),
    }
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
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let env = Env::from_pairs([("MAYFLY_CONFIG", config.display().to_string())]);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let code = serve(&args, &mut input.as_bytes(), &mut out, env, &Vec::new);
        (code, String::from_utf8(out).unwrap())
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
}
