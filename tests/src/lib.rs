//! Test support: a whole mayfly stack on loopback, isolated per test.
//!
//! Each [`Stack`] has its own development OIDC issuer, a real `mayfly-sts` process, a
//! token-checking git server over HTTPS with its own CA, and a private HOME, TMPDIR,
//! cache and memory-backed key directory. The real `git` drives the real
//! `git-credential-mayfly`.
#![forbid(unsafe_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mayfly_devstack::{CargoRegistry, DevCa, DevIssuer, GitServer, KubeApiServer, ModuleRegistry, StsClient};
use serde_json::{Value, json};

pub use mayfly_sts::Algorithm;

pub mod verdaccio;

/// A built binary of this workspace: from `$MAYFLY_BIN_DIR` when set (the benchmark
/// measures installed binaries), else from the target directory, where
/// `cargo build --workspace` puts them.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("MAYFLY_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent().and_then(Path::parent).expect("target directory").to_owned()
        }
    };
    let path = dir.join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace` before `cargo test`", path.display());
    path
}

/// True when a tool is installed. Missing under `CI=true` is a failure; on a developer's
/// machine the test is skipped with a loud message.
pub fn require_tool(name: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "`{name}` is required in CI but is not installed");
        eprintln!("\n!!!!! SKIPPED: `{name}` is not installed; this test needs it !!!!!\n");
    }
    found
}

/// Options for a stack.
#[derive(Clone)]
pub struct Options {
    /// Lifetime of the development issuer's ID tokens.
    pub subject_lifetime: i64,
    /// Longest lifetime `mayfly-sts` grants.
    pub max_ttl: &'static str,
    /// Signature algorithm of the development issuer.
    pub issuer_algorithm: Algorithm,
}

impl Default for Options {
    fn default() -> Self {
        Self { subject_lifetime: 300, max_ttl: "10m", issuer_algorithm: Algorithm::Es256 }
    }
}

/// A running `mayfly-sts`.
pub struct StsProcess {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its audit log.
    pub audit: PathBuf,
    /// The introspection client the resource servers use (its secret is new per stack).
    pub client: StsClient,
}

impl Drop for StsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A whole stack on loopback.
pub struct Stack {
    /// Root of every file this stack writes (home/, tmp/, work/, srv/, tls/).
    pub dir: tempfile::TempDir,
    /// Memory-backed directory for the cache key.
    pub runtime_dir: tempfile::TempDir,
    /// The private HOME.
    pub home: PathBuf,
    /// Where tests run git.
    pub work: PathBuf,
    /// The test CA.
    pub ca: DevCa,
    /// The development issuer.
    pub issuer: DevIssuer,
    /// The git server.
    pub git: GitServer,
    /// The Kubernetes API server.
    pub kube: KubeApiServer,
    /// The Terraform module registry.
    pub registry: ModuleRegistry,
    /// The cargo registry.
    pub cargo: CargoRegistry,
    /// The port reserved for an OCI registry (the exchange already has rules for it).
    pub oci_port: u16,
    /// The exchange.
    pub sts: StsProcess,
    // Last, so the servers stop after everything that uses them.
    _runtime: tokio::runtime::Runtime,
}

impl Stack {
    /// A stack with default options, repositories `org/app` and `org/docs`, and the client
    /// config from [`Stack::default_routes`].
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    /// A stack with options.
    pub fn with(options: Options) -> Self {
        let runtime = mayfly_devstack::runtime().expect("runtime");
        let dir = tempfile::Builder::new().prefix("mayfly-e2e-").tempdir().expect("temp dir");
        let runtime_dir = tempfile::Builder::new()
            .prefix("mayfly-e2e-")
            .tempdir_in("/dev/shm")
            .expect("/dev/shm is needed for the cache key");
        let [home, work, srv, tls, tmp] = ["home", "work", "srv", "tls", "tmp"].map(|d| {
            let path = dir.path().join(d);
            std::fs::create_dir_all(&path).expect("mkdir");
            path
        });
        let _ = tmp;
        let ca = DevCa::create(&tls).expect("test CA");
        let claims = json!({
            "sub": "repo:org/app:ref:refs/heads/main",
            "repository": "org/app",
            "repository_owner": "org",
            "ref": "refs/heads/main",
        });
        let issuer =
            DevIssuer::start(&runtime, options.issuer_algorithm, claims, options.subject_lifetime).expect("issuer");
        let port = free_port();
        let sts_url = format!("https://127.0.0.1:{port}");
        let client = StsClient::generate(&sts_url, "mayfly-devstack");
        let git = GitServer::start(&runtime, srv, &ca, &client).expect("git server");
        let kube = KubeApiServer::start(&runtime, &ca, &client).expect("kube API server");
        let registry =
            ModuleRegistry::start(&runtime, &ca, &client, &dir.path().join("registry")).expect("module registry");
        let cargo = CargoRegistry::start(&runtime, &ca, &client).expect("cargo registry");
        let oci_port = free_port();
        let servers = Servers {
            git: &git.base_url,
            kube: &kube.base_url,
            registry: &registry.base_url,
            cargo: &cargo.base_url,
            oci: &format!("127.0.0.1:{oci_port}"),
        };
        let sts = start_sts(dir.path(), port, client, &issuer, &servers, &ca, options.max_ttl);
        git.create_repo("org/app.git").expect("repo");
        git.create_repo("org/docs.git").expect("repo");
        let stack = Self {
            dir,
            runtime_dir,
            home,
            work,
            ca,
            issuer,
            git,
            kube,
            registry,
            cargo,
            oci_port,
            sts,
            _runtime: runtime,
        };
        stack.write_config(&stack.default_routes());
        stack.wire_git();
        stack
    }

    /// The runtime the in-process servers run on (to start more of them).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self._runtime
    }

    /// `host:port` of the git server.
    pub fn git_host(&self) -> String {
        self.git.base_url.trim_start_matches("https://").to_owned()
    }

    /// A route block for the git server.
    pub fn route(&self, path: &str, operations: &[&str], identity: &str) -> String {
        let ops = operations.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "[[routes]]\ntool = \"git\"\nhost = \"{}\"\npath = \"{path}\"\nidentity = \"{identity}\"\nexchange = \"sts\"\noperations = [{ops}]\n",
            self.git_host()
        )
    }

    /// A route for a host-level tool (`kubectl`, `terraform`) to one of the servers.
    pub fn host_route(&self, tool: &str, base_url: &str) -> String {
        let host = base_url.trim_start_matches("https://");
        format!("[[routes]]\ntool = \"{tool}\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"sts\"\n")
    }

    /// `org/app` read and write, `org/docs` read only, the cluster, the module registry
    /// and the cargo registry (read and publish), all from the GitHub-style identity.
    pub fn default_routes(&self) -> String {
        [
            self.route("org/app", &["read", "write"], "ci"),
            self.route("org/docs", &["read"], "ci"),
            self.host_route("kubectl", &self.kube.base_url),
            self.host_route("terraform", &self.registry.base_url),
            format!(
                "[[routes]]\ntool = \"cargo\"\nprotocol = \"http\"\nhost = \"{}\"\nidentity = \"ci\"\nexchange = \"sts\"\noperations = [\"read\", \"publish\"]\n",
                self.cargo.base_url.trim_start_matches("http://")
            ),
        ]
        .join("\n")
    }

    /// Writes the client config with these routes (and the standard identities and exchange).
    pub fn write_config(&self, routes: &str) {
        let config = format!(
            "[settings]\nrefresh_margin = \"60s\"\n\n[identities.ci]\nkind = \"github-actions\"\naudience = \"mayfly-sts\"\n\n[identities.given]\nkind = \"env\"\nvar = \"MAYFLY_TEST_SUBJECT\"\n\n[exchanges.sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"{sts}/token\"\nrevocation_endpoint = \"{sts}/revoke\"\nca_file = \"{ca}\"\ntimeout = \"5s\"\n\n{routes}",
            sts = self.sts.url,
            ca = self.ca.ca_cert.display()
        );
        let dir = self.home.join(".config/mayfly");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.toml"), config).expect("write config");
    }

    fn wire_git(&self) {
        let url = &self.git.base_url;
        let helper = bin("git-credential-mayfly").display().to_string();
        for (key, value) in [
            ("user.name", "mayfly test"),
            ("user.email", "test@mayfly.invalid"),
            ("init.defaultBranch", "main"),
            (&format!("credential.{url}.helper"), ""),
            (&format!("credential.{url}.helper"), &helper),
            (&format!("credential.{url}.useHttpPath"), "true"),
        ] {
            let out =
                self.git_cmd(&self.work, &["config", "--global", "--add", key, value]).output().expect("git config");
            assert!(out.status.success(), "git config failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// The isolated environment every client process gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), path(self.home.clone())),
            ("TMPDIR".into(), path(self.dir.path().join("tmp"))),
            ("XDG_CONFIG_HOME".into(), path(self.home.join(".config"))),
            ("XDG_CACHE_HOME".into(), path(self.home.join(".cache"))),
            ("XDG_STATE_HOME".into(), path(self.home.join(".local/state"))),
            ("MAYFLY_RUNTIME_DIR".into(), path(self.runtime_dir.path().join("rt"))),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_SSL_CAINFO".into(), path(self.ca.ca_cert.clone())),
            ("ACTIONS_ID_TOKEN_REQUEST_URL".into(), self.issuer.request_url()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(), self.issuer.request_token().into()),
        ]
    }

    /// A `git` command in `dir` with the isolated environment.
    pub fn git_cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("git");
        command.args(args).current_dir(dir).env_clear().envs(self.env()).stdin(Stdio::null());
        command
    }

    /// Runs git and returns its output.
    pub fn git(&self, dir: &Path, args: &[&str]) -> Output {
        self.git_cmd(dir, args).output().expect("git runs")
    }

    /// Runs git and fails the test, with git's stderr, if it fails.
    pub fn git_ok(&self, dir: &Path, args: &[&str]) -> Output {
        let out = self.git(dir, args);
        assert!(out.status.success(), "git {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Commits a new file in a work tree, ready to push.
    pub fn commit_file(&self, tree: &Path, name: &str) {
        std::fs::write(tree.join(name), format!("{name}\n")).expect("write file");
        self.git_ok(tree, &["add", name]);
        self.git_ok(tree, &["commit", "-qm", name]);
    }

    /// The URL of a repository on the git server.
    pub fn repo_url(&self, path: &str) -> String {
        format!("{}/{path}", self.git.base_url)
    }

    /// An HTTP client that trusts the stack's CA.
    pub fn https_client(&self) -> reqwest::blocking::Client {
        let pem = std::fs::read(&self.ca.ca_cert).expect("CA certificate");
        reqwest::blocking::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).expect("CA certificate"))
            .no_proxy()
            .build()
            .expect("HTTP client")
    }

    /// What `git-credential-mayfly get` answers for a repository (legacy form, so the
    /// token is the `password`), as git would ask for it.
    pub fn helper_token(&self, path: &str) -> String {
        let request = format!("protocol=https\nhost={}\npath={path}\n", self.git_host());
        let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
            .arg("get")
            .env_clear()
            .envs(self.env())
            .write_stdin(request)
            .output()
            .expect("the helper runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let answer = String::from_utf8(out.stdout).expect("UTF-8 answer");
        answer.lines().find_map(|l| l.strip_prefix("password=")).expect("a password").to_owned()
    }

    /// The helper's audit lines.
    pub fn client_audit(&self) -> Vec<Value> {
        read_json_lines(&self.home.join(".local/state/mayfly/audit.jsonl"))
    }

    /// The exchange's audit lines.
    pub fn sts_audit(&self) -> Vec<Value> {
        read_json_lines(&self.sts.audit)
    }

    /// How many tokens the exchange minted.
    pub fn sts_issued(&self) -> usize {
        self.sts_audit().iter().filter(|l| l["outcome"] == "issued").count()
    }

    /// Fails the test if any file this stack wrote holds JWT-shaped bytes.
    pub fn assert_no_tokens_on_disk(&self) {
        let (_, mut leaks) = mayfly_core::scan_for_jwts(self.dir.path());
        leaks.extend(mayfly_core::scan_for_jwts(self.runtime_dir.path()).1);
        assert!(leaks.is_empty(), "token-shaped bytes on disk in: {leaks:?}");
    }
}

impl Default for Stack {
    fn default() -> Self {
        Self::new()
    }
}

/// The resource servers the exchange mints for.
struct Servers<'a> {
    git: &'a str,
    kube: &'a str,
    registry: &'a str,
    cargo: &'a str,
    oci: &'a str,
}

fn start_sts(
    dir: &Path,
    port: u16,
    client: StsClient,
    issuer: &DevIssuer,
    servers: &Servers<'_>,
    ca: &DevCa,
    max_ttl: &str,
) -> StsProcess {
    let audit = dir.join("sts-audit.jsonl");
    let url = client.issuer.clone();
    let config = format!(
        r#"issuer = "{url}"
listen = "127.0.0.1:{port}"
audit_log = "{audit}"
revocation_store = "{store}"
max_ttl = "{max_ttl}"

[tls]
cert = "{cert}"
key = "{key}"

[[trusted_issuers]]
issuer = "{issuer}"
audiences = ["mayfly-sts"]

[[rules]]
name = "org/app reads and pushes itself"
issuer = "{issuer}"
claims = {{ repository = "org/app", ref = "refs/heads/main" }}
audiences = ["{git_url}"]
scopes = ["repo:{{repository}}:read", "repo:{{repository}}:write"]

[[rules]]
name = "the org reads docs"
issuer = "{issuer}"
claims = {{ repository_owner = "org" }}
audiences = ["{git_url}"]
scopes = ["repo:org/docs:read"]

[[rules]]
name = "org/app reaches the cluster"
issuer = "{issuer}"
claims = {{ repository = "org/app" }}
audiences = ["{kube_url}"]
scopes = ["cluster:{kube_host}"]

[[rules]]
name = "the org reads modules"
issuer = "{issuer}"
claims = {{ repository_owner = "org" }}
audiences = ["{registry_url}"]
scopes = ["registry:{registry_host}"]

[[rules]]
name = "the org reads crates"
issuer = "{issuer}"
claims = {{ repository_owner = "org" }}
audiences = ["{cargo_url}"]
scopes = ["crate:*:read"]

[[rules]]
name = "org/app publishes mayfly-hello"
issuer = "{issuer}"
claims = {{ repository = "org/app" }}
audiences = ["{cargo_url}"]
scopes = ["crate:mayfly-hello:publish"]

[[rules]]
name = "org/app pulls and pushes test/*"
issuer = "{issuer}"
claims = {{ repository = "org/app" }}
audiences = ["{oci}"]
scopes = ["oci:{oci}/test/*:read", "oci:{oci}/test/*:write"]

{introspection_client}"#,
        oci = servers.oci,
        cargo_url = servers.cargo,
        git_url = servers.git,
        kube_url = servers.kube,
        kube_host = servers.kube.trim_start_matches("https://"),
        registry_url = servers.registry,
        registry_host = servers.registry.trim_start_matches("https://"),
        audit = audit.display(),
        store = dir.join("sts-revocations.redb").display(),
        introspection_client = client.config_entry(),
        cert = ca.cert.display(),
        key = ca.key.display(),
        issuer = issuer.issuer(),
    );
    let child = spawn_sts(dir, "sts", port, &config);
    StsProcess { child, url, audit, client }
}

/// Starts `mayfly-sts` with this config (written to `DIR/NAME.toml`, its stderr to
/// `DIR/NAME.log`) and waits until it listens on `port`.
pub fn spawn_sts(dir: &Path, name: &str, port: u16, config: &str) -> Child {
    let path = dir.join(format!("{name}.toml"));
    let log_path = dir.join(format!("{name}.log"));
    std::fs::write(&path, config).expect("write sts config");
    let mut child = Command::new(bin("mayfly-sts"))
        .arg("--config")
        .arg(&path)
        .env_remove("MAYFLY_STS_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("sts log"))
        .spawn()
        .expect("mayfly-sts starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("mayfly-sts did not start: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A token from an exchange's `POST /token` (RFC 8693) for an ID token of `issuer`.
pub fn exchange_token(
    client: &reqwest::blocking::Client,
    sts_url: &str,
    issuer: &DevIssuer,
    audience: &str,
    scope: &str,
) -> String {
    let (status, body) = post_exchange(client, sts_url, issuer, audience, scope);
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("an access token").to_owned()
}

/// Posts one token exchange for an ID token of `issuer`: the status and the JSON answer.
pub fn post_exchange(
    client: &reqwest::blocking::Client,
    sts_url: &str,
    issuer: &DevIssuer,
    audience: &str,
    scope: &str,
) -> (u16, Value) {
    let subject = issuer.mint("mayfly-sts", &Value::Null);
    let form = [
        ("grant_type", mayfly_core::TOKEN_EXCHANGE_GRANT),
        ("subject_token", &subject),
        ("subject_token_type", mayfly_core::ID_TOKEN_TYPE),
        ("audience", audience),
        ("scope", scope),
    ];
    let response = client.post(format!("{sts_url}/token")).form(&form).send().expect("the exchange answers");
    let status = response.status().as_u16();
    (status, response.json().expect("a JSON answer"))
}

/// A port that was free a moment ago, for a server that must be told its port before it
/// starts (`mayfly-sts`, verdaccio, the registry).
///
/// Ports are picked below the kernel's ephemeral range, so no server that binds port 0
/// meanwhile can take one, and never twice in one test process, so two tests cannot be
/// handed the same one.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 12_000)
        .unwrap_or(32_768);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let random = RandomState::new();
    for attempt in 0u64..10_000 {
        let port = 10_000 + u16::try_from(random.hash_one(attempt) % u64::from(low - 10_000)).unwrap_or(0);
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range")
}

/// Parses a JSON-lines file (missing file: no lines).
pub fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// Lines of a byte buffer that start with `mayfly:`.
pub fn mayfly_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr).lines().filter(|l| l.starts_with("mayfly:")).map(str::to_owned).collect()
}
