//! The shims with the real npm, pnpm 9, 10 and 12, classic yarn and yarn berry, inside
//! `mayfly exec`, against a verdaccio over HTTPS that lets in only tokens from `mayfly-sts`.
//!
//! Each client publishes and installs with the registry named in each place it reads it
//! from. Every package's lifecycle scripts (`tests/support/lifecycle/spy.js`) read their own
//! environment, `/proc/<pid>/environ` of every ancestor and of every process they can read,
//! and write it all down; the test looks there for every token the shim minted (by the
//! fingerprints in the audit log) and checks that the scripts ran.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use mayfly_tests::verdaccio::{Verdaccio, npm_client, require_npm_client};
use mayfly_tests::{Stack, bin};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Npm,
    Pnpm9,
    Pnpm10,
    Pnpm12,
    Yarn1,
    Yarn4,
}

impl Client {
    /// The command name (and shim).
    fn tool(self) -> &'static str {
        match self {
            Self::Npm => "npm",
            Self::Pnpm9 | Self::Pnpm10 | Self::Pnpm12 => "pnpm",
            Self::Yarn1 | Self::Yarn4 => "yarn",
        }
    }

    /// The package in `tests/support/npm-clients`; npm is the one on PATH.
    fn package(self) -> Option<&'static str> {
        match self {
            Self::Npm => None,
            Self::Pnpm9 => Some("pnpm-9"),
            Self::Pnpm10 => Some("pnpm-10"),
            Self::Pnpm12 => Some("pnpm-12"),
            Self::Yarn1 => Some("yarn-1"),
            Self::Yarn4 => Some("yarn-4"),
        }
    }

    fn installed(self) -> bool {
        match self.package() {
            None => mayfly_tests::verdaccio::require_verdaccio(),
            Some(package) => require_npm_client(package),
        }
    }

    fn publish(self) -> &'static [&'static str] {
        if self == Self::Yarn4 { &["npm", "publish"] } else { &["publish"] }
    }

    /// Scripts each client's publish runs (with the shim: before the token exists).
    fn publish_scripts(self) -> &'static [&'static str] {
        match self {
            // berry runs `prepublish` before packing, and no `prepare`.
            Self::Yarn4 => &["prepack", "postpack"],
            _ => &["prepublishOnly", "prepack", "prepare", "postpack"],
        }
    }

    /// The project's own scripts each client's install runs (with the shim: after the
    /// process that held the token has exited).
    fn project_install_scripts(self) -> &'static [&'static str] {
        match self {
            Self::Yarn4 => &["preinstall", "install", "postinstall"],
            _ => &["preinstall", "install", "postinstall", "prepare"],
        }
    }
}

/// Where a test names the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// `--registry URL`.
    Flag,
    /// `npm_config_registry` (berry: `YARN_NPM_REGISTRY_SERVER`).
    Env,
    /// `registry=` in the project's `.npmrc`.
    Npmrc,
    /// `@org:registry=` in the project's `.npmrc`, for a scoped package.
    NpmrcScope,
    /// `registry "URL"` in the project's `.yarnrc` (classic yarn).
    Yarnrc,
    /// `npmRegistryServer` in the project's `.yarnrc.yml` (berry).
    YarnrcYml,
    /// `npmScopes.org.npmRegistryServer` in `.yarnrc.yml`, for a scoped package.
    YarnrcYmlScope,
    /// `publishConfig.registry` when publishing; the user's `.npmrc` (berry: the project's
    /// `.yarnrc.yml`) when installing.
    PublishConfig,
}

impl Place {
    fn for_client(client: Client) -> &'static [Self] {
        match client {
            Client::Yarn1 => &[Self::Npmrc, Self::Flag, Self::Env, Self::Yarnrc, Self::PublishConfig],
            Client::Yarn4 => &[Self::YarnrcYml, Self::YarnrcYmlScope, Self::Env, Self::PublishConfig],
            _ => &[Self::Npmrc, Self::Flag, Self::Env, Self::NpmrcScope, Self::PublishConfig],
        }
    }

    fn scoped(self) -> bool {
        matches!(self, Self::NpmrcScope | Self::YarnrcYmlScope)
    }
}

/// A verdaccio over HTTPS that lets in only tokens of its own `mayfly-sts`, and that
/// exchange (minting npm read and publish scopes for `org/app`): the registry, the
/// exchange's process and its URL.
pub(super) fn verdaccio_and_its_exchange(stack: &Stack) -> (Verdaccio, Child, String) {
    let root = stack.dir.path();
    let (listener, sts_url) = mayfly_tests::https_listener();
    let verdaccio = Verdaccio::start_https(
        &root.join("verdaccio"),
        &sts_url,
        &stack.ca.ca_cert,
        stack.issuer.issuer(),
        &stack.ca.cert,
        &stack.ca.key,
    );
    let config = mayfly_sts::ConfigFile {
        issuer: sts_url.clone(),
        audit_log: Some(root.join("npm-sts-audit.jsonl")),
        max_ttl: Some("10m".into()),
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        rules: vec![mayfly_sts::RuleEntry {
            name: Some("org/app reads and publishes npm packages".into()),
            issuer: stack.issuer.issuer().into(),
            claims: [("repository".to_owned(), "org/app".to_owned())].into(),
            audiences: vec![verdaccio.url.clone()],
            scopes: vec!["npm:*:read".into(), "npm:*:publish".into()],
            max_ttl: None,
        }],
        ..Default::default()
    };
    let sts = mayfly_tests::spawn_sts_on(root, "npm-sts", listener, &config);
    (verdaccio, sts, sts_url)
}

/// A stack, an exchange that mints npm scopes for one verdaccio over HTTPS, a route to it,
/// and a client.
struct Registry {
    client: Client,
    stack: Stack,
    verdaccio: Verdaccio,
    sts: Child,
    sts_url: String,
    /// The client's real entry point, linked as its tool name.
    real: PathBuf,
    /// Where the scripts write what they saw: outside the stack's directory, whose files
    /// must hold no token-shaped bytes, since they read every process's environment on the
    /// machine (other tests' too).
    spy: PathBuf,
    _spy_dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.sts.kill();
        let _ = self.sts.wait();
    }
}

impl Registry {
    fn start(client: Client) -> Self {
        let stack = Stack::new();
        let root = stack.dir.path().to_owned();
        let (verdaccio, sts, sts_url) = verdaccio_and_its_exchange(&stack);
        stack.write_config(&format!(
            "[exchanges.npm-sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"{sts_url}/token\"\nca_file = \"{ca}\"\n\n[[routes]]\ntool = \"npm\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"npm-sts\"\noperations = [\"read\", \"publish\"]\n",
            ca = stack.ca.ca_cert.display(),
            host = verdaccio.host,
        ));
        let real = root.join("real-bin");
        std::fs::create_dir_all(&real).unwrap();
        if let Some(package) = client.package() {
            std::os::unix::fs::symlink(npm_client(package), real.join(client.tool())).unwrap();
        }
        let spy_dir = tempfile::Builder::new().prefix("mayfly-spy-").tempdir().unwrap();
        let spy = spy_dir.path().join("seen");
        let registry = Self { client, spy, _spy_dir: spy_dir, stack, verdaccio, sts, sts_url, real };
        registry.write_user_config();
        registry
    }

    /// What the README asks each client's user to configure once: where the token comes
    /// from, for the clients that do not read npm's variable; and the test CA.
    fn write_user_config(&self) {
        let (host, ca) = (&self.verdaccio.host, self.stack.ca.ca_cert.display());
        let mut npmrc = format!("cafile={ca}\n");
        if matches!(self.client, Client::Pnpm9 | Client::Pnpm10 | Client::Yarn1) {
            npmrc += &format!("//{host}/:_authToken=${{MAYFLY_NPM_TOKEN}}\n//{host}/:always-auth=true\n");
        }
        std::fs::write(self.stack.home.join(".npmrc"), npmrc).unwrap();
        // Classic yarn takes `cafile` from the system's npmrc over the user's.
        std::fs::write(self.stack.home.join(".yarnrc"), format!("cafile \"{ca}\"\n")).unwrap();
        // berry: quarantines packages younger than a day and runs no dependency's scripts
        // unless told.
        let yarnrc = format!(
            "enableTelemetry: false\nenableScripts: true\nnpmMinimalAgeGate: 0\nhttpsCaFilePath: \"{ca}\"\nnpmRegistries:\n  \"//{host}\":\n    npmAlwaysAuth: true\n    npmAuthToken: \"${{MAYFLY_NPM_TOKEN:-}}\"\n"
        );
        std::fs::write(self.stack.home.join(".yarnrc.yml"), yarnrc).unwrap();
        std::fs::write(self.stack.dir.path().join("npmrc-global"), "").unwrap();
    }

    /// A package whose every lifecycle script is the spy, depending on `deps` (1.0.0).
    fn project(&self, dir_name: &str, name: &str, deps: &[&str], place: Place) -> PathBuf {
        let dir = self.stack.work.join(dir_name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(spy_script(), dir.join("spy.js")).unwrap();
        let events = [
            "preinstall",
            "install",
            "postinstall",
            "prepare",
            "prepublishOnly",
            "prepublish",
            "prepack",
            "postpack",
            "publish",
            "postpublish",
        ];
        let mut scripts: serde_json::Map<String, Value> =
            events.iter().map(|e| ((*e).to_owned(), json!("node spy.js"))).collect();
        scripts.insert("hello".into(), json!("node -e 0"));
        let dependencies: serde_json::Map<String, Value> =
            deps.iter().map(|d| ((*d).to_owned(), json!("1.0.0"))).collect();
        let mut manifest = json!({
            "name": name,
            "version": "1.0.0",
            "license": "MIT",
            "files": ["spy.js"],
            "scripts": scripts,
            "dependencies": dependencies,
            // pnpm 10 runs dependencies' scripts only when told.
            "pnpm": {"onlyBuiltDependencies": deps},
        });
        if place == Place::PublishConfig {
            manifest["publishConfig"] = json!({"registry": format!("{}/", self.verdaccio.url)});
        }
        std::fs::write(dir.join("package.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
        if self.client == Client::Pnpm12 {
            // pnpm 11 and later: the same, in the workspace file.
            let allow: String = deps.iter().map(|d| format!("  \"{d}\": true\n")).collect();
            let yaml = if allow.is_empty() { String::new() } else { format!("allowBuilds:\n{allow}") };
            std::fs::write(dir.join("pnpm-workspace.yaml"), yaml).unwrap();
        }
        if self.client == Client::Yarn4 {
            // A project of its own, not part of one above it.
            std::fs::write(dir.join("yarn.lock"), "").unwrap();
        }
        dir
    }

    /// Names the registry at `place` for a command in `dir`: extra arguments and variables.
    fn name_registry(&self, dir: &Path, place: Place, publishing: bool) -> (Vec<String>, Vec<(String, String)>) {
        let url = format!("{}/", self.verdaccio.url);
        let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();
        match place {
            Place::Flag => return (vec!["--registry".into(), url], Vec::new()),
            Place::Env if self.client == Client::Yarn4 => {
                return (Vec::new(), vec![("YARN_NPM_REGISTRY_SERVER".into(), self.verdaccio.url.clone())]);
            }
            // pnpm 11 and later read only their own variables.
            Place::Env if self.client == Client::Pnpm12 => {
                return (Vec::new(), vec![("pnpm_config_registry".into(), url)]);
            }
            Place::Env => return (Vec::new(), vec![("npm_config_registry".into(), url)]),
            Place::Npmrc => write(".npmrc", format!("registry={url}\n")),
            Place::NpmrcScope => write(".npmrc", format!("@org:registry={url}\n")),
            Place::Yarnrc => write(".yarnrc", format!("registry \"{url}\"\n")),
            Place::YarnrcYml => write(".yarnrc.yml", format!("npmRegistryServer: \"{}\"\n", self.verdaccio.url)),
            Place::YarnrcYmlScope => write(
                ".yarnrc.yml",
                format!(
                    "npmScopes:\n  org:\n    npmRegistryServer: \"{}\"\n    npmMinimalAgeGate: 0\n",
                    self.verdaccio.url
                ),
            ),
            Place::PublishConfig if publishing => {}
            Place::PublishConfig if self.client == Client::Yarn4 => {
                write(".yarnrc.yml", format!("npmRegistryServer: \"{}\"\n", self.verdaccio.url));
            }
            Place::PublishConfig => {
                let user = self.stack.home.join(".npmrc");
                let text = std::fs::read_to_string(&user).unwrap();
                if !text.contains("\nregistry=") {
                    std::fs::write(&user, format!("{text}registry={url}\n")).unwrap();
                }
            }
        }
        (Vec::new(), Vec::new())
    }

    /// `mayfly exec -- TOOL ARGS` in `dir`, the shims on PATH ahead of the client.
    fn run(&self, dir: &Path, args: &[String], vars: &[(String, String)]) -> Output {
        let mut command = Command::new(bin("mayfly"));
        command.args(["exec", "--session", "npm-clients", "--", self.client.tool()]).args(args);
        self.isolate(&mut command, dir).envs(vars.iter().cloned()).output().expect("mayfly exec runs")
    }

    /// The client's private HOME, caches, config and CA, and the spy's directory.
    fn isolate<'a>(&self, command: &'a mut Command, dir: &Path) -> &'a mut Command {
        let root = self.stack.dir.path();
        let path = format!("{}:{}", self.real.display(), std::env::var("PATH").unwrap_or_default());
        command
            .current_dir(dir)
            .env_clear()
            .envs(self.stack.env())
            .env("PATH", path)
            .env("MAYFLY_SPY_DIR", &self.spy)
            .env("NODE_EXTRA_CA_CERTS", &self.stack.ca.ca_cert)
            .env("npm_config_cache", root.join("npm-cache"))
            .env("npm_config_globalconfig", root.join("npmrc-global"))
            .env("npm_config_update_notifier", "false")
            .env("npm_config_audit", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_fetch_retries", "0")
            .stdin(std::process::Stdio::null())
    }

    /// The control: the client itself, without the shim, given a token the way the
    /// README's config reads it. Its dependency's scripts find the token, so the checks
    /// that pass through the shim can fail.
    fn without_the_shim_scripts_find_the_token(&self, dependency: &str) {
        let token = mayfly_tests::exchange_token(
            &self.stack.https_client(),
            &self.sts_url,
            &self.stack.issuer,
            &self.verdaccio.url,
            "npm:*:read",
        );
        let dir = self.project("control", "control", &[dependency], Place::Npmrc);
        self.name_registry(&dir, Place::Npmrc, false);
        let _ = std::fs::remove_dir_all(&self.spy);
        let mut command = Command::new(self.real.join(self.client.tool()));
        self.isolate(&mut command, &dir).arg("install").env("MAYFLY_NPM_TOKEN", &token);
        // The dependency was built before: pnpm would reuse that build and run no script.
        let out = command.env("npm_config_side_effects_cache", "false").output().unwrap();
        assert!(out.status.success(), "{:?} without the shim: {}", self.client, String::from_utf8_lossy(&out.stderr));
        let minted = BTreeSet::from([fingerprint(&token)]);
        let prefix = format!("{dependency}.postinstall.");
        let seen = std::fs::read_dir(&self.spy)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .expect("the dependency's postinstall ran");
        let line = found_in(&seen, &minted).expect("without the shim, a dependency's script finds the token");
        assert!(line.starts_with("self ") || line.starts_with("ancestor "), "in its environment or an ancestor's");
    }

    /// Runs a command that must succeed and whose scripts must have run (each of
    /// `scripts` is `(package, event)`) without seeing any token minted so far.
    fn step(&self, dir: &Path, args: &[String], vars: &[(String, String)], scripts: &[(&str, &str)]) {
        let _ = std::fs::remove_dir_all(&self.spy);
        let out = self.run(dir, args, vars);
        let what = format!("{:?}: {} {}", self.client, self.client.tool(), args.join(" "));
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}\n--- the spies' own failures ---\n{}--- build logs ---\n{}--- verdaccio ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.spy_errors(),
            build_logs(&out),
            self.verdaccio.log_text()
        );
        let minted = self.minted();
        assert!(!minted.is_empty(), "{what}: the shim minted no token");
        for output in [&out.stdout, &out.stderr] {
            assert!(found_in(&String::from_utf8_lossy(output), &minted).is_none(), "{what}: a token in the output");
        }
        for (package, event) in scripts {
            let prefix = format!("{}.{event}.", package.replace(['@', '/'], "_"));
            let file = std::fs::read_dir(&self.spy)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .unwrap_or_else(|| panic!("{what}: the {event} script of {package} did not run"));
            let seen = std::fs::read_to_string(file.path()).unwrap();
            assert!(seen.contains("\nself PATH="), "{what}: the spy read its environment");
            assert!(seen.contains("\nancestor "), "{what}: the spy read its ancestors");
        }
        for entry in std::fs::read_dir(&self.spy).into_iter().flatten().flatten() {
            let seen = std::fs::read_to_string(entry.path()).unwrap();
            if let Some(line) = found_in(&seen, &minted) {
                // The line names where the token was, not the token.
                let place: String = line.split('=').next().unwrap_or_default().to_owned();
                panic!("{what}: {} saw a minted token in `{place}=…`", entry.file_name().to_string_lossy());
            }
        }
    }

    /// What any spy that failed wrote about its failure.
    fn spy_errors(&self) -> String {
        let mut errors = String::new();
        for entry in std::fs::read_dir(&self.spy).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".error") {
                errors += &format!(
                    "{}: {}",
                    entry.file_name().to_string_lossy(),
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                );
            }
        }
        errors
    }

    /// Fingerprints of every token the shim handed out, from the audit log.
    fn minted(&self) -> BTreeSet<String> {
        self.stack.client_audit().iter().filter_map(|l| l["fingerprint"].as_str().map(str::to_owned)).collect()
    }

    /// Publishes a spy package and installs it into a spy project, naming the registry at
    /// `place` both times.
    fn publish_and_install(&self, place: Place, name: &str) {
        let client = self.client;
        let published = if place.scoped() { format!("@org/{name}") } else { name.to_owned() };
        let package = self.project(name, &published, &[], place);
        if client == Client::Yarn4 {
            // berry packs only an installed workspace.
            let (mut args, vars) = self.name_registry(&package, place, false);
            args.insert(0, "install".to_owned());
            let scripts: Vec<(&str, &str)> =
                client.project_install_scripts().iter().map(|e| (published.as_str(), *e)).collect();
            self.step(&package, &args, &vars, &scripts);
        }
        let (mut args, vars) = self.name_registry(&package, place, true);
        args.splice(0..0, client.publish().iter().map(|s| (*s).to_owned()));
        if place.scoped() && client != Client::Yarn1 {
            args.extend(["--access".to_owned(), "public".to_owned()]);
        }
        let scripts: Vec<(&str, &str)> = client.publish_scripts().iter().map(|e| (published.as_str(), *e)).collect();
        self.step(&package, &args, &vars, &scripts);

        let consumer_name = format!("{name}-consumer");
        let consumer = self.project(&consumer_name, &consumer_name, &[&published], place);
        let (mut args, vars) = self.name_registry(&consumer, place, false);
        args.insert(0, "install".to_owned());
        let mut scripts: Vec<(&str, &str)> =
            ["preinstall", "install", "postinstall"].iter().map(|e| (published.as_str(), *e)).collect();
        scripts.extend(client.project_install_scripts().iter().map(|e| (consumer_name.as_str(), *e)));
        self.step(&consumer, &args, &vars, &scripts);
        let installed = consumer.join("node_modules").join(&published).join("package.json");
        if client != Client::Yarn4 {
            assert!(installed.is_file(), "{client:?}: {published} was installed");
        }
    }

    /// The exchange issued read and publish tokens, all for this registry.
    fn assert_scopes(&self) {
        let audit = mayfly_tests::read_json_lines(&self.stack.dir.path().join("npm-sts-audit.jsonl"));
        let scopes: Vec<&str> =
            audit.iter().filter(|l| l["outcome"] == "issued").filter_map(|l| l["scope"].as_str()).collect();
        assert!(scopes.contains(&"npm:*:read"), "{scopes:?}");
        assert!(scopes.iter().any(|s| s.ends_with(":publish") && !s.contains('*')), "{scopes:?}");
        let _ = &self.sts_url;
    }
}

/// The build logs a client named in its output (yarn berry writes a failed build's output
/// to a temporary file and prints only its path), read before anything removes them.
fn build_logs(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut logs = String::new();
    let words = text.split_whitespace().map(|w| w.trim_end_matches([')', ',', '.', ';']));
    for word in words.filter(|w| w.starts_with('/') && w.ends_with(".log")) {
        if let Ok(log) = std::fs::read_to_string(word) {
            logs += &format!("{word}:\n{log}\n");
        }
    }
    logs
}

fn spy_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/lifecycle/spy.js")
}

fn fingerprint(value: &str) -> String {
    format!("sha256:{}", &hex::encode(Sha256::digest(value.as_bytes()))[..16])
}

/// The first line of `text` holding a value whose fingerprint is in `minted`: any run of
/// token characters, and every `NAME=VALUE` entry's value whole.
fn found_in<'a>(text: &'a str, minted: &BTreeSet<String>) -> Option<&'a str> {
    text.lines().find(|line| {
        let words = line.split(|c: char| !(c.is_ascii_alphanumeric() || "._-~+/".contains(c)));
        let value = line.split_once('=').map(|(_, v)| v);
        words.chain(value).any(|w| !w.is_empty() && minted.contains(&fingerprint(w)))
    })
}

fn client_installs_and_publishes_and_its_scripts_see_no_token(client: Client) {
    if !client.installed() {
        return;
    }
    let registry = Registry::start(client);
    for (i, place) in Place::for_client(client).iter().enumerate() {
        registry.publish_and_install(*place, &format!("spy-{i}"));
    }
    // The README's configuration does not break commands that get no token.
    let dir = registry.stack.work.join("spy-0-consumer");
    let out = registry.run(&dir, &["run".to_owned(), "hello".to_owned()], &[]);
    assert!(out.status.success(), "{client:?} run: {}", String::from_utf8_lossy(&out.stderr));
    registry.assert_scopes();
    registry.stack.assert_no_tokens_on_disk();
    if client == Client::Pnpm9 {
        registry.without_the_shim_scripts_find_the_token("spy-0");
    }
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio"),
    ignore = "needs node, npm, verdaccio: one is not installed"
)]
fn npm_installs_and_publishes_wherever_the_registry_is_named_and_scripts_see_no_token() {
    client_installs_and_publishes_and_its_scripts_see_no_token(Client::Npm);
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio", missing = "pnpm-9"),
    ignore = "needs node, npm, verdaccio, pnpm-9: one is not installed"
)]
fn pnpm_9_installs_and_publishes_wherever_the_registry_is_named_and_scripts_see_no_token() {
    client_installs_and_publishes_and_its_scripts_see_no_token(Client::Pnpm9);
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio", missing = "pnpm-10"),
    ignore = "needs node, npm, verdaccio, pnpm-10: one is not installed"
)]
fn pnpm_10_installs_and_publishes_wherever_the_registry_is_named_and_scripts_see_no_token() {
    client_installs_and_publishes_and_its_scripts_see_no_token(Client::Pnpm10);
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio", missing = "pnpm-12"),
    ignore = "needs node, npm, verdaccio, pnpm-12: one is not installed"
)]
fn pnpm_12_installs_and_publishes_wherever_the_registry_is_named_and_scripts_see_no_token() {
    client_installs_and_publishes_and_its_scripts_see_no_token(Client::Pnpm12);
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio", missing = "yarn-1"),
    ignore = "needs node, npm, verdaccio, yarn-1: one is not installed"
)]
fn yarn_classic_installs_and_publishes_wherever_the_registry_is_named_and_scripts_see_no_token() {
    client_installs_and_publishes_and_its_scripts_see_no_token(Client::Yarn1);
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio", missing = "yarn-4"),
    ignore = "needs node, npm, verdaccio, yarn-4: one is not installed"
)]
fn yarn_berry_installs_and_publishes_wherever_the_registry_is_named_and_scripts_see_no_token() {
    client_installs_and_publishes_and_its_scripts_see_no_token(Client::Yarn4);
}

/// The check above can fail: a token in a script's environment is found.
#[test]
#[cfg_attr(missing = "node", ignore = "needs node, which is not installed")]
fn the_spy_finds_a_token_in_a_scripts_environment() {
    if !mayfly_tests::require_tool("node") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    let out = Command::new("node")
        .arg(spy_script())
        .args(["postinstall", "control"])
        .env("MAYFLY_SPY_DIR", dir.path())
        .env("npm_config_//127.0.0.1:1/:_authToken", token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen_file = |event: &str| {
        let prefix = format!("control.{event}.");
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        std::fs::read_to_string(file.expect("the spy wrote its file").path()).unwrap()
    };
    let seen = seen_file("postinstall");
    let minted = BTreeSet::from([fingerprint(token)]);
    let line = found_in(&seen, &minted).expect("the token is found");
    assert!(line.starts_with("self npm_config_//127.0.0.1:1/:_authToken="), "{line}");
    // Through the parent too: a child of a process holding it.
    let sh = Command::new("sh")
        .args(["-c", "node \"$0\" install control; true"])
        .arg(spy_script())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MAYFLY_SPY_DIR", dir.path())
        .env("HELD", token)
        .output()
        .unwrap();
    assert!(sh.status.success());
    let seen = seen_file("install");
    assert!(found_in(&seen, &minted).is_some_and(|l| l.starts_with("self HELD=") || l.starts_with("ancestor ")));
    assert!(seen.lines().any(|l| l.starts_with("ancestor ") && l.ends_with(&format!("HELD={token}"))));
}
