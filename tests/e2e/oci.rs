//! The real skopeo and docker CLI, through `docker-credential-mayfly`, against the real
//! distribution registry with token auth pointing at `mayfly-sts`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mayfly_tests::{Stack, bin, require_tool};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `docker-registry serve`, stopped on drop.
pub(super) struct Registry {
    child: Child,
    pub(super) host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// The registry on the stack's reserved port, trusting the exchange's signer.
    pub(super) fn start(stack: &Stack) -> Self {
        let client = stack.https_client();
        let cert = client.get(format!("{}/registry/cert.pem", stack.sts.url)).send().unwrap().text().unwrap();
        Self::start_with(stack, &format!("{}/registry/token", stack.sts.url), &stack.sts.url, &cert)
    }

    /// The registry on the stack's reserved port, trusting the token service at `realm`
    /// whose tokens name `issuer` and are signed by the key of `cert` (PEM).
    pub(super) fn start_with(stack: &Stack, realm: &str, issuer: &str, cert: &str) -> Self {
        Self::start_on(stack, &format!("127.0.0.1:{}", stack.oci_port()), None, realm, issuer, cert)
    }

    /// The registry on `address` (`IP:PORT`, also its token service name), over TLS with
    /// `tls` (certificate and key files) when given, trusting the token service at `realm`.
    pub(super) fn start_on(
        stack: &Stack,
        address: &str,
        tls: Option<(&Path, &Path)>,
        realm: &str,
        issuer: &str,
        cert: &str,
    ) -> Self {
        Self::start_as(stack, address, address, tls, realm, issuer, cert)
    }

    /// The registry on `address` whose token service name is `service` (the host of a
    /// front it stands behind), its upload locations relative to the front's host.
    pub(super) fn start_as(
        stack: &Stack,
        address: &str,
        service: &str,
        tls: Option<(&Path, &Path)>,
        realm: &str,
        issuer: &str,
        cert: &str,
    ) -> Self {
        let dir = stack.dir.path().join("oci-registry");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("signer.pem"), cert).unwrap();
        let host = address.to_owned();
        let tls = tls.map_or_else(String::new, |(cert, key)| {
            format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display())
        });
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: {host}\n  relativeurls: {relative}\n{tls}auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {cert}\n",
            data = dir.join("data").display(),
            cert = dir.join("signer.pem").display(),
            relative = service != address,
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = Self { child, host };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.host).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }
}

/// A one-layer OCI image layout, built with tar and gzip.
pub(super) fn image_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("image");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let content = dir.join("rootfs");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), "pushed with a token minted a second ago\n").unwrap();
    let tar = dir.join("layer.tar");
    assert!(
        Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&content).arg("hello.txt").status().unwrap().success()
    );
    let tar_bytes = std::fs::read(&tar).unwrap();
    let gz = Command::new("gzip").args(["-n", "-c"]).arg(&tar).output().unwrap().stdout;
    let blob = |bytes: &[u8]| -> (String, usize) {
        let digest = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&digest), bytes).unwrap();
        (format!("sha256:{digest}"), bytes.len())
    };
    let (layer, layer_size) = blob(&gz);
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar_bytes)));
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}});
    let (config_digest, config_size) = blob(config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    layout
}

/// The stack's routes plus an OCI route with these operations, for `test/*` only.
pub(super) fn configure(stack: &Stack, registry: &Registry, operations: &str) -> (PathBuf, PathBuf) {
    stack.write_config(&format!(
        "{}\n[[routes]]\ntool = \"oci\"\nhost = \"{}\"\nidentity = \"ci\"\nexchange = \"sts\"\noperations = [{operations}]\nscope = \"oci:{{host}}/test/*:{{operation}}\"\nusername = \"mayfly\"\n",
        stack.default_routes(),
        registry.host
    ));
    let helpers = serde_json::json!({"credHelpers": {registry.host.clone(): "mayfly"}}).to_string();
    let auth = stack.dir.path().join("auth.json");
    std::fs::write(&auth, &helpers).unwrap();
    let docker_config = stack.dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(docker_config.join("config.json"), &helpers).unwrap();
    (auth, docker_config)
}

/// A client command with the stack's environment, the helper on PATH and the test CA
/// trusted for the token endpoint.
pub(super) fn client(stack: &Stack, program: &str, args: &[&str]) -> Output {
    let helper_dir = bin("docker-credential-mayfly").parent().unwrap().to_owned();
    let path = format!("{}:{}", helper_dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(program)
        .args(args)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("PATH", path)
        .env("SSL_CERT_FILE", &stack.ca.ca_cert)
        .output()
        .unwrap()
}

/// `test/hello:v1` pushed by skopeo through the helper; its reference.
pub(super) fn push_hello(stack: &Stack, registry: &Registry, auth: &Path) -> String {
    let layout = image_layout(stack.dir.path());
    let image = format!("{}/test/hello:v1", registry.host);
    let source = format!("oci:{}:v1", layout.display());
    let dest = format!("docker://{image}");
    let args = ["copy", "--dest-tls-verify=false", "--authfile", auth.to_str().unwrap(), &source, &dest];
    ok(&client(stack, "skopeo", &args));
    image
}

pub(super) fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo", missing = "docker"),
    ignore = "needs docker-registry, skopeo, docker: one is not installed"
)]
fn skopeo_pushes_and_pulls_and_docker_inspects_with_minted_registry_tokens() {
    if !require_tool("docker-registry") || !require_tool("skopeo") || !require_tool("docker") {
        return;
    }
    let stack = Stack::builder().git().oci().start();
    let registry = Registry::start(&stack);
    let (auth, docker_config) = configure(&stack, &registry, "\"read\", \"write\"");
    let image = format!("docker://{}", push_hello(&stack, &registry, &auth));
    let inspected: Value = serde_json::from_str(&ok(&client(
        &stack,
        "skopeo",
        &["inspect", "--tls-verify=false", "--authfile", auth.to_str().unwrap(), &image],
    )))
    .unwrap();
    assert!(inspected["Digest"].as_str().unwrap().starts_with("sha256:"));
    let docker = client(
        &stack,
        "docker",
        &[
            "--config",
            docker_config.to_str().unwrap(),
            "manifest",
            "inspect",
            "--insecure",
            &format!("{}/test/hello:v1", registry.host),
        ],
    );
    assert!(ok(&docker).contains("application/vnd.oci.image.layer.v1.tar+gzip"));

    let operations: Vec<String> = stack
        .client_audit()
        .iter()
        .filter(|l| l["outcome"] == "issued")
        .map(|l| l["operation"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        operations.contains(&"write".to_owned()) && operations.contains(&"read".to_owned()),
        "skopeo copy asked to write, inspect to read: {operations:?}"
    );
    let registry_tokens: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["rule"] == "registry token").collect();
    assert!(
        registry_tokens.iter().any(|l| l["scope"].as_str().unwrap_or("").contains("repository:test/hello:pull,push")),
        "{registry_tokens:?}"
    );
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn a_push_under_a_read_only_route_or_to_another_repository_is_refused() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let stack = Stack::builder().git().oci().start();
    let registry = Registry::start(&stack);
    let layout = image_layout(stack.dir.path());
    let source = format!("oci:{}:v1", layout.display());

    let (auth, _) = configure(&stack, &registry, "\"read\", \"write\"");
    let other = format!("docker://{}/other/hello:v1", registry.host);
    let out = client(
        &stack,
        "skopeo",
        &["copy", "--dest-tls-verify=false", "--authfile", auth.to_str().unwrap(), &source, &other],
    );
    assert!(!out.status.success(), "pushed outside test/*");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("unauthorized") || stderr.contains("denied"), "refused by the registry: {stderr}");
    let tokens: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["rule"] == "registry token").collect();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|l| !l["scope"].as_str().unwrap_or("").contains("other/")),
        "{tokens:?}"
    );

    let (auth, _) = configure(&stack, &registry, "\"read\"");
    let image = format!("docker://{}/test/hello:v1", registry.host);
    let out = client(
        &stack,
        "skopeo",
        &["copy", "--dest-tls-verify=false", "--authfile", auth.to_str().unwrap(), &source, &image],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not allow write"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unconfigured_registry_gets_the_exact_not_found_text() {
    let stack = Stack::builder().git().oci().start();
    let out = assert_cmd::Command::new(bin("docker-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin("registry.example.com")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "credentials not found in native keychain\n");
    assert!(out.stderr.is_empty());
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn global_options_and_their_values_do_not_hide_a_push() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let stack = Stack::builder().git().oci().start();
    let registry = Registry::start(&stack);
    let layout = image_layout(stack.dir.path());
    let source = format!("oci:{}:v1", layout.display());
    let (auth, _) = configure(&stack, &registry, "\"read\", \"write\"");
    let registries_conf = stack.dir.path().join("registries.conf");
    std::fs::write(&registries_conf, "").unwrap();
    let image = format!("docker://{}/test/hello:v2", registry.host);
    let conf = registries_conf.to_str().unwrap();
    let args = ["--registries-conf", conf, "--command-timeout", "60s", "copy", "--dest-tls-verify=false", "--authfile"];
    ok(&client(&stack, "skopeo", &[&args[..], &[auth.to_str().unwrap(), &source, &image]].concat()));
    let issued: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["outcome"] == "issued").collect();
    assert!(!issued.is_empty() && issued.iter().all(|l| l["operation"] == "write"), "{issued:?}");
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo", missing = "docker"),
    ignore = "needs docker-registry, skopeo, docker: one is not installed"
)]
fn a_session_takes_an_inherited_docker_auth_config_credential_out_of_the_way() {
    if !require_tool("docker-registry") || !require_tool("skopeo") || !require_tool("docker") {
        return;
    }
    let stack = Stack::builder().git().oci().start();
    let registry = Registry::start(&stack);
    let (auth, _) = configure(&stack, &registry, "\"read\", \"write\"");
    let image = push_hello(&stack, &registry, &auth);
    // A standing credential in the environment, as CI systems hand them out. Newer docker
    // CLIs and Testcontainers read it before any config file, and `docker run
    // --use-api-socket` copies it into containers (docker 28.2 here: it does not shadow
    // `credHelpers` for `manifest inspect`, so what the session passes on is asserted).
    let standing = json!({"auths": {registry.host.clone(): {"auth": "c3RhbmRpbmc6cGFzc3dvcmQ="}, "other.example": {"auth": "b3duOnRva2Vu"}}}).to_string();
    let passed_on = stack.dir.path().join("docker-auth-config.json");
    let script = format!(
        "printenv DOCKER_AUTH_CONFIG > {}; exec docker manifest inspect --insecure {image}",
        passed_on.display()
    );
    let issued_before = stack.client_audit().iter().filter(|l| l["outcome"] == "issued").count();
    let inside = Command::new(bin("mayfly"))
        .args(["exec", "--", "sh", "-c", &script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("DOCKER_AUTH_CONFIG", &standing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&inside.stderr);
    assert!(inside.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&inside.stdout).contains("application/vnd.oci.image.layer.v1.tar+gzip"));
    assert!(
        stderr.contains(&format!("`DOCKER_AUTH_CONFIG` held a credential for `{}`", registry.host)),
        "the session says what it left out: {stderr}"
    );
    assert!(!stderr.contains("c3RhbmRpbmc6cGFzc3dvcmQ="));
    let passed_on: Value = serde_json::from_str(&std::fs::read_to_string(&passed_on).unwrap()).unwrap();
    assert_eq!(
        passed_on["auths"],
        json!({"other.example": {"auth": "b3duOnRva2Vu"}}),
        "other registries' entries kept"
    );
    assert_eq!(passed_on["credHelpers"], json!({registry.host.clone(): "mayfly"}));
    let issued = stack.client_audit().iter().filter(|l| l["outcome"] == "issued").count();
    assert!(issued > issued_before, "the session's docker asked mayfly");
}
