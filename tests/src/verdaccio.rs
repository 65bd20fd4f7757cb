//! A real npm registry (verdaccio) on loopback that lets in only tokens minted by mayfly.
//!
//! Verdaccio and its plugin live in `tests/support/verdaccio` (installed by `.ci/run` with
//! `npm ci --prefix tests/support/verdaccio`). The plugin verifies `mayfly-sts` tokens
//! against the exchange's JWKS, asks its introspection endpoint whether they are revoked,
//! and authorises from their `npm:*:read` / `npm:NAME:read` / `npm:NAME:publish` scopes. It
//! also serves npm's trusted-publishing exchange for a configured repository -> package map.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// How long verdaccio may take to answer (it takes about 3 s on an idle machine; the tests
/// run many servers at once on two cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/support/verdaccio` in this repository.
pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/verdaccio")
}

fn entry_point() -> PathBuf {
    support_dir().join("node_modules/verdaccio/bin/verdaccio")
}

/// True when node and the installed verdaccio are there. Missing under `CI=true` is a
/// failure; on a developer's machine the test is skipped with a loud message.
pub fn require_verdaccio() -> bool {
    if !crate::require_tool("node") || !crate::require_tool("npm") {
        return false;
    }
    if entry_point().is_file() {
        return true;
    }
    let install = "npm ci --prefix tests/support/verdaccio";
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "verdaccio is required in CI but is not installed: run `{install}`"
    );
    eprintln!("\n!!!!! SKIPPED: verdaccio is not installed; run `{install}` to run this test !!!!!\n");
    false
}

/// A running verdaccio, stopped on drop.
pub struct Verdaccio {
    /// `http://127.0.0.1:PORT`, also the audience its tokens must carry.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    child: Child,
    dir: PathBuf,
}

impl Verdaccio {
    /// Starts verdaccio with its config and storage in `dir`, trusting tokens minted by the
    /// exchange at `sts_url` (served with a certificate from `ca_file`), checking each with
    /// the exchange's introspection endpoint as `introspection` = (client id, secret) when
    /// given, and handing out trusted-publishing tokens for ID tokens from `issuer_url`
    /// whose `repository` claim is paired with the package in `trusted_publishers`.
    ///
    /// Call [`require_verdaccio`] first: this panics when verdaccio is not installed.
    pub fn start(
        dir: &Path,
        sts_url: &str,
        ca_file: &Path,
        issuer_url: &str,
        introspection: Option<(&str, &str)>,
        trusted_publishers: &[(&str, &str)],
    ) -> Self {
        Self::launch(dir, sts_url, ca_file, issuer_url, introspection, trusted_publishers, None)
    }

    /// [`Verdaccio::start`] serving HTTPS with this certificate and key (issued by the CA in
    /// `ca_file`): pnpm 11 and later send credentials over HTTPS only. No introspection,
    /// no trusted publishing.
    pub fn start_https(dir: &Path, sts_url: &str, ca_file: &Path, issuer_url: &str, cert: &Path, key: &Path) -> Self {
        Self::launch(dir, sts_url, ca_file, issuer_url, None, &[], Some((cert, key)))
    }

    fn launch(
        dir: &Path,
        sts_url: &str,
        ca_file: &Path,
        issuer_url: &str,
        introspection: Option<(&str, &str)>,
        trusted_publishers: &[(&str, &str)],
        tls: Option<(&Path, &Path)>,
    ) -> Self {
        assert!(entry_point().is_file(), "verdaccio is not installed: run `npm ci --prefix tests/support/verdaccio`");
        std::fs::create_dir_all(dir).expect("mkdir");
        let port = crate::free_port();
        let host = format!("127.0.0.1:{port}");
        let url = format!("{}://{host}", if tls.is_some() { "https" } else { "http" });
        let https = tls.map_or_else(String::new, |(cert, key)| {
            format!("https:\n  cert: {}\n  key: {}\n", q(&cert.display().to_string()), q(&key.display().to_string()))
        });
        let (client_id, client_secret) = introspection.unwrap_or(("", ""));
        let publishers = trusted_publishers
            .iter()
            .map(|(repository, package)| {
                format!("      - {{ repository: {}, package: {} }}\n", q(repository), q(package))
            })
            .collect::<String>();
        // JSON strings are YAML double-quoted scalars, so every value is quoted safely.
        let config = format!(
            r#"storage: {storage}
plugins: {plugins}
listen: {listen}
{https}web:
  enable: false
uplinks: {{}}
auth:
  mayfly:
    sts_url: {sts_url}
    sts_ca_file: {ca_file}
    audience: {url_q}
    introspection_client_id: {client_id}
    introspection_client_secret: {client_secret}
middlewares:
  mayfly:
    issuer_url: {issuer_url}
    # npm asks for `npm:<registry hostname>`, without the port.
    oidc_audience: "npm:127.0.0.1"
    trusted_publishers:
{publishers}
# The plugin decides; these only keep verdaccio's own fallback closed.
packages:
  '**':
    access: $authenticated
    publish: $authenticated
    unpublish: $authenticated
log:
  type: stdout
  format: pretty
  level: http
"#,
            storage = q(&dir.join("storage").display().to_string()),
            plugins = q(&support_dir().join("plugins").display().to_string()),
            listen = q(&url),
            sts_url = q(sts_url),
            ca_file = q(&ca_file.display().to_string()),
            url_q = q(&url),
            client_id = q(client_id),
            client_secret = q(client_secret),
            issuer_url = q(issuer_url),
            publishers = if publishers.is_empty() { "      []\n".to_owned() } else { publishers },
        );
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).expect("write verdaccio config");
        let log = dir.join("verdaccio.log");
        let out = std::fs::File::create(&log).expect("verdaccio log");
        let err = out.try_clone().expect("verdaccio log");
        let child = Command::new("node")
            .arg(entry_point())
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir)
            .env("NODE_ENV", "production")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("node starts");
        let mut verdaccio = Self { url, host, log, child, dir: dir.to_owned() };
        verdaccio.wait_until_ready(ca_file);
        verdaccio
    }

    /// The directory holding its config, storage and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_until_ready(&mut self, ca_file: &Path) {
        let ca = std::fs::read(ca_file).expect("CA file");
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("CA certificate"))
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let ping = format!("{}/-/ping", self.url);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if client.get(&ping).send().is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("verdaccio exited ({status}) before answering:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "verdaccio did not answer within {START_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Verdaccio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A YAML double-quoted scalar.
fn q(value: &str) -> String {
    json!(value).to_string()
}

/// `tests/support/npm-clients`: the package managers the shim tests drive, pinned by its
/// lockfile (installed by `.ci/run` with `npm ci --prefix tests/support/npm-clients`).
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/npm-clients")
}

/// The entry point of one installed client: `pnpm-9`, `pnpm-10`, `pnpm-12`, `yarn-1` or
/// `yarn-4` (the names in `tests/support/npm-clients/package.json`).
pub fn npm_client(name: &str) -> PathBuf {
    let file = match name {
        "pnpm-12" => "pnpm",
        n if n.starts_with("pnpm") => "bin/pnpm.cjs",
        _ => "bin/yarn.js",
    };
    clients_dir().join("node_modules").join(name).join(file)
}

/// True when verdaccio and this client are installed. Missing under `CI=true` is a
/// failure; on a developer's machine the test is skipped with a loud message.
pub fn require_npm_client(name: &str) -> bool {
    if !require_verdaccio() {
        return false;
    }
    if npm_client(name).is_file() {
        return true;
    }
    let install = "npm ci --prefix tests/support/npm-clients";
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "`{name}` is required in CI but is not installed: run `{install}`"
    );
    eprintln!("\n!!!!! SKIPPED: `{name}` is not installed; run `{install}` to run this test !!!!!\n");
    false
}
