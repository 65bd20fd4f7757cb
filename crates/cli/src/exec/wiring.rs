//! Wiring every routed tool to its helper through the environment only: no user config
//! file is read or changed. The few files some tools insist on (a docker config, an AWS
//! config) are written into the session's private runtime directory and hold no secret.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mayfly_core::{Config, Env, Tool};

/// The helper binaries `mayfly exec` links into the session's `bin` directory.
pub(crate) const HELPERS: [&str; 8] = [
    "git-credential-mayfly",
    "docker-credential-mayfly",
    "cargo-credential-mayfly",
    "mayfly-aws-credential",
    "mayfly-kube-credential",
    "terraform-credentials-mayfly",
    "bazel-credential-mayfly",
    "vault-token-helper-mayfly",
];

/// What the child gets: variables to set, and files to write first.
#[derive(Debug, Default)]
pub(crate) struct Wiring {
    pub vars: Vec<(String, String)>,
    pub files: Vec<(PathBuf, String)>,
    /// Symlinks (link, target) to the user's own directories the private config needs.
    pub links: Vec<(PathBuf, PathBuf)>,
    /// What the session changed in the caller's environment that they should hear about.
    pub warnings: Vec<String>,
}

impl Wiring {
    fn set(&mut self, name: &str, value: impl Into<String>) {
        self.vars.push((name.to_owned(), value.into()));
    }
}

/// The hosts (`host[:port]`) a tool's routes serve, once each.
pub(crate) fn route_hosts(config: &Config, tool: Tool) -> BTreeSet<String> {
    config.routes.iter().filter(|r| r.tool == tool).map(|r| r.host.clone()).collect()
}

/// `{protocol}://{host}` of a tool's routes, once each.
pub(crate) fn route_urls(config: &Config, tool: Tool) -> BTreeSet<String> {
    config.routes.iter().filter(|r| r.tool == tool).map(|r| format!("{}://{}", r.protocol, r.host)).collect()
}

/// git's wiring as `GIT_CONFIG_*` variables, after any the caller already has: for each
/// routed host the helper list reset (so no storage helper sees our tokens), then the
/// helper in `bin`, and `useHttpPath`.
pub(crate) fn git_vars(config: &Config, env: &Env, bin: &Path) -> Vec<(String, String)> {
    let helper = bin.join("git-credential-mayfly").display().to_string();
    let mut git = Vec::new();
    for url in route_urls(config, Tool::Git) {
        git.push((format!("credential.{url}.helper"), String::new()));
        git.push((format!("credential.{url}.helper"), helper.clone()));
        git.push((format!("credential.{url}.useHttpPath"), "true".to_owned()));
    }
    if git.is_empty() {
        return Vec::new();
    }
    let first = env.get(mayfly_core::EnvVars::GIT_CONFIG_COUNT).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let mut vars = Vec::new();
    for (i, (key, value)) in git.iter().enumerate() {
        vars.push((format!("GIT_CONFIG_KEY_{}", first + i), key.clone()));
        vars.push((format!("GIT_CONFIG_VALUE_{}", first + i), value.clone()));
    }
    vars.push(("GIT_CONFIG_COUNT".to_owned(), (first + git.len()).to_string()));
    vars
}

/// The wiring for every route in `config`. `bin` holds the helpers (and goes first on
/// PATH); `runtime` is the session's private directory.
pub(crate) fn wire(config: &Config, env: &Env, bin: &Path, runtime: &Path) -> Wiring {
    let mut wiring = Wiring { vars: git_vars(config, env, bin), ..Wiring::default() };
    let helper = |name: &str| bin.join(name).display().to_string();

    // OCI clients: a docker config and a containers auth file holding only `credHelpers`.
    let registries = route_hosts(config, Tool::Oci);
    if !registries.is_empty() {
        if let Some(inherited) = env.get(mayfly_core::EnvVars::DOCKER_AUTH_CONFIG) {
            let (document, dropped) = docker_auth_config(inherited, &registries);
            wiring.warnings.extend(dropped.into_iter().map(|key| {
                format!(
                    "`DOCKER_AUTH_CONFIG` held a credential for `{key}`, which a route serves: left out of the session"
                )
            }));
            wiring.set(mayfly_core::EnvVars::DOCKER_AUTH_CONFIG, document);
        }
        let helpers: serde_json::Map<String, serde_json::Value> =
            registries.into_iter().map(|host| (host, serde_json::Value::from("mayfly"))).collect();
        let document = serde_json::json!({"credHelpers": helpers.clone()}).to_string();
        let docker = runtime.join("docker");
        // The CLI plugins (buildx, compose) and contexts of the user's own docker config
        // stay reachable; its credentials do not come along.
        let theirs = env
            .path(mayfly_core::EnvVars::DOCKER_CONFIG)
            .or_else(|| env.path(mayfly_core::EnvVars::HOME).map(|h| h.join(".docker")));
        let mut docker_document = serde_json::json!({"credHelpers": helpers});
        if let Some(theirs) = theirs {
            for dir in ["cli-plugins", "contexts"] {
                if theirs.join(dir).is_dir() {
                    wiring.links.push((docker.join(dir), theirs.join(dir)));
                }
            }
            let config = read_user_file(&theirs.join("config.json"));
            let context = config.and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok());
            if let Some(current) = context.as_ref().and_then(|c| c["currentContext"].as_str()) {
                docker_document["currentContext"] = current.into();
            }
        }
        wiring.files.push((docker.join("config.json"), docker_document.to_string()));
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
        // The region of the user's default profile comes along (the CLI needs one).
        let theirs = env
            .path(mayfly_core::EnvVars::AWS_CONFIG_FILE)
            .or_else(|| env.path(mayfly_core::EnvVars::HOME).map(|h| h.join(".aws/config")));
        let region = theirs.and_then(|f| read_user_file(&f)).and_then(|text| default_region(&text));
        let mut file = String::new();
        for name in &aws {
            file += &format!("[profile {name}]\ncredential_process = {} {name}\n", helper("mayfly-aws-credential"));
            if let Some(region) = &region {
                file += &format!("region = {region}\n");
            }
            file.push('\n');
        }
        let path = runtime.join("aws-config");
        wiring.files.push((path.clone(), file));
        wiring.set("AWS_CONFIG_FILE", path.display().to_string());
        if let [only] = aws.as_slice()
            && env.get(mayfly_core::EnvVars::AWS_PROFILE).is_none()
        {
            wiring.set("AWS_PROFILE", *only);
        }
    }

    // kubectl: a private kubeconfig first in KUBECONFIG. client-go merges the files and
    // the first to name a context wins, so it re-points the user's contexts for routed
    // clusters at a user that runs the plugin; everything else stays the user's own.
    let hosts = route_hosts(config, Tool::Kubectl);
    if !hosts.is_empty() {
        let theirs: Vec<PathBuf> = match env.get(mayfly_core::EnvVars::KUBECONFIG) {
            Some(list) => list.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect(),
            None => env.path(mayfly_core::EnvVars::HOME).map(|h| h.join(".kube/config")).into_iter().collect(),
        };
        let documents: Vec<serde_json::Value> = theirs
            .iter()
            .filter_map(|f| read_user_file(f))
            .filter_map(|text| serde_norway::from_str(&text).ok())
            .collect();
        let kubeconfig = runtime.join("kubeconfig");
        wiring.files.push((kubeconfig.clone(), kube_overrides(&documents, &hosts, &helper("mayfly-kube-credential"))));
        let list: Vec<String> = std::iter::once(kubeconfig)
            .chain(theirs.into_iter().filter(|f| f.exists()))
            .map(|p| p.display().to_string())
            .collect();
        wiring.set("KUBECONFIG", list.join(":"));
    }

    // vault and bao: a private CLI config naming the token helper. The file holds nothing
    // else the CLIs read, so the user's own is not needed.
    // The CLIs run the helper through a shell, so a path it would split is not named.
    if config.routes.iter().any(|r| r.tool == Tool::Vault) {
        let helper = helper("vault-token-helper-mayfly");
        if let Some(why) = crate::setup::unsafe_for_shell(&helper) {
            wiring.warnings.push(format!("vault and bao are not wired: {why}"));
        } else {
            let path = runtime.join("vault.hcl");
            let helper = serde_json::Value::from(helper);
            wiring.files.push((path.clone(), format!("token_helper = {helper}\n")));
            wiring.set(mayfly_core::EnvVars::VAULT_CONFIG_PATH, path.display().to_string());
            wiring.set(mayfly_core::EnvVars::BAO_CONFIG_PATH, path.display().to_string());
        }
    }

    let path = env.get(mayfly_core::EnvVars::PATH).unwrap_or("/usr/local/bin:/usr/bin:/bin");
    wiring.set("PATH", format!("{}:{path}", bin.display()));
    wiring
}

/// `region` of the `[default]` profile of an AWS config.
/// The caller's `DOCKER_AUTH_CONFIG` (the docker CLI reads it before any config file) as
/// the session passes it on: the helper named for every routed registry, and no credential
/// for one (an `auths` entry would be used before the helper), the rest kept. Returns the
/// document and the `auths` keys left out. A value that is not a JSON object is replaced.
fn docker_auth_config(inherited: &str, registries: &BTreeSet<String>) -> (String, Vec<String>) {
    let mut document = match serde_json::from_str::<serde_json::Value>(inherited) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let mut dropped = Vec::new();
    if let Some(serde_json::Value::Object(auths)) = document.get_mut("auths") {
        // Keys are hosts or URLs (`https://host/v1/`), as docker login writes them.
        let host_of = |key: &str| {
            let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
            rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
        };
        auths.retain(|key, _| {
            let routed = registries.contains(&host_of(key));
            if routed {
                dropped.push(key.clone());
            }
            !routed
        });
    }
    let helpers = document.entry("credHelpers").or_insert_with(|| serde_json::json!({}));
    if !helpers.is_object() {
        *helpers = serde_json::json!({});
    }
    if let Some(helpers) = helpers.as_object_mut() {
        for host in registries {
            helpers.insert(host.clone(), "mayfly".into());
        }
    }
    (serde_json::Value::Object(document).to_string(), dropped)
}

fn default_region(text: &str) -> Option<String> {
    let mut in_default = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_default = line == "[default]" || line == "[profile default]";
        } else if in_default
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "region"
            && !value.trim().is_empty()
        {
            return Some(value.trim().to_owned());
        }
    }
    None
}

/// A kubeconfig (JSON is YAML) with a plugin user per routed cluster and, for each of
/// the user's contexts on such a cluster, the same context pointed at that user.
fn kube_overrides(documents: &[serde_json::Value], hosts: &BTreeSet<String>, helper: &str) -> String {
    use serde_json::{Value, json};
    let list = |key: &'static str| documents.iter().flat_map(move |d| d[key].as_array().cloned().unwrap_or_default());
    // First file wins for a name, as in client-go.
    let mut servers = std::collections::BTreeMap::new();
    for cluster in list("clusters") {
        if let (Some(name), Some(server)) = (cluster["name"].as_str(), cluster["cluster"]["server"].as_str()) {
            servers.entry(name.to_owned()).or_insert_with(|| server.trim_end_matches('/').to_owned());
        }
    }
    let user_for = |cluster: &str| -> Option<String> {
        let server = servers.get(cluster)?;
        hosts.iter().find(|h| *server == format!("https://{h}")).map(|h| format!("mayfly-{h}"))
    };
    let mut seen = BTreeSet::new();
    let mut contexts = Vec::new();
    for context in list("contexts") {
        let (Some(name), Some(cluster)) = (context["name"].as_str(), context["context"]["cluster"].as_str()) else {
            continue;
        };
        if let (true, Some(user)) = (seen.insert(name.to_owned()), user_for(cluster)) {
            let mut body = context["context"].clone();
            body["user"] = Value::from(user);
            contexts.push(json!({"name": name, "context": body}));
        }
    }
    let users: Vec<Value> = hosts
        .iter()
        .map(|host| {
            json!({"name": format!("mayfly-{host}"), "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": helper,
                "args": ["--server", format!("https://{host}")],
                "interactiveMode": "Never",
            }}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Config", "users": users, "contexts": contexts}).to_string()
}

/// A user's tool config the session's wiring builds on (docker's `config.json`, the AWS
/// config, kubeconfigs): read only as a regular file of a sane size, so a FIFO or a
/// device in its place is skipped, never waited on or read without end.
fn read_user_file(path: &Path) -> Option<String> {
    mayfly_core::files::read_regular_text(path, mayfly_core::files::MAX_USER_CONFIG).ok()
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
        assert!(var(&wiring, "VAULT_CONFIG_PATH").is_none());
    }

    #[test]
    fn vault_and_bao_get_a_private_config_naming_the_token_helper() {
        let config = config(
            "[[routes]]\ntool = \"vault\"\nhost = \"vault.example:8200\"\nidentity = \"ci\"\nexchange = \"sts\"\n",
        );
        let wiring = wire(&config, &Env::default(), Path::new("/rt/bin"), Path::new("/rt"));
        assert_eq!(var(&wiring, "VAULT_CONFIG_PATH"), Some("/rt/vault.hcl"));
        assert_eq!(var(&wiring, "BAO_CONFIG_PATH"), Some("/rt/vault.hcl"));
        let (_, file) = wiring.files.iter().find(|(p, _)| p.ends_with("vault.hcl")).unwrap();
        assert_eq!(file, "token_helper = \"/rt/bin/vault-token-helper-mayfly\"\n");
    }

    #[test]
    fn kubectl_contexts_on_routed_clusters_point_at_the_plugin_user() {
        let theirs: serde_json::Value = serde_norway::from_str(
            "clusters:\n- name: dev\n  cluster: {server: 'https://k.example:6443/'}\n- name: prod\n  cluster: {server: 'https://other.example'}\ncontexts:\n- name: dev\n  context: {cluster: dev, user: me, namespace: app}\n- name: prod\n  context: {cluster: prod, user: me}\n",
        )
        .unwrap();
        let hosts: BTreeSet<String> = ["k.example:6443".to_owned()].into();
        let ours: serde_json::Value =
            serde_json::from_str(&kube_overrides(&[theirs], &hosts, "/rt/bin/mayfly-kube-credential")).unwrap();
        assert_eq!(
            ours["contexts"],
            serde_json::json!([{"name": "dev", "context": {"cluster": "dev", "user": "mayfly-k.example:6443", "namespace": "app"}}])
        );
        assert_eq!(ours["users"][0]["user"]["exec"]["args"], serde_json::json!(["--server", "https://k.example:6443"]));
    }

    #[test]
    fn an_inherited_docker_auth_config_loses_its_credentials_for_routed_registries() {
        let registries: BTreeSet<String> = ["registry.example:5000".to_owned()].into();
        let inherited = r#"{"auths":{"registry.example:5000":{"auth":"c3RhdGljOnRva2Vu"},"https://Registry.Example:5000/v1/":{"auth":"eA=="},"other.example":{"auth":"b3duOnRva2Vu"}},"credHelpers":{"ecr.example":"ecr-login"}}"#;
        let (document, dropped) = docker_auth_config(inherited, &registries);
        let document: serde_json::Value = serde_json::from_str(&document).unwrap();
        assert_eq!(dropped, ["registry.example:5000", "https://Registry.Example:5000/v1/"]);
        assert_eq!(document["auths"], serde_json::json!({"other.example": {"auth": "b3duOnRva2Vu"}}));
        assert_eq!(
            document["credHelpers"],
            serde_json::json!({"ecr.example": "ecr-login", "registry.example:5000": "mayfly"})
        );
        let (replaced, dropped) = docker_auth_config("not json", &registries);
        assert_eq!(replaced, r#"{"credHelpers":{"registry.example:5000":"mayfly"}}"#);
        assert!(dropped.is_empty());
    }

    #[test]
    fn the_default_profiles_region_comes_along() {
        let text = "[profile x]\nregion = eu-west-1\n[default]\noutput = json\nregion = us-east-2\n";
        assert_eq!(default_region(text).as_deref(), Some("us-east-2"));
        assert_eq!(default_region("[profile x]\nregion = a\n"), None);
    }
}
