//! npm and pnpm publish and install through `mayfly exec --proxy`, against a verdaccio over
//! HTTPS that lets in only tokens from `mayfly-sts`. The clients get no token and no
//! helper: their `.npmrc` names the registry only, the session gives npm a placeholder
//! credential that the proxy replaces on the way out, and a publish the route does not
//! allow is refused with the proxy's reason in npm's own output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use mayfly_tests::Stack;
use mayfly_tests::verdaccio::{Verdaccio, npm_client, require_npm_client, require_verdaccio};
use serde_json::{Value, json};

struct Registry {
    /// `localhost:PORT`: the name clients use. npm checks a proxied registry's certificate
    /// against `localhost` when its URL names an IP address, so a name it is.
    host: String,
    stack: Stack,
    verdaccio: Verdaccio,
    sts: Child,
    sts_url: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.sts.kill();
        let _ = self.sts.wait();
    }
}

impl Registry {
    fn start() -> Self {
        let stack = Stack::new();
        let root = stack.dir.path().to_owned();
        let (verdaccio, sts, sts_url) = super::npm_clients::verdaccio_and_its_exchange(&stack);
        // The user's own npm config names no CA and no proxy: the session does.
        std::fs::write(stack.home.join(".npmrc"), "# the user's own\n").unwrap();
        std::fs::write(root.join("npmrc-global"), "").unwrap();
        let host = format!("localhost:{}", verdaccio.host.rsplit_once(':').unwrap().1);
        let registry = Self { host, stack, verdaccio, sts, sts_url };
        registry.route(&["read", "publish"]);
        registry
    }

    /// One npm route for verdaccio, allowing `operations`; the upstream verified against
    /// the stack's CA.
    fn route(&self, operations: &[&str]) {
        let operations: Vec<String> = operations.iter().map(|o| format!("\"{o}\"")).collect();
        self.stack.write_config(&format!(
            "[exchanges.npm-sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"{sts}/token\"\nca_file = \"{ca}\"\n\n[[routes]]\ntool = \"npm\"\nhost = \"{host}\"\naudience = \"{audience}\"\nidentity = \"ci\"\nexchange = \"npm-sts\"\noperations = [{ops}]\nca_file = \"{ca}\"\n",
            sts = self.sts_url,
            ca = self.stack.ca.ca_cert.display(),
            host = self.host,
            audience = self.verdaccio.url,
            ops = operations.join(", "),
        ));
    }

    /// A package (depending on `deps` at 1.0.0) whose `.npmrc` names verdaccio and no token.
    fn project(&self, dir_name: &str, name: &str, deps: &[&str]) -> PathBuf {
        let dir = self.stack.work.join(dir_name);
        std::fs::create_dir_all(&dir).unwrap();
        let dependencies: serde_json::Map<String, Value> =
            deps.iter().map(|d| ((*d).to_owned(), json!("1.0.0"))).collect();
        let manifest = json!({"name": name, "version": "1.0.0", "license": "MIT", "dependencies": dependencies});
        std::fs::write(dir.join("package.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
        std::fs::write(dir.join("index.js"), "module.exports = 1;\n").unwrap();
        std::fs::write(dir.join(".npmrc"), format!("registry=https://{}/\n", self.host)).unwrap();
        dir
    }

    /// `mayfly exec --proxy -- sh -c SCRIPT` in `dir`, with npm's caches private and
    /// `bin` (a client's directory) first on PATH.
    fn exec(&self, session: &str, dir: &Path, bin: Option<&Path>, script: &str) -> Output {
        let root = self.stack.dir.path();
        let mut path = std::env::var("PATH").unwrap_or_default();
        if let Some(bin) = bin {
            path = format!("{}:{path}", bin.display());
        }
        Command::new(mayfly_tests::bin("mayfly"))
            .args(["exec", "--session", session, "--proxy", "--", "sh", "-c", script])
            .current_dir(dir)
            .env_clear()
            .envs(self.stack.env())
            .env("PATH", path)
            .env("npm_config_cache", root.join("npm-cache"))
            .env("npm_config_store_dir", root.join("pnpm-store"))
            .env("npm_config_globalconfig", root.join("npmrc-global"))
            .env("npm_config_update_notifier", "false")
            .env("npm_config_audit", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_fetch_retries", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("mayfly exec runs")
    }

    fn proxy_lines(&self, session: &str) -> Vec<Value> {
        self.stack.client_audit().into_iter().filter(|l| l["session"] == session && l["tool"] == "proxy").collect()
    }

    /// Publishes `@org/NAME` and installs it into another project with `tool` (`npm`, or
    /// `pnpm` from `bin`); then, under a read-only route, a publish is refused.
    fn publish_install_and_refuse(&self, tool: &str, bin: Option<&Path>) {
        let package = format!("@org/{tool}-proxied");
        let session = format!("{tool}-proxy");
        let dir = self.project(&format!("{tool}-pkg"), &package, &[]);
        let script =
            format!("set -e; {tool} publish --access public; env > env.txt; cp \"$npm_config_userconfig\" npmrc.txt");
        let out = self.exec(&session, &dir, bin, &script);
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{tool} publish through the proxy: {output}\n{}", self.verdaccio.log_text());

        let consumer = self.project(&format!("{tool}-consumer"), &format!("{tool}-consumer"), &[&package]);
        let install = format!("{tool}-install");
        let out = self.exec(&install, &consumer, bin, &format!("set -e; {tool} install; env > env.txt"));
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{tool} install through the proxy: {output}\n{}", self.verdaccio.log_text());
        assert!(consumer.join("node_modules").join(&package).join("package.json").exists(), "{output}");

        // No token in the client's environment or npm config: the placeholder only.
        for env in [dir.join("env.txt"), consumer.join("env.txt")] {
            let env = std::fs::read_to_string(env).unwrap();
            assert!(!env.contains("eyJ"), "a JWT in the client's environment");
            assert!(env.contains("npm_config_userconfig="), "{env}");
        }
        let npmrc = std::fs::read_to_string(dir.join("npmrc.txt")).unwrap();
        assert!(npmrc.contains(&format!("//{}/:_authToken=mayfly-proxy-placeholder", self.host)), "{npmrc}");
        assert!(npmrc.starts_with("# the user's own\n"), "the user's config is kept: {npmrc}");
        let lines = self.proxy_lines(&session);
        let target = format!("https://{}/{package}", self.host);
        assert!(
            lines.iter().any(|l| l["outcome"] == "proxied"
                && l["method"] == "PUT"
                && l["operation"] == "publish"
                && l["target"] == target
                && l["fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:"))),
            "{lines:?}"
        );
        // The install's requests: reads of the registry, each with a token.
        let lines = self.proxy_lines(&install);
        assert!(
            lines.iter().any(|l| l["outcome"] == "proxied"
                && l["method"] == "GET"
                && l["operation"] == "read"
                && l["target"] == format!("https://{}", self.host)),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| l["outcome"] == "proxied" && l["fingerprint"].is_string()), "{lines:?}");

        // A read-only route: the publish is refused, and npm shows why.
        self.route(&["read"]);
        let denied = format!("@org/{tool}-denied");
        let dir = self.project(&format!("{tool}-denied"), &denied, &[]);
        let out = self.exec(&format!("{tool}-readonly"), &dir, bin, &format!("{tool} publish --access public"));
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{output}");
        assert!(output.contains("403"), "{output}");
        assert!(output.contains("does not allow publish (allowed: read)"), "{output}");
        let lines = self.proxy_lines(&format!("{tool}-readonly"));
        let target = format!("https://{}/{denied}", self.host);
        assert!(
            lines.iter().any(|l| l["outcome"] == "denied" && l["operation"] == "publish" && l["target"] == target),
            "{lines:?}"
        );
        self.route(&["read", "publish"]);
        self.stack.assert_no_tokens_on_disk();
    }
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio"),
    ignore = "needs node, npm, verdaccio: one is not installed"
)]
fn npm_publishes_and_installs_through_the_proxy_without_a_token() {
    if !require_verdaccio() {
        return;
    }
    Registry::start().publish_install_and_refuse("npm", None);
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio", missing = "pnpm-9"),
    ignore = "needs node, npm, verdaccio, pnpm-9: one is not installed"
)]
fn pnpm_publishes_and_installs_through_the_proxy_without_a_token() {
    if !require_npm_client("pnpm-9") {
        return;
    }
    let registry = Registry::start();
    let bin = registry.stack.dir.path().join("pnpm-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(npm_client("pnpm-9"), bin.join("pnpm")).unwrap();
    registry.publish_install_and_refuse("pnpm", Some(&bin));
}
