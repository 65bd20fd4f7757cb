//! The environment, read once and passed down, and the table of every variable mayfly reads.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every environment variable mayfly reads, in one place.
pub struct EnvVars;

impl EnvVars {
    /// Path of the config file; default `$XDG_CONFIG_HOME/mayfly/config.toml`.
    pub const MAYFLY_CONFIG: &'static str = "MAYFLY_CONFIG";
    /// Directory of encrypted cache entries; default `$XDG_CACHE_HOME/mayfly/tokens`.
    pub const MAYFLY_CACHE_DIR: &'static str = "MAYFLY_CACHE_DIR";
    /// Memory-backed directory for the cache key; default `$XDG_RUNTIME_DIR/mayfly`,
    /// else `/dev/shm/mayfly-<uid>`.
    pub const MAYFLY_RUNTIME_DIR: &'static str = "MAYFLY_RUNTIME_DIR";
    /// Path of the audit log; default `$XDG_STATE_HOME/mayfly/audit.jsonl`.
    pub const MAYFLY_AUDIT_LOG: &'static str = "MAYFLY_AUDIT_LOG";
    /// Session id that tags audit lines and cache entries (set by `mayfly exec`).
    pub const MAYFLY_SESSION: &'static str = "MAYFLY_SESSION";
    /// The agent a delegated session declares (set by `mayfly exec --agent`): exchanges
    /// that take actor tokens mint tokens naming it.
    pub const MAYFLY_AGENT: &'static str = "MAYFLY_AGENT";
    /// Set by `mayfly exec --proxy` for its command: tokens reach the network only through
    /// the session's proxy, so every helper run inside refuses to hand one out.
    pub const MAYFLY_PROXY_SESSION: &'static str = "MAYFLY_PROXY_SESSION";
    /// Where the cache key and logins live: `keyring` (the kernel user keyring, the
    /// default where it works) or `runtime` (files in the memory-backed runtime
    /// directory, the fallback where the keyring is unavailable).
    pub const MAYFLY_KEY_STORE: &'static str = "MAYFLY_KEY_STORE";
    /// GitHub Actions: URL of the job's OIDC token endpoint.
    pub const ACTIONS_ID_TOKEN_REQUEST_URL: &'static str = "ACTIONS_ID_TOKEN_REQUEST_URL";
    /// GitHub Actions: bearer token for that endpoint.
    pub const ACTIONS_ID_TOKEN_REQUEST_TOKEN: &'static str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
    /// kubectl: the exec plugin's input (`ExecCredential` with `spec.cluster`).
    pub const KUBERNETES_EXEC_INFO: &'static str = "KUBERNETES_EXEC_INFO";
    /// Home directory.
    pub const HOME: &'static str = "HOME";
    /// XDG base directories.
    pub const XDG_CONFIG_HOME: &'static str = "XDG_CONFIG_HOME";
    /// XDG cache directory.
    pub const XDG_CACHE_HOME: &'static str = "XDG_CACHE_HOME";
    /// XDG state directory.
    pub const XDG_STATE_HOME: &'static str = "XDG_STATE_HOME";
    /// XDG runtime directory (memory-backed on systemd systems).
    pub const XDG_RUNTIME_DIR: &'static str = "XDG_RUNTIME_DIR";
    /// AWS: an access key id (doctor reports it).
    pub const AWS_ACCESS_KEY_ID: &'static str = "AWS_ACCESS_KEY_ID";
    /// AWS CLI and SDKs: the config file.
    pub const AWS_CONFIG_FILE: &'static str = "AWS_CONFIG_FILE";
    /// AWS: the profile in use.
    pub const AWS_PROFILE: &'static str = "AWS_PROFILE";
    /// AWS: a secret access key (doctor reports it).
    pub const AWS_SECRET_ACCESS_KEY: &'static str = "AWS_SECRET_ACCESS_KEY";
    /// AWS: a session token (a long-lived credential when with a key; doctor reports it).
    pub const AWS_SESSION_TOKEN: &'static str = "AWS_SESSION_TOKEN";
    /// bash: a file sourced by non-interactive shells (GitLab and CircleCI hand variables to later steps through it).
    pub const BASH_ENV: &'static str = "BASH_ENV";
    /// The browser `mayfly login` opens (a command that takes the URL as its argument).
    pub const BROWSER: &'static str = "BROWSER";
    /// Set in Buildkite jobs.
    pub const BUILDKITE: &'static str = "BUILDKITE";
    /// cargo: its home (config, credentials).
    pub const CARGO_HOME: &'static str = "CARGO_HOME";
    /// Set in CircleCI jobs.
    pub const CIRCLECI: &'static str = "CIRCLECI";
    /// An X11 display: `mayfly login` may open a browser with `xdg-open`.
    pub const DISPLAY: &'static str = "DISPLAY";
    /// docker: a whole `config.json` document, read before any file.
    pub const DOCKER_AUTH_CONFIG: &'static str = "DOCKER_AUTH_CONFIG";
    /// docker: the directory of `config.json`.
    pub const DOCKER_CONFIG: &'static str = "DOCKER_CONFIG";
    /// Set in GitHub Actions jobs.
    pub const GITHUB_ACTIONS: &'static str = "GITHUB_ACTIONS";
    /// Set in GitLab CI jobs.
    pub const GITLAB_CI: &'static str = "GITLAB_CI";
    /// git: how many `GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` pairs follow.
    pub const GIT_CONFIG_COUNT: &'static str = "GIT_CONFIG_COUNT";
    /// git: skip the system config.
    pub const GIT_CONFIG_NOSYSTEM: &'static str = "GIT_CONFIG_NOSYSTEM";
    /// OpenBao's CLI: the server's address; it sets this and `VAULT_ADDR` for its token helper.
    pub const BAO_ADDR: &'static str = "BAO_ADDR";
    /// OpenBao's CLI: an agent it talks to instead of `BAO_ADDR`.
    pub const BAO_AGENT_ADDR: &'static str = "BAO_AGENT_ADDR";
    /// OpenBao's CLI: its config file (`token_helper`), else `~/.bao`.
    pub const BAO_CONFIG_PATH: &'static str = "BAO_CONFIG_PATH";
    /// kubectl: the kubeconfig files, `:`-separated.
    pub const KUBECONFIG: &'static str = "KUBECONFIG";
    /// Where programs are found (the shims find the real tool on it).
    pub const PATH: &'static str = "PATH";
    /// gem: the default gem host.
    pub const RUBYGEMS_HOST: &'static str = "RUBYGEMS_HOST";
    /// Terraform: the CLI config file.
    pub const TF_CLI_CONFIG_FILE: &'static str = "TF_CLI_CONFIG_FILE";
    /// twine: the repository name in `.pypirc`.
    pub const TWINE_REPOSITORY: &'static str = "TWINE_REPOSITORY";
    /// twine: the upload URL.
    pub const TWINE_REPOSITORY_URL: &'static str = "TWINE_REPOSITORY_URL";
    /// Vault's CLI: the server's address; its token helper inherits it, not `-address`.
    pub const VAULT_ADDR: &'static str = "VAULT_ADDR";
    /// Vault's CLI: an agent it talks to instead of `VAULT_ADDR`.
    pub const VAULT_AGENT_ADDR: &'static str = "VAULT_AGENT_ADDR";
    /// Vault's CLI (and OpenBao's): its config file (`token_helper`), else `~/.vault`.
    pub const VAULT_CONFIG_PATH: &'static str = "VAULT_CONFIG_PATH";
    /// A Wayland display: `mayfly login` may open a browser with `xdg-open`.
    pub const WAYLAND_DISPLAY: &'static str = "WAYLAND_DISPLAY";
    /// XDG data directory.
    pub const XDG_DATA_HOME: &'static str = "XDG_DATA_HOME";
    /// yarn berry: the default registry.
    pub const YARN_NPM_REGISTRY_SERVER: &'static str = "YARN_NPM_REGISTRY_SERVER";
}

/// A snapshot of the environment. Binaries take it once in `main`; tests build their own.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment (variables that are not UTF-8 are left out).
    pub fn from_os() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// This environment with `pairs` set, replacing any variables of the same names.
    pub fn with(&self, pairs: &[(&str, &str)]) -> Self {
        let mut vars = self.vars.clone();
        vars.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Self { vars }
    }

    /// An environment made of the given pairs only.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// A variable's value; an empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every variable, for lookups whose names are not exact (npm's are case-insensitive).
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A path-valued variable.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    fn home(&self) -> Option<PathBuf> {
        self.path(EnvVars::HOME).or_else(dirs::home_dir)
    }

    fn xdg(&self, var: &str, fallback: &str) -> Option<PathBuf> {
        self.path(var).filter(|p| p.is_absolute()).or_else(|| Some(self.home()?.join(fallback)))
    }

    /// `$XDG_CONFIG_HOME/mayfly`.
    pub fn config_dir(&self) -> Option<PathBuf> {
        Some(self.xdg(EnvVars::XDG_CONFIG_HOME, ".config")?.join("mayfly"))
    }

    /// `$XDG_CACHE_HOME/mayfly`.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        Some(self.xdg(EnvVars::XDG_CACHE_HOME, ".cache")?.join("mayfly"))
    }

    /// `$XDG_STATE_HOME/mayfly`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        Some(self.xdg(EnvVars::XDG_STATE_HOME, ".local/state")?.join("mayfly"))
    }
}
