//! What the fuzz targets share: environments over fixed configs, and the framing of
//! inputs that carry more than one value.
//!
//! Two configs stand behind every hook target. `empty` has no routes, so every request is
//! "not ours". `routed` has a route for one host per tool, each allowing only `write`,
//! which none of these requests can ask for (the ancestry they see is empty, so git and
//! OCI read; cargo never asks for `write`): a request that reaches such a route is refused
//! before any cache, identity source or network is touched. Neither config can mint a
//! token, so no answer may ever carry one.

use std::path::PathBuf;
use std::sync::OnceLock;

use mayfly_core::{Env, EnvVars, Process};

/// The git host the routed config serves.
pub const GIT_HOST: &str = "git.example.com";
/// The OCI registry the routed config serves.
pub const OCI_HOST: &str = "registry.example.com";
/// The cluster the routed config serves.
pub const KUBE_HOST: &str = "k8s.example.com:6443";
/// The Terraform host the routed config serves.
pub const TERRAFORM_HOST: &str = "app.terraform.io";
/// The cargo registry (behind an RFC 8693 exchange) the routed config serves.
pub const CARGO_HOST: &str = "cargo.example.com";
/// The cargo registry behind a crates.io-style exchange (publish tokens only).
pub const CRATES_HOST: &str = "crates.example.com";
/// The host of Bazel's (`tool = "http"`) route.
pub const HTTP_HOST: &str = "bazel.example.com";

const ROUTED: &str = r#"
[identities.ci]
kind = "env"
var = "MAYFLY_FUZZ_ID_TOKEN"

[exchanges.corp]
kind = "rfc8693"
token_endpoint = "https://127.0.0.1:9/token"

[exchanges.crates]
kind = "crates-io"
token_endpoint = "https://127.0.0.1:9/api/v1/trusted_publishing/tokens"

[[routes]]
tool = "git"
host = "git.example.com"
identity = "ci"
exchange = "corp"
operations = ["write"]

[[routes]]
tool = "oci"
host = "registry.example.com"
identity = "ci"
exchange = "corp"
operations = ["write"]

[[routes]]
tool = "kubectl"
host = "k8s.example.com:6443"
identity = "ci"
exchange = "corp"
operations = ["write"]

[[routes]]
tool = "terraform"
host = "app.terraform.io"
identity = "ci"
exchange = "corp"
operations = ["write"]

[[routes]]
tool = "cargo"
host = "cargo.example.com"
identity = "ci"
exchange = "corp"
operations = ["write"]

[[routes]]
tool = "cargo"
host = "crates.example.com"
identity = "ci"
exchange = "crates"
operations = ["write"]

[[routes]]
tool = "http"
host = "bazel.example.com"
identity = "ci"
exchange = "corp"
operations = ["write"]
"#;

/// The environments the hook targets run in.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// A config with no routes.
    pub empty: Env,
    /// A config whose routes refuse every operation these requests ask for.
    pub routed: Env,
    /// A scratch directory for files a target writes (a project's `.npmrc` ...).
    pub scratch: PathBuf,
}

/// The fixture, made once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let empty_config = dir.path().join("empty.toml");
        let routed_config = dir.path().join("routed.toml");
        std::fs::write(&empty_config, "").expect("write the empty config");
        std::fs::write(&routed_config, ROUTED).expect("write the routed config");
        mayfly_core::Config::parse(ROUTED, &routed_config).expect("the routed config is valid");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).expect("create the scratch directory");
        let env = |config: &std::path::Path| {
            Env::from_pairs([
                (EnvVars::MAYFLY_CONFIG, config.display().to_string()),
                // Below a file: never created, so the cache is off and nothing is written.
                (EnvVars::MAYFLY_RUNTIME_DIR, "/dev/null/mayfly".into()),
                (EnvVars::MAYFLY_CACHE_DIR, "/dev/null/mayfly-cache".into()),
                (EnvVars::MAYFLY_AUDIT_LOG, "/dev/null".into()),
                (EnvVars::HOME, dir.path().join("home").display().to_string()),
            ])
        };
        Fixture { empty: env(&empty_config), routed: env(&routed_config), scratch, _dir: dir }
    })
}

/// The process ancestry for targets that must never look at it (no route matched).
pub fn no_ancestry() -> Vec<Process> {
    panic!("the process ancestry was read for a request no route serves")
}

/// An empty process ancestry: git and OCI requests read.
pub fn empty_ancestry() -> Vec<Process> {
    Vec::new()
}

/// Splits off the first line (without its LF); the rest follows it.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// An input's header line: its first word names the action, and the word `routed`
/// anywhere in it picks the routed config.
pub struct Header<'a> {
    /// The first word.
    pub action: String,
    /// The environment to run in.
    pub env: &'static Env,
    /// True for the routed config.
    pub routed: bool,
    /// What follows the header.
    pub rest: &'a [u8],
}

impl<'a> Header<'a> {
    /// Reads the header line of `data`.
    pub fn read(data: &'a [u8]) -> Self {
        let (line, rest) = first_line(data);
        let line = String::from_utf8_lossy(line);
        let mut words = line.split(' ');
        let action = words.next().unwrap_or_default().to_owned();
        let routed = words.any(|w| w == "routed");
        let fixture = fixture();
        Self { action, env: if routed { &fixture.routed } else { &fixture.empty }, routed, rest }
    }
}

/// Sections of an input: a `--- NAME` line starts each one; what comes before the first
/// is the section named "".
pub fn sections(data: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let (mut name, mut start, mut at) = (String::new(), 0, 0);
    while at < data.len() {
        let end = data[at..].iter().position(|&b| b == b'\n').map_or(data.len(), |p| at + p);
        if let Some(header) = data[at..end].strip_prefix(b"--- ") {
            // The LF before a header belongs to neither section.
            out.push((std::mem::take(&mut name), &data[start..at.saturating_sub(1).max(start)]));
            name = String::from_utf8_lossy(header).into_owned();
            start = (end + 1).min(data.len());
        }
        at = end + 1;
    }
    out.push((name, &data[start..]));
    out
}

/// The section called `name`, if the input has one.
pub fn section<'a>(sections: &[(String, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    sections.iter().find(|(n, _)| n == name).map(|(_, body)| *body)
}

/// The lines of a section, as UTF-8 (lossily).
pub fn lines(body: &[u8]) -> Vec<String> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

/// True when text holds a byte that could end or smuggle a protocol line.
pub fn has_line_break(text: &str) -> bool {
    text.contains(['\r', '\n', '\0'])
}

/// A target's parts are normalised: normalising them again, or building the target again
/// from them, changes nothing, and its display URL names the same host.
pub fn assert_normalised(target: &mayfly_core::Target) {
    use mayfly_core::{Target, normalize_host, normalize_repo_path};
    let host = normalize_host(&target.protocol, &target.host).ok();
    assert_eq!(host.as_deref(), Some(target.host.as_str()), "re-normalising {target:?} changed its host");
    if let Some(path) = &target.path {
        let again = normalize_repo_path(path).ok().flatten();
        assert_eq!(again.as_deref(), Some(path.as_str()), "re-normalising {target:?} changed its path");
    }
    let again = Target::new(target.tool, &target.protocol, &target.host, target.path.as_deref()).ok();
    assert_eq!(again.as_ref(), Some(target), "a target built from a target's parts differs");
    let url = url::Url::parse(&target.display()).expect("a target's display is a URL");
    let shown = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    assert_eq!(shown, target.host, "the display URL of {target:?} names another host");
}

pub mod sts;

