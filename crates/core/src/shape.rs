//! The shape of a command: what an audit line and an exchange may learn of the command
//! that asked for a token, without its secrets.
//!
//! A command line is intent (which program, which subcommand, which target), but it also
//! carries secrets: `-H 'Authorization: Bearer …'`, `--password=…`, `-c
//! http.extraheader=…`, `https://user:pass@host`, `GITHUB_TOKEN=…`. So what is recorded
//! is the program, its subcommands and the non-option arguments that name targets; an
//! option's value is kept only where the option is known to carry something harmless (a
//! branch, a namespace, a region), and never when it looks like a credential. Anything
//! credential-shaped is dropped wherever it stands. Dropped values read `[redacted]`, so
//! shaping a shape changes nothing.
//!
//! The shape cannot know that an unknown tool's unknown option takes a value, nor that a
//! plain word is a password: such a word is kept unless it is credential-shaped.

use serde_json::Value;

use crate::redact::looks_like_token;

/// What stands in for a dropped value.
pub const DROPPED: &str = "[redacted]";
/// Longest argument kept (longer ones are cut and marked).
const MAX_ARG: usize = 256;
/// Most arguments kept of one command.
const MAX_ARGS: usize = 64;

/// Options that take a value in the next argument in some tool mayfly serves (or a shell
/// or HTTP client around one). Their values are dropped unless [`harmless`] says otherwise.
const TAKES_VALUE: &[&str] = &[
    // git
    "-c",
    "-C",
    "--git-dir",
    "--work-tree",
    "--namespace",
    "--config-env",
    "-o",
    "--push-option",
    "--receive-pack",
    "--upload-pack",
    "--exec",
    "--repo",
    "-b",
    "--branch",
    "--depth",
    "--origin",
    "--reference",
    "--template",
    "--separate-git-dir",
    "--server-option",
    // docker, podman, buildah, skopeo, crane
    "--config",
    "--context",
    "-H",
    "--host",
    "--log-level",
    "-l",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--storage-driver",
    "--root",
    "--runroot",
    "--registries-conf",
    "--registries.d",
    "--policy",
    "--url",
    "--connection",
    "--identity",
    "--authfile",
    "--src-authfile",
    "--dest-authfile",
    "--creds",
    "--src-creds",
    "--dest-creds",
    "--cert-dir",
    "--src-cert-dir",
    "--dest-cert-dir",
    "--platform",
    "-t",
    "--tag",
    "-f",
    "--file",
    "--format",
    "-e",
    "--env",
    "--build-arg",
    "--secret",
    "--tmpdir",
    // cargo, npm, pnpm, yarn, twine
    "--registry",
    "--index",
    "-p",
    "--package",
    "--manifest-path",
    "--access",
    "--otp",
    "--userconfig",
    "--prefix",
    "--filter",
    "-w",
    "--workspace",
    "-r",
    "--repository",
    "--repository-url",
    "--config-file",
    "--cert",
    "--client-cert",
    "--sign-with",
    "-i",
    // aws, kubectl, terraform
    "--profile",
    "--region",
    "--endpoint-url",
    "--ca-bundle",
    "--kubeconfig",
    "--cluster",
    "--user",
    "-n",
    // shells and HTTP clients
    "--header",
    "-u",
    "-d",
    "--data",
];

/// Options whose value names a target or a setting and is kept (when it is not
/// credential-shaped): a branch, a tag, a namespace, a region, a registry name.
const HARMLESS: &[&str] = &[
    "-b",
    "--branch",
    "--depth",
    "--origin",
    "--platform",
    "--access",
    "--region",
    "--profile",
    "-n",
    "--namespace",
    "--context",
    "--cluster",
    "--package",
];

/// Words in an option's name that mean its value is a secret, whatever the tool.
const SENSITIVE_NAMES: [&str; 8] = ["password", "passwd", "secret", "token", "key", "credential", "auth", "cookie"];

/// The shape of a command line (see the module docs).
pub fn command_shape(argv: &[String]) -> Vec<String> {
    let mut shape = Vec::with_capacity(argv.len().min(MAX_ARGS));
    let mut args = argv.iter();
    if let Some(program) = args.next() {
        shape.push(positional(program));
    }
    let mut options_done = false;
    while let Some(arg) = args.next() {
        if shape.len() == MAX_ARGS {
            shape.push(format!("[{} more]", args.len() + 1));
            break;
        }
        if options_done || arg == "-" || !arg.starts_with('-') {
            shape.push(positional(arg));
            continue;
        }
        if arg == "--" {
            options_done = true;
            shape.push(arg.clone());
            continue;
        }
        if let Some((name, value)) = arg.split_once('=') {
            shape.push(format!("{}={}", option_name(name), option_value(name, value)));
            continue;
        }
        let name = option_name(arg);
        if TAKES_VALUE.contains(&arg.as_str()) || (arg.starts_with("--") && is_sensitive(arg)) {
            shape.push(name);
            if let Some(value) = args.next() {
                shape.push(option_value(arg, value));
            }
        } else if !arg.starts_with("--") && arg.is_char_boundary(2) && TAKES_VALUE.contains(&&arg[..2]) {
            // `-Hvalue`, `-pSECRET`: a short option with its value attached.
            shape.push(format!("{}{}", &arg[..2], option_value(&arg[..2], &arg[2..])));
        } else {
            shape.push(name);
        }
    }
    shape
}

/// An option's name as recorded: cut to size, credential-shaped names dropped.
fn option_name(name: &str) -> String {
    if looks_like_credential(name) { DROPPED.into() } else { clip(&crate::sanitize_for_terminal(name)) }
}

fn option_value(name: &str, value: &str) -> String {
    let keep = HARMLESS.contains(&name) && !is_sensitive(name) && !looks_like_credential(value);
    if keep { clip(&crate::sanitize_for_terminal(value)) } else { DROPPED.into() }
}

pub(crate) fn is_sensitive(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SENSITIVE_NAMES.iter().any(|word| lower.contains(word))
}

/// A program name or a non-option argument: kept unless credential-shaped; URLs lose
/// their user information, query and fragment; `NAME=value` loses its value.
fn positional(arg: &str) -> String {
    if looks_like_credential(arg) {
        return DROPPED.into();
    }
    if let Some((name, _)) = arg.split_once('=')
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return format!("{}={DROPPED}", clip(name));
    }
    if arg.contains("://") {
        return shape_url(arg);
    }
    clip(&crate::sanitize_for_terminal(arg))
}

/// `scheme://host/path` of a URL: no user information, no query, no fragment.
fn shape_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Not a URL after all: keep only what precedes any `@`, `?` or `#`.
        let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        return clip(&crate::sanitize_for_terminal(&format!("{scheme}://{rest}")));
    };
    let had_query = url.query().is_some() || url.fragment().is_some();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let mut shown = url.to_string();
    if had_query {
        shown.push('?');
        shown.push_str(DROPPED);
    }
    clip(&crate::sanitize_for_terminal(&shown))
}

/// Token formats, header values, and long random-looking strings.
fn looks_like_credential(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    if ["authorization:", "bearer ", "basic ", "token ", "private-token:", "cookie:"].iter().any(|h| lower.contains(h))
    {
        return true;
    }
    if value.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.=+/".contains(c))).any(looks_like_token) {
        return true;
    }
    random_looking(value)
}

/// At least 32 characters of a base64 or URL-safe alphabet with upper case, lower case
/// and digits: a key, not a path or a hex commit id.
pub(crate) fn random_looking(value: &str) -> bool {
    value.len() >= 32
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_+=/".contains(c))
        && value.chars().any(|c| c.is_ascii_uppercase())
        && value.chars().any(|c| c.is_ascii_lowercase())
        && value.chars().any(|c| c.is_ascii_digit())
}

fn clip(text: &str) -> String {
    let kept = crate::clip(text, MAX_ARG);
    if kept.len() == text.len() { text.to_owned() } else { format!("{kept}…") }
}

/// An intent as received from a client, made safe to log and to give a policy: `command`
/// (an array) is shaped as a command line; every other string loses credential-shaped
/// values and control characters and is cut to size; anything deeper than two levels, or
/// past 32 keys or items, is dropped.
pub fn scrub_intent(intent: &Value) -> Value {
    scrub(intent, 0)
}

fn scrub(value: &Value, depth: usize) -> Value {
    match value {
        Value::String(s) => Value::String(if looks_like_credential(s) { DROPPED.into() } else { positional(s) }),
        Value::Array(items) if depth < 2 => Value::Array(items.iter().take(32).map(|v| scrub(v, depth + 1)).collect()),
        Value::Object(map) if depth < 2 => Value::Object(
            map.iter()
                .take(32)
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("command", Value::Array(argv)) => {
                            let argv: Vec<String> =
                                argv.iter().map(|a| a.as_str().unwrap_or_default().to_owned()).collect();
                            Value::from(command_shape(&argv))
                        }
                        _ => scrub(v, depth + 1),
                    };
                    (clip(&crate::sanitize_for_terminal(k)), v)
                })
                .collect(),
        ),
        Value::Array(_) | Value::Object(_) => Value::String(DROPPED.into()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(args: &[&str]) -> String {
        command_shape(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).join(" ")
    }

    /// Secrets of every kind the issue names, each in a command line.
    const SECRETS: [&str; 12] = [
        "hunter2-password",
        "ghp_abcdefghijklmnopqrstuvwxyz0123", // mayfly-guard: allow
        "glpat-abcdefghijklmnopqrst",
        "npm_abcdefghijklmnopqrstuvwxyz0123",  // mayfly-guard: allow
        "pypi-AgEIcHlwaS5vcmcCJGFiY2RlZmdo",   // mayfly-guard: allow
        "AKIAIOSFODNN7EXAMPLE",                // mayfly-guard: allow
        "sk-ant-api03-abcdefghijklmnopqrstuv", // mayfly-guard: allow
        "sk-proj-abcdefghijklmnopqrstuvwx",
        "xoxb-123456789012-abcdefghijklmnop", // mayfly-guard: allow
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl", // mayfly-guard: allow
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "s3cr3t-header-value",
    ];

    #[test]
    fn no_secret_survives_any_spelling() {
        let [pw, ghp, glpat, npm, pypi, akia, ant, openai, slack, jwt, aws_secret, header] = SECRETS;
        let lines: Vec<Vec<String>> = vec![
            vec!["git".into(), "-c".into(), format!("http.extraheader=Authorization: Bearer {header}"), "push".into()],
            vec![
                "git".into(),
                "-c".into(),
                format!("http.https://h/.extraheader=AUTHORIZATION: basic {header}"),
                "fetch".into(),
            ],
            vec!["curl".into(), "-H".into(), format!("Authorization: Bearer {header}"), "https://h".into()],
            vec!["curl".into(), format!("-HAuthorization: token {header}"), "https://h".into()],
            vec!["curl".into(), "--header".into(), format!("Private-Token: {header}"), "https://h".into()],
            vec!["tool".into(), format!("--password={pw}"), format!("--api-token={pw}"), "--secret".into(), pw.into()],
            vec![
                "tool".into(),
                "--client-key".into(),
                pw.into(),
                "--credential-file".into(),
                pw.into(),
                "--Auth".into(),
                pw.into(),
            ],
            vec!["git".into(), "push".into(), format!("https://user:{pw}@h/org/app"), format!("https://{ghp}@h/x")],
            vec!["curl".into(), format!("https://h/x?token={pw}&a=b")],
            vec!["env".into(), format!("GITHUB_TOKEN={ghp}"), format!("X_TOKEN={pw}"), "git".into(), "push".into()],
            vec!["agent".into(), ghp.into(), glpat.into(), npm.into(), pypi.into(), akia.into()],
            vec!["agent".into(), ant.into(), openai.into(), slack.into(), jwt.into(), aws_secret.into()],
            vec!["twine".into(), "upload".into(), "-p".into(), pw.into(), "-u".into(), "__token__".into()],
            vec!["sh".into(), "-c".into(), format!("git push https://x:{pw}@h/r")],
            vec!["docker".into(), "login".into(), "-p".into(), pw.into(), "--password-stdin".into()],
            vec!["kubectl".into(), "--token".into(), pw.into(), "get".into(), "pods".into()],
            vec!["aws".into(), "s3".into(), "cp".into(), "--sse-c-key".into(), pw.into(), "a".into(), "s3://b".into()],
        ];
        for argv in lines {
            let shown = command_shape(&argv).join(" ");
            for secret in SECRETS {
                assert!(!shown.contains(secret), "{secret} survived in {shown}");
            }
            assert_eq!(command_shape(&command_shape(&argv)).join(" "), shown, "shaping a shape changes it");
        }
    }

    #[test]
    fn the_shape_keeps_program_subcommand_and_targets() {
        assert_eq!(
            shape(&["git", "-C", "/w", "push", "--force", "origin", "main"]),
            "git -C [redacted] push --force origin main"
        );
        assert_eq!(
            shape(&["git", "clone", "--branch", "v1", "https://u:p@h/org/app.git"]),
            "git clone --branch v1 https://h/org/app.git"
        );
        assert_eq!(shape(&["docker", "--config", "/d", "push", "r/x:1"]), "docker --config [redacted] push r/x:1");
        assert_eq!(
            shape(&["npm", "publish", "--tag", "next", "--access=public"]),
            "npm publish --tag [redacted] --access=public"
        );
        assert_eq!(shape(&["kubectl", "-n", "prod", "get", "pods"]), "kubectl -n prod get pods");
        assert_eq!(
            shape(&["git", "show", "0123456789abcdef0123456789abcdef01234567"]),
            "git show 0123456789abcdef0123456789abcdef01234567"
        );
    }

    #[test]
    fn intents_are_scrubbed_on_arrival() {
        let intent = serde_json::json!({
            "tool": "git",
            "command": ["git", "-c", "http.extraheader=Authorization: Bearer s3cr3t-header-value", "push"],
            "note": "token ghp_abcdefghijklmnopqrstuvwxyz0123", // mayfly-guard: allow
            "nested": {"deeper": {"deepest": "x"}},
            "target": "https://user:pw@h/org/app",
        });
        let scrubbed = scrub_intent(&intent).to_string();
        assert!(!scrubbed.contains("s3cr3t") && !scrubbed.contains("ghp_") && !scrubbed.contains(":pw@"), "{scrubbed}");
        assert!(scrubbed.contains(r#""command":["git","-c","[redacted]","push"]"#), "{scrubbed}");
        assert!(scrubbed.contains(r#""deeper":"[redacted]""#), "{scrubbed}");
    }
}
