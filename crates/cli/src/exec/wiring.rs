//! Wiring every routed tool to its helper through the environment only: no user config
//! file is read or changed. The few files some tools insist on (a docker config, an AWS
//! config) are written into the session's private runtime directory and hold no secret.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mayfly_core::{Config, Env, Tool};

/// The helper binaries `mayfly exec` links into the session's `bin` directory.
pub(crate) const HELPERS: [&str; 6] = [
    "git-credential-mayfly",
    "docker-credential-mayfly",
    "cargo-credential-mayfly",
    "mayfly-aws-credential",
    "mayfly-kube-credential",
    "terraform-credentials-mayfly",
];

/// What the child gets: variables to set, and files to write first.
#[derive(Debug, Default)]
pub(crate) struct Wiring {
    pub vars: Vec<(String, String)>,
    pub files: Vec<(PathBuf, String)>,
}

impl Wiring {
    fn set(&mut self, name: &str, value: impl Into<String>) {
        self.vars.push((name.to_owned(), value.into()));
    }
}

/// The wiring for every route in `config`. `bin` holds the helpers (and goes first on
/// PATH); `runtime` is the session's private directory.
pub(crate) fn wire(config: &Config, env: &Env, bin: &Path, runtime: &Path) -> Wiring {
    let mut wiring = Wiring::default();
    let helper = |name: &str| bin.join(name).display().to_string();
    let hosts = |tool: Tool| -> BTreeSet<String> {
        config.routes.iter().filter(|r| r.tool == tool).map(|r| format!("{}://{}", r.protocol, r.host)).collect()
    };

    // git: appended to any GIT_CONFIG_COUNT entries the caller already has.
    let mut git = Vec::new();
    for url in hosts(Tool::Git) {
        // The empty entry resets the helper list, so no storage helper sees our tokens.
        git.push((format!("credential.{url}.helper"), String::new()));
        git.push((format!("credential.{url}.helper"), helper("git-credential-mayfly")));
        git.push((format!("credential.{url}.useHttpPath"), "true".to_owned()));
    }
    if !git.is_empty() {
        let first = env.get("GIT_CONFIG_COUNT").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        for (i, (key, value)) in git.iter().enumerate() {
            wiring.set(&format!("GIT_CONFIG_KEY_{}", first + i), key);
            wiring.set(&format!("GIT_CONFIG_VALUE_{}", first + i), value);
        }
        wiring.set("GIT_CONFIG_COUNT", (first + git.len()).to_string());
    }

    // OCI clients: a docker config and a containers auth file holding only `credHelpers`.
    let registries: BTreeSet<String> =
        config.routes.iter().filter(|r| r.tool == Tool::Oci).map(|r| r.host.clone()).collect();
    if !registries.is_empty() {
        let helpers: serde_json::Map<String, serde_json::Value> =
            registries.into_iter().map(|host| (host, serde_json::Value::from("mayfly"))).collect();
        let document = serde_json::json!({"credHelpers": helpers}).to_string();
        let docker = runtime.join("docker");
        wiring.files.push((docker.join("config.json"), document.clone()));
        wiring.files.push((runtime.join("containers-auth.json"), document));
        wiring.set("DOCKER_CONFIG", docker.display().to_string());
        wiring.set("REGISTRY_AUTH_FILE", runtime.join("containers-auth.json").display().to_string());
    }

    // cargo: mayfly first among the global providers; it answers `url-not-supported` for
    // registries without a route, and cargo moves on to its own token.
    if config.routes.iter().any(|r| r.tool == Tool::Cargo) {
        wiring.set(
            "CARGO_REGISTRY_GLOBAL_CREDENTIAL_PROVIDERS",
            format!("cargo:token {}", helper("cargo-credential-mayfly")),
        );
    }

    // AWS: one profile per route, named after it.
    let aws: Vec<&str> = config.routes.iter().filter(|r| r.tool == Tool::Aws).map(|r| r.name.as_str()).collect();
    if !aws.is_empty() {
        let mut file = String::new();
        for name in &aws {
            file += &format!("[profile {name}]\ncredential_process = {} {name}\n\n", helper("mayfly-aws-credential"));
        }
        let path = runtime.join("aws-config");
        wiring.files.push((path.clone(), file));
        wiring.set("AWS_CONFIG_FILE", path.display().to_string());
        if let [only] = aws.as_slice()
            && env.get("AWS_PROFILE").is_none()
        {
            wiring.set("AWS_PROFILE", *only);
        }
    }

    let path = env.get("PATH").unwrap_or("/usr/local/bin:/usr/bin:/bin");
    wiring.set("PATH", format!("{}:{path}", bin.display()));
    wiring
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(routes: &str) -> Config {
        let text = format!(
            "[identities.ci]\nkind = \"github-actions\"\n\n[exchanges.sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example/token\"\n\n[exchanges.aws]\nkind = \"aws-sts\"\n\n{routes}"
        );
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    fn var<'a>(wiring: &'a Wiring, name: &str) -> Option<&'a str> {
        wiring.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn git_entries_follow_the_callers_own_and_reset_other_helpers() {
        let config = config(
            "[[routes]]\ntool = \"git\"\nhost = \"git.example\"\npath = \"a\"\nidentity = \"ci\"\nexchange = \"sts\"\n\n[[routes]]\ntool = \"git\"\nhost = \"git.example\"\npath = \"b\"\nidentity = \"ci\"\nexchange = \"sts\"\n",
        );
        let env = Env::from_pairs([("GIT_CONFIG_COUNT", "2"), ("PATH", "/usr/bin")]);
        let wiring = wire(&config, &env, Path::new("/rt/bin"), Path::new("/rt"));
        assert_eq!(var(&wiring, "GIT_CONFIG_COUNT"), Some("5"), "one host, three entries, after the caller's two");
        assert_eq!(var(&wiring, "GIT_CONFIG_KEY_2"), Some("credential.https://git.example.helper"));
        assert_eq!(var(&wiring, "GIT_CONFIG_VALUE_2"), Some(""));
        assert_eq!(var(&wiring, "GIT_CONFIG_VALUE_3"), Some("/rt/bin/git-credential-mayfly"));
        assert_eq!(var(&wiring, "GIT_CONFIG_KEY_4"), Some("credential.https://git.example.useHttpPath"));
        assert_eq!(var(&wiring, "PATH"), Some("/rt/bin:/usr/bin"));
        assert!(wiring.files.is_empty());
        assert!(var(&wiring, "DOCKER_CONFIG").is_none());
    }

    #[test]
    fn registries_cargo_and_aws_get_private_files_without_secrets() {
        let config = config(
            "[[routes]]\ntool = \"oci\"\nhost = \"registry.example:5000\"\nidentity = \"ci\"\nexchange = \"sts\"\n\n[[routes]]\ntool = \"cargo\"\nhost = \"crates.example\"\nidentity = \"ci\"\nexchange = \"sts\"\n\n[[routes]]\nname = \"deploy\"\ntool = \"aws\"\nidentity = \"ci\"\nexchange = \"aws\"\nrole_arn = \"arn:aws:iam::1:role/d\"\n",
        );
        let wiring = wire(&config, &Env::default(), Path::new("/rt/bin"), Path::new("/rt"));
        assert_eq!(var(&wiring, "DOCKER_CONFIG"), Some("/rt/docker"));
        let (path, docker) = &wiring.files[0];
        assert_eq!(path, Path::new("/rt/docker/config.json"));
        assert_eq!(docker, r#"{"credHelpers":{"registry.example:5000":"mayfly"}}"#);
        assert_eq!(
            var(&wiring, "CARGO_REGISTRY_GLOBAL_CREDENTIAL_PROVIDERS"),
            Some("cargo:token /rt/bin/cargo-credential-mayfly")
        );
        assert_eq!(var(&wiring, "AWS_PROFILE"), Some("deploy"));
        let aws = &wiring.files.iter().find(|(p, _)| p.ends_with("aws-config")).unwrap().1;
        assert_eq!(aws, "[profile deploy]\ncredential_process = /rt/bin/mayfly-aws-credential deploy\n\n");
        assert!(var(&wiring, "GIT_CONFIG_COUNT").is_none());
    }
}
