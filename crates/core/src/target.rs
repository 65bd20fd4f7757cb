//! What a tool asks for: which tool, which host and repository, which operation.

use std::fmt;
use std::str::FromStr;

/// The tool whose hook is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Tool {
    /// git, through `credential.helper`.
    Git,
    /// kubectl and every client-go program, through an exec credential plugin.
    Kubectl,
    /// Terraform and OpenTofu, through a credentials helper.
    Terraform,
    /// The AWS CLI and SDKs, through `credential_process`.
    Aws,
    /// cargo, through a credential provider.
    Cargo,
    /// docker, skopeo, podman, crane and every OCI client, through `credHelpers`.
    Oci,
    /// npm, pnpm and yarn, which have no hook: through the shim.
    Npm,
    /// twine (PyPI uploads), which has no hook: through the shim.
    Pypi,
    /// `gem push` (RubyGems), which has no hook: through the shim.
    Gem,
    /// `nuget push` (NuGet), which has no hook: through `mayfly exec --proxy`, which adds
    /// the API key on the way out.
    Nuget,
    /// A plain HTTPS download with a bearer token for a host and path prefix: Bazel's
    /// credential helper.
    Http,
    /// The Vault and OpenBao CLIs, through their `token_helper`.
    Vault,
}

impl Tool {
    /// The name used in config and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Git => "git",
            Self::Kubectl => "kubectl",
            Self::Terraform => "terraform",
            Self::Aws => "aws",
            Self::Cargo => "cargo",
            Self::Oci => "oci",
            Self::Npm => "npm",
            Self::Pypi => "pypi",
            Self::Gem => "gem",
            Self::Nuget => "nuget",
            Self::Http => "http",
            Self::Vault => "vault",
        }
    }

    /// The scope a route asks for when it names none: as narrow as the tool's request lets
    /// mayfly know (git names the repository; the others only the host).
    pub fn default_scope(self) -> &'static str {
        match self {
            Self::Git => "repo:{path}:{operation}",
            Self::Kubectl => "cluster:{host}",
            Self::Terraform => "registry:{host}",
            Self::Aws => "{host}",
            Self::Cargo => "crate:{path}:{operation}",
            Self::Oci => "oci:{host}/{path}:{operation}",
            Self::Npm => "npm:{path}:{operation}",
            Self::Pypi => "pypi:{path}:{operation}",
            Self::Gem => "gem:{path}:{operation}",
            Self::Nuget => "nuget:{path}:{operation}",
            Self::Http => "http:{host}/{path}:{operation}",
            Self::Vault => "vault:{host}",
        }
    }

    /// The least time before expiry at which a cached token is replaced. botocore asks
    /// again once AWS credentials are 15 minutes from expiry (and blocks at 10): handing
    /// it the same credentials then would only make it ask on every call.
    pub fn min_refresh_margin(self) -> i64 {
        match self {
            Self::Aws => 15 * 60,
            _ => 0,
        }
    }
}

impl FromStr for Tool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "git" => Ok(Self::Git),
            "kubectl" => Ok(Self::Kubectl),
            "terraform" => Ok(Self::Terraform),
            "aws" => Ok(Self::Aws),
            "cargo" => Ok(Self::Cargo),
            "oci" => Ok(Self::Oci),
            "npm" => Ok(Self::Npm),
            "pypi" => Ok(Self::Pypi),
            "gem" => Ok(Self::Gem),
            "nuget" => Ok(Self::Nuget),
            "http" => Ok(Self::Http),
            "vault" => Ok(Self::Vault),
            other => Err(format!(
                "unknown tool `{other}` (git, kubectl, terraform, aws, cargo, oci, npm, pypi, gem, nuget, http or vault)"
            )),
        }
    }
}

/// What the tool is about to do with the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Operation {
    /// Fetch, clone, download.
    Read,
    /// Push, upload.
    Write,
    /// Publish a package (cargo).
    Publish,
    /// Yank or unyank a published version (cargo).
    Yank,
    /// Change a package's owners (cargo).
    Owners,
}

impl Operation {
    /// The name used in config, scopes and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Publish => "publish",
            Self::Yank => "yank",
            Self::Owners => "owners",
        }
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "publish" => Ok(Self::Publish),
            "yank" => Ok(Self::Yank),
            "owners" => Ok(Self::Owners),
            other => Err(format!("unknown operation `{other}` (read, write, publish, yank or owners)")),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a target could not be built from a tool's request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The protocol is not one mayfly hands tokens to.
    #[error("unsupported protocol `{0}` (only `https`, and `http` to loopback)")]
    Protocol(String),
    /// The host is empty or not a valid host name.
    #[error("invalid host `{0}`")]
    Host(String),
    /// The path has characters no repository path has.
    #[error("invalid repository path")]
    Path,
}

/// A normalised request target: the unit routes match and tokens are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The asking tool.
    pub tool: Tool,
    /// `https`, or `http` for loopback.
    pub protocol: String,
    /// Lowercase, IDNA-encoded host, with the port only when it is not the default.
    pub host: String,
    /// Repository path without leading or trailing `/` and without a trailing `.git`.
    pub path: Option<String>,
}

impl Target {
    /// Normalises and validates the parts of a request.
    pub fn new(tool: Tool, protocol: &str, host: &str, path: Option<&str>) -> Result<Self, Error> {
        let protocol = protocol.to_ascii_lowercase();
        if protocol != "https" && protocol != "http" {
            return Err(Error::Protocol(protocol));
        }
        let host = normalize_host(&protocol, host)?;
        let path = match path {
            Some(p) => normalize_repo_path(p)?,
            None => None,
        };
        Ok(Self { tool, protocol, host, path })
    }

    /// An AWS target: the route named in `credential_process`.
    pub fn aws(name: &str) -> Result<Self, Error> {
        Ok(Self { tool: Tool::Aws, protocol: "aws".into(), host: aws_key(name)?, path: None })
    }

    /// `https://host/path`, for messages and audit lines.
    pub fn display(&self) -> String {
        match &self.path {
            Some(p) => format!("{}://{}/{}", self.protocol, self.host, p),
            None => format!("{}://{}", self.protocol, self.host),
        }
    }
}

/// Normalises `host[:port]` the way URLs do: lowercase, IDNA, default port dropped.
///
/// Anything a URL parser would read as userinfo, path, query or fragment is refused,
/// so `good.example@evil.example` can never match `good.example`.
pub fn normalize_host(protocol: &str, host: &str) -> Result<String, Error> {
    // IDNA can turn other characters into dots (`。`), so the parser's answer is checked to
    // be a fixed point: normalising a normalised host must change nothing.
    let once = normalize_host_once(protocol, host)?;
    match normalize_host_once(protocol, &once) {
        Ok(again) if again == once => Ok(once),
        _ => Err(Error::Host(crate::sanitize_for_terminal(host))),
    }
}

fn normalize_host_once(protocol: &str, host: &str) -> Result<String, Error> {
    let bad = |c: char| c.is_control() || c.is_whitespace() || "@/\\?#%".contains(c);
    let refuse = || Error::Host(crate::sanitize_for_terminal(host));
    if host.is_empty() || host.chars().any(bad) {
        return Err(refuse());
    }
    // One trailing dot (the DNS root) is dropped before the host is parsed, not after, so
    // the result is what the URL parser made of it and normalising it again changes
    // nothing; a name that is nothing but dots, or ends in two, is no host.
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && !name.contains(':') => (name, Some(port)),
        Some((name, port)) if name.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    if name.ends_with("..") || name.chars().all(|c| c == '.') {
        return Err(refuse());
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let rebuilt = match port {
        Some(port) => format!("{name}:{port}"),
        None => name.to_owned(),
    };
    let url = url::Url::parse(&format!("{protocol}://{rebuilt}/")).map_err(|_| refuse())?;
    let name = url.host_str().filter(|h| !h.is_empty()).ok_or_else(refuse)?;
    Ok(match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_owned(),
    })
}

/// Normalises a repository path: no leading or trailing `/`, no trailing `.git`,
/// no empty, `.` or `..` segments. `None` for an empty path.
pub fn normalize_repo_path(path: &str) -> Result<Option<String>, Error> {
    if path.chars().any(|c| c.is_control() || c == '\\' || c == '?' || c == '#') {
        return Err(Error::Path);
    }
    let lower = path.to_ascii_lowercase();
    if ["%0a", "%0d", "%00", "%2f", "%5c"].iter().any(|p| lower.contains(p)) {
        return Err(Error::Path);
    }
    let trimmed = path.trim_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed).trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::Path);
    }
    Ok(Some(trimmed.to_owned()))
}

/// A URL a tool handed us (a cluster server, a registry index), parsed strictly: URL
/// parsers quietly trim control characters and accept `user@host`, and neither belongs in
/// a value a token is routed by.
pub(crate) fn strict_url(text: &str) -> Option<url::Url> {
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let url = url::Url::parse(text).ok()?;
    (url.username().is_empty() && url.password().is_none() && url.host_str().is_some()).then_some(url)
}

/// `host[:port]` of a URL, as targets name hosts.
pub(crate) fn host_port(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// An AWS route name: letters, digits, `.`, `_` and `-`, at most 64.
pub(crate) fn aws_key(name: &str) -> Result<String, Error> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok { Ok(name.to_owned()) } else { Err(Error::Host(crate::sanitize_for_terminal(name))) }
}

/// True when `prefix` is `path` or a whole-segment prefix of it.
pub(crate) fn is_segment_prefix(prefix: &str, path: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_normalise_like_urls() {
        assert_eq!(normalize_host("https", "Git.Example.COM").unwrap(), "git.example.com");
        assert_eq!(normalize_host("https", "git.example.com:443").unwrap(), "git.example.com");
        assert_eq!(normalize_host("http", "git.example.com:80").unwrap(), "git.example.com");
        assert_eq!(normalize_host("https", "git.example.com:8443").unwrap(), "git.example.com:8443");
        assert_eq!(normalize_host("https", "[::1]:443").unwrap(), "[::1]");
        assert_eq!(normalize_host("https", "bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(normalize_host("https", "example.com.").unwrap(), "example.com");
        assert_eq!(normalize_host("https", "example.com.:8443").unwrap(), "example.com:8443");
        // Normalising twice changes nothing, even for hosts a URL parser rewrites.
        for host in ["Git.Example.COM.", "1.", "0x744.", "127.0.0.1:443", "[::1]:8443", "bücher.example."] {
            let once = normalize_host("https", host).unwrap();
            assert_eq!(normalize_host("https", &once).unwrap(), once, "{host}");
        }
    }

    #[test]
    fn hostile_hosts_are_refused() {
        for host in [
            "",
            "good.example@evil.example",
            "evil.example/good.example",
            "a b",
            "a\nb",
            "a%0ab",
            "x?y",
            "x#y",
            ".",
            "..",
            ".:1443",
            "1..",
            "example.com..8..",
            "a..:443",
        ] {
            assert!(normalize_host("https", host).is_err(), "{host:?} accepted");
        }
    }

    #[test]
    fn repo_paths_normalise() {
        assert_eq!(normalize_repo_path("org/app.git").unwrap().as_deref(), Some("org/app"));
        assert_eq!(normalize_repo_path("/org/app/").unwrap().as_deref(), Some("org/app"));
        assert_eq!(normalize_repo_path("").unwrap(), None);
        for bad in ["org/../app", "org//app", "org/app%0ahost=x", "a\\b", "org/app?x"] {
            assert!(normalize_repo_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn segment_prefix_matches_whole_segments_only() {
        assert!(is_segment_prefix("org/app", "org/app"));
        assert!(is_segment_prefix("org", "org/app"));
        assert!(!is_segment_prefix("org/app", "org/apples"));
        assert!(!is_segment_prefix("org/app", "org"));
    }

    #[test]
    fn urls_from_tools_are_parsed_strictly() {
        assert!(strict_url("https://k8s.example:6443").is_some());
        for bad in [
            "https://k8s.example\u{0}",
            " https://k8s.example",
            "https://k8s.example/\n",
            "https://evil@k8s.example",
            "https://a:b@k8s.example",
            "not a url",
            "unix:/x",
        ] {
            assert!(strict_url(bad).is_none(), "{bad:?}");
        }
        assert_eq!(host_port(&strict_url("https://K8S.example:6443/x").unwrap()).unwrap(), "k8s.example:6443");
    }

    #[test]
    fn only_https_and_http_are_targets() {
        assert!(Target::new(Tool::Git, "ssh", "h", None).is_err());
        assert!(Target::new(Tool::Git, "cert", "", None).is_err());
    }
}
