//! `mayfly doctor` end to end: the real binary over a planted HOME, with nothing of the
//! caller's environment. Every kind of long-lived credential is found by kind and place,
//! none of their bytes is printed, and mayfly's own wiring passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mayfly_core::Fingerprint;
use mayfly_tests::{bin, require_tool};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A HOME, a project directory beside it, and a memory-backed runtime directory (for the
/// cache key and the containers tools' auth file).
struct Fixture {
    _dir: tempfile::TempDir,
    _runtime: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    work: PathBuf,
    runtime: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let runtime_dir = tempfile::Builder::new().prefix("mayfly-doctor-").tempdir_in("/dev/shm").unwrap();
        let runtime = runtime_dir.path().canonicalize().unwrap();
        let (home, work) = (root.join("home"), root.join("work"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Self { _dir: dir, _runtime: runtime_dir, root, home, work, runtime }
    }

    /// Writes a file under the fixture, creating its directories.
    fn write(&self, path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `mayfly doctor --home HOME ARGS` in the project directory, with only `PATH`, the
    /// runtime directory and `vars` in its environment.
    fn doctor(&self, args: &[&str], vars: &[(&str, String)]) -> Output {
        Command::new(bin("mayfly"))
            .arg("doctor")
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .current_dir(&self.work)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("XDG_RUNTIME_DIR", &self.runtime)
            // The machine's own git config is not the fixture's.
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    }

    /// A mayfly config whose routes reach an exchange at `endpoint`, with an identity
    /// from the `ID_TOKEN` variable.
    fn config(&self, endpoint: &str, routes: &[(&str, &str)]) {
        let mut text = format!(
            "[identities.ci]\nkind = \"env\"\nvar = \"ID_TOKEN\"\naudience = \"mayfly\"\n\n[exchanges.corp]\nkind = \"rfc8693\"\ntoken_endpoint = \"{endpoint}\"\n"
        );
        for (tool, host) in routes {
            text += &format!(
                "\n[[routes]]\ntool = \"{tool}\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"corp\"\n"
            );
        }
        self.write(&self.home.join(".config/mayfly/config.toml"), &text);
    }
}

/// A distinct, random-looking secret: `prefix` and 32 characters derived from `label`
/// and the time, from an alphabet without hex digits (so no piece of it can turn up
/// inside a fingerprint by chance).
fn secret(prefix: &str, label: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let digest = Sha256::digest(format!("{label}/{nanos}/{}", std::process::id()));
    let alphabet = b"ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ";
    let body: String = digest.iter().map(|b| alphabet[usize::from(*b) % alphabet.len()] as char).collect();
    format!("{prefix}{body}")
}

/// An unsigned JWT with these claims: enough for `peek_claims`, never valid anywhere.
fn jwt(claims: &Value) -> String {
    format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn parse_report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn kinds(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_owned()).collect()
}

/// Asserts that no secret, nor any 6-character piece of its random part, was printed.
fn assert_never_printed(out: &Output, secrets: &[String]) {
    let printed = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for secret in secrets {
        assert!(!printed.contains(secret.as_str()), "a secret was printed:\n{printed}");
        let piece = &secret[secret.len() - 16..secret.len() - 10];
        assert!(!printed.contains(piece), "a piece of a secret ({piece}) was printed:\n{printed}");
    }
}

/// One planted credential: the kind and place the report must name, and the value whose
/// fingerprint it must carry (the secret as stored).
struct Planted {
    kind: &'static str,
    location: String,
    fingerprint_of: String,
}

/// What was planted, and every secret that must not be printed.
#[derive(Default)]
struct Plants {
    planted: Vec<Planted>,
    secrets: Vec<String>,
}

impl Plants {
    fn plant(&mut self, kind: &'static str, location: String, secret: &str, stored: &str) {
        self.secrets.push(secret.to_owned());
        if stored != secret {
            self.secrets.push(stored.to_owned());
        }
        self.planted.push(Planted { kind, location, fingerprint_of: stored.to_owned() });
    }
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn every_kind_of_long_lived_credential_is_found_and_none_is_printed() {
    if !require_tool("git") {
        return;
    }
    let f = Fixture::new();
    let (home, work) = (&f.home, &f.work);
    let at = |path: &Path, key: &str| format!("{}: {key}", path.display());
    let mut p = Plants::default();

    // git: the `store` helper's file and its config, a CI checkout's extraheader, a token in a remote URL.
    let s = secret("ghp_", "git-credentials");
    f.write(&home.join(".git-credentials"), &format!("https://x-access-token:{s}@github.com\n"));
    p.plant("git-credentials", at(&home.join(".git-credentials"), "https://github.com"), &s, &s);
    f.write(&home.join(".gitconfig"), "[credential]\n\thelper = store\n");
    let s = secret("", "extraheader");
    let basic = STANDARD.encode(format!("x-access-token:{s}"));
    let s2 = secret("glpat-", "remote-url");
    f.write(
        &work.join(".git/config"),
        &format!(
            "[http \"https://github.com/\"]\n\textraheader = AUTHORIZATION: basic {basic}\n[remote \"origin\"]\n\turl = https://oauth2:{s2}@gitlab.example.com/org/app.git\n"
        ),
    );
    let repo_config = work.join(".git/config");
    p.plant("git-extraheader", at(&repo_config, "http.https://github.com/.extraheader"), &s, &basic);
    p.plant("git-url-credentials", at(&repo_config, "remote.origin.url"), &s2, &s2);

    // docker and the containers tools: a password (`auth`), an identity token, in each file they read.
    let docker = home.join(".docker/config.json");
    let (s, s2) = (secret("", "docker-auth"), secret("", "docker-identity"));
    let auth = STANDARD.encode(format!("robot:{s}"));
    f.write(
        &docker,
        &format!(
            r#"{{"auths": {{"registry.example.com": {{"auth": "{auth}"}}, "ghcr.io": {{"identitytoken": "{s2}"}}}}}}"#
        ),
    );
    p.plant("docker-auth", at(&docker, "auths.registry.example.com.auth"), &s, &auth);
    p.plant("docker-identity-token", at(&docker, "auths.ghcr.io.identitytoken"), &s2, &s2);
    for (path, registry) in [
        (f.runtime.join("containers/auth.json"), "quay.io"),
        (home.join(".config/containers/auth.json"), "registry.gitlab.com"),
    ] {
        let s = secret("", registry);
        let auth = STANDARD.encode(format!("me:{s}"));
        f.write(&path, &format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#));
        p.plant("docker-auth", at(&path, &format!("auths.{registry}.auth")), &s, &auth);
    }

    // npm: the user's token, and one in the project's `.npmrc`; a reference is no secret.
    let (s, s2) = (secret("npm_", "npmrc"), secret("", "npmrc-project"));
    f.write(
        &home.join(".npmrc"),
        &format!("//registry.npmjs.org/:_authToken={s}\n//npm.example.com/:_authToken=${{NPM_TOKEN}}\n"),
    );
    p.plant("npm-token", at(&home.join(".npmrc"), "//registry.npmjs.org/:_authToken"), &s, &s);
    f.write(&work.join(".npmrc"), &format!("_auth = \"{s2}\"\n"));
    p.plant("npm-token", at(&work.join(".npmrc"), "_auth"), &s2, &s2);

    // cargo: `~/.cargo/credentials.toml`, and `credentials` under `CARGO_HOME`.
    let (s, s2) = (secret("cio", "cargo"), secret("", "cargo-corp"));
    let cargo_home = f.root.join("cargo-home");
    f.write(&home.join(".cargo/credentials.toml"), &format!("[registry]\ntoken = \"{s}\"\n"));
    p.plant("cargo-token", at(&home.join(".cargo/credentials.toml"), "registry.token"), &s, &s);
    f.write(&cargo_home.join("credentials"), &format!("[registries.corp]\ntoken = \"{s2}\"\n"));
    p.plant("cargo-token", at(&cargo_home.join("credentials"), "registries.corp.token"), &s2, &s2);

    // AWS: an IAM user's key, and a temporary one.
    let aws = home.join(".aws/credentials");
    let (key_id, s, s2, session) =
        (secret("AKIA", "aws-id"), secret("", "aws"), secret("", "aws-temp"), secret("", "aws-session"));
    f.write(
        &aws,
        &format!(
            "[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {s}\n\n[temp]\naws_access_key_id = ASIAEXAMPLE\naws_secret_access_key = {s2}\naws_session_token = {session}\n"
        ),
    );
    p.plant("aws-static-key", at(&aws, "[default]"), &s, &s);
    p.plant("aws-temporary-key", at(&aws, "[temp]"), &s2, &s2);
    p.secrets.extend([key_id, session]);

    // Terraform, the GitHub CLI, twine.
    let s = secret("", "terraform");
    let tfrc = home.join(".terraform.d/credentials.tfrc.json");
    f.write(&tfrc, &format!(r#"{{"credentials": {{"app.terraform.io": {{"token": "{s}.atlasv1.x"}}}}}}"#));
    p.plant("terraform-token", at(&tfrc, "credentials.app.terraform.io.token"), &s, &format!("{s}.atlasv1.x"));
    let s = secret("gho_", "gh");
    let hosts = home.join(".config/gh/hosts.yml");
    f.write(&hosts, &format!("github.com:\n    user: octo\n    oauth_token: {s}\n    git_protocol: https\n"));
    p.plant("gh-token", at(&hosts, "github.com.oauth_token"), &s, &s);
    let s = secret("pypi-", "pypirc");
    f.write(
        &home.join(".pypirc"),
        &format!("[distutils]\nindex-servers =\n    pypi\n\n[pypi]\nusername = __token__\npassword = {s}\n"),
    );
    p.plant("pypirc-password", at(&home.join(".pypirc"), "[pypi] password"), &s, &s);

    // kubectl: two files of `KUBECONFIG`, with a token, a password and a client key.
    let (kube, kube_ci) = (home.join(".kube/config"), home.join(".kube/ci"));
    let (s, s2, s3, s4) =
        (secret("", "kube-token"), secret("", "kube-pw"), secret("", "kube-key"), secret("", "kube-ci"));
    f.write(
        &kube,
        &format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: {s}\n- name: basic\n  user:\n    username: admin\n    password: {s2}\n- name: cert\n  user:\n    client-certificate-data: Y2VydA==\n    client-key-data: {s3}\n"
        ),
    );
    p.plant("kubeconfig-token", at(&kube, "users[admin].user.token"), &s, &s);
    p.plant("kubeconfig-password", at(&kube, "users[basic].user.password"), &s2, &s2);
    p.plant("kubeconfig-client-key", at(&kube, "users[cert].user.client-key-data"), &s3, &s3);
    f.write(&kube_ci, &format!("users:\n- name: ci\n  user: {{token: \"{s4}\"}}\n"));
    p.plant("kubeconfig-token", at(&kube_ci, "users[ci].user.token"), &s4, &s4);

    // The environment.
    let mut vars = vec![
        ("KUBECONFIG", format!("{}:{}", kube.display(), kube_ci.display())),
        ("CARGO_HOME", cargo_home.display().to_string()),
    ];
    for name in [
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "NPM_TOKEN",
        "NODE_AUTH_TOKEN",
        "CARGO_REGISTRY_TOKEN",
        "CARGO_REGISTRIES_CORP_TOKEN",
        "TWINE_PASSWORD",
        "PYPI_TOKEN",
        "DOCKER_PASSWORD",
        "TF_TOKEN_app_terraform_io",
    ] {
        let s = secret("", name);
        p.plant("env-token", name.to_owned(), &s, &s);
        vars.push((name, s));
    }
    let (key_id, s) = (secret("AKIA", "env-aws-id"), secret("", "env-aws"));
    p.plant("env-aws-static-key", "AWS_SECRET_ACCESS_KEY".into(), &s, &s);
    p.secrets.push(key_id.clone());
    vars.extend([("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", s)]);

    let out = f.doctor(&["--json"], &vars);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_never_printed(&out, &p.secrets);
    let report = parse_report(&out);
    assert_eq!(report["clean"], false);
    let findings = report["findings"].as_array().unwrap();
    for planted in &p.planted {
        let found = findings.iter().find(|x| x["kind"] == planted.kind && x["where"] == planted.location.as_str());
        let found = found.unwrap_or_else(|| panic!("no {} at {}: {report:#}", planted.kind, planted.location));
        assert_eq!(found["fingerprint"], Fingerprint::of(&planted.fingerprint_of).as_str(), "{found}");
        assert!(!found["fix"].as_str().unwrap().is_empty());
    }
    let kinds = kinds(&report);
    for kind in ["git-credential-store", "npm-token-reference"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}: {report:#}");
    }
    let temporary = findings.iter().find(|x| x["kind"] == "aws-temporary-key").unwrap();
    assert_eq!(temporary["severity"], "warning");
    let reference = findings.iter().find(|x| x["kind"] == "npm-token-reference").unwrap();
    assert_eq!((&reference["severity"], &reference["fingerprint"]), (&Value::from("info"), &Value::Null));

    // The table tells the same, and prints no secret either.
    let table = f.doctor(&[], &vars);
    assert_eq!(table.status.code(), Some(1));
    assert_never_printed(&table, &p.secrets);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("git-extraheader") && text.contains("fix: "), "{text}");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_clean_home_and_mayflys_own_wiring_pass() {
    if !require_tool("git") {
        return;
    }
    let empty = Fixture::new();
    let out = empty.doctor(&["--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(parse_report(&out)["clean"], true);
    let table = empty.doctor(&[], &[]);
    assert_eq!(table.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("mayfly doctor: nothing to fix"));

    // Wired: references for npm, git helpers reset before mayfly's, docker's credHelpers,
    // an exchange that answers, and an identity whose token is in the environment.
    let f = Fixture::new();
    let exchange = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://127.0.0.1:{}/token", exchange.local_addr().unwrap().port());
    f.config(&endpoint, &[("git", "git.example.com"), ("oci", "registry.example.com")]);
    f.write(
        &f.home.join(".npmrc"),
        "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n//npm.example.com/:_authToken=\"${NPM_TOKEN}\"\n",
    );
    f.write(
        &f.home.join(".gitconfig"),
        "[credential \"https://git.example.com\"]\n\thelper =\n\thelper = /opt/mayfly/bin/git-credential-mayfly\n\tuseHttpPath = true\n",
    );
    f.write(&f.home.join(".docker/config.json"), r#"{"credHelpers": {"registry.example.com": "mayfly"}}"#);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = jwt(&serde_json::json!({
        "iss": "https://token.actions.githubusercontent.com",
        "sub": "repo:org/app:ref:refs/heads/main",
        "aud": "mayfly",
        "exp": exp,
        "repository": "org/app",
        "ref": "refs/heads/main",
        "nonce": secret("", "jwt-nonce"),
    }));
    let vars = [("ID_TOKEN", token.clone())];
    let out = f.doctor(&["--json"], &vars);
    assert_never_printed(&out, std::slice::from_ref(&token));
    let report = parse_report(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["clean"], true);
    let kinds = kinds(&report);
    assert_eq!(kinds.iter().filter(|k| *k == "npm-token-reference").count(), 2, "{report:#}");
    assert!(report["findings"].as_array().unwrap().iter().all(|x| x["severity"] == "info"), "{report:#}");

    // The identity: its claims, never its token.
    let source = &report["identity"]["sources"][0];
    assert_eq!(
        (source["name"].as_str(), source["kind"].as_str(), source["source"].as_str()),
        (Some("ci"), Some("env"), Some("$ID_TOKEN"))
    );
    assert_eq!(source["available"], true);
    let claims = &source["claims"];
    assert_eq!(claims["issuer"], "https://token.actions.githubusercontent.com");
    assert_eq!(claims["subject"], "repo:org/app:ref:refs/heads/main");
    assert_eq!(claims["audience"], serde_json::json!(["mayfly"]));
    assert_eq!(claims["expired"], false);
    assert_eq!(claims["ci"]["repository"], "org/app");
    assert_eq!(claims["ci"]["ref"], "refs/heads/main");
    drop(exchange);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn storage_helpers_around_mayflys_are_reported() {
    if !require_tool("git") {
        return;
    }
    let f = Fixture::new();
    f.config("https://sts.example.com/token", &[("git", "a.example.com"), ("git", "b.example.com")]);
    // a: a general `cache` is asked first (no empty entry resets it); b: `store` comes after mayfly.
    f.write(
        &f.home.join(".gitconfig"),
        "[credential]\n\thelper = cache --timeout 300\n\
         [credential \"https://a.example.com\"]\n\thelper = git-credential-mayfly\n\tuseHttpPath = true\n\
         [credential \"https://b.example.com\"]\n\thelper =\n\thelper = git-credential-mayfly\n\thelper = store\n\tuseHttpPath = true\n",
    );
    let out = f.doctor(&["--json", "--offline"], &[("ID_TOKEN", "x".into())]);
    assert_eq!(out.status.code(), Some(1));
    let report = parse_report(&out);
    let gitconfig = f.home.join(".gitconfig").display().to_string();
    let find = |kind: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind}: {report:#}"))
    };
    let before = find("git-helper-before-mayfly");
    assert_eq!(before["where"], format!("{gitconfig}: credential.helper"));
    assert!(before["fix"].as_str().unwrap().contains("https://a.example.com"), "{before}");
    let after = find("git-storage-helper-after-mayfly");
    assert_eq!(after["where"], format!("{gitconfig}: credential.https://b.example.com.helper"));
    assert!(after["fix"].as_str().unwrap().contains("`store`"), "{after}");
}

#[test]
fn an_unreachable_exchange_is_reported_unless_offline() {
    let f = Fixture::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    f.config(&format!("http://127.0.0.1:{port}/token"), &[("terraform", "tf.example.com")]);
    let vars = [("ID_TOKEN", "opaque".to_owned())];

    let out = f.doctor(&["--json"], &vars);
    assert_eq!(out.status.code(), Some(1));
    let report = parse_report(&out);
    let finding = report["findings"].as_array().unwrap().iter().find(|x| x["kind"] == "exchange-unreachable");
    let finding = finding.unwrap_or_else(|| panic!("not reported: {report:#}"));
    assert_eq!(finding["where"], format!("exchange `corp` (127.0.0.1:{port})"));

    let offline = f.doctor(&["--json", "--offline"], &vars);
    let report = parse_report(&offline);
    assert!(!kinds(&report).iter().any(|k| k == "exchange-unreachable"), "{report:#}");
    assert_eq!(offline.status.code(), Some(0), "{report:#}");
}

#[test]
fn a_broken_config_is_a_finding_not_a_crash() {
    let f = Fixture::new();
    f.write(&f.home.join(".config/mayfly/config.toml"), "[[routes]]\ntool = \"nope\"\n");
    let out = f.doctor(&["--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = parse_report(&out);
    let finding = &report["findings"][0];
    assert_eq!(finding["kind"], "config-invalid", "{report:#}");
    assert_eq!(finding["where"], f.home.join(".config/mayfly/config.toml").display().to_string());
}

/// Answers one request with `{"value": token}`, as GitHub's OIDC endpoint does, and
/// returns the request's head.
fn serve_once(listener: std::net::TcpListener, token: String) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        let body = serde_json::json!({ "count": 1, "value": token }).to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).unwrap();
        String::from_utf8(head).unwrap()
    })
}

#[test]
fn a_github_actions_token_is_fetched_only_when_asked() {
    let f = Fixture::new();
    f.write(
        &f.home.join(".config/mayfly/config.toml"),
        "[identities.ci]\nkind = \"github-actions\"\naudience = \"mayfly\"\n",
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let request_token = secret("", "actions-request-token");
    let vars = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", format!("http://127.0.0.1:{port}/token?api-version=2.0")),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token.clone()),
    ];

    // Without `--fetch-identity`: configured, shown by the endpoint's host, and no request.
    listener.set_nonblocking(true).unwrap();
    let out = f.doctor(&["--json"], &vars);
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "a request was made");
    let report = parse_report(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let source = &report["identity"]["sources"][0];
    assert_eq!((source["kind"].as_str(), source["available"].as_bool()), (Some("github-actions"), Some(true)));
    assert_eq!(source["source"], format!("127.0.0.1:{port}"));
    assert_eq!(source["claims"], Value::Null);

    // With it: one request for the identity's audience, and the token's claims.
    listener.set_nonblocking(false).unwrap();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let token = jwt(&serde_json::json!({
        "iss": "https://token.actions.githubusercontent.com",
        "sub": "repo:org/app:environment:prod",
        "aud": "mayfly",
        "exp": exp,
        "repository": "org/app",
        "environment": "prod",
        "jti": secret("", "actions-jti"),
    }));
    let server = serve_once(listener, token.clone());
    let out = f.doctor(&["--json", "--fetch-identity"], &vars);
    let head = server.join().unwrap();
    assert!(head.starts_with("GET /token?api-version=2.0&audience=mayfly HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!("authorization: bearer {}", request_token.to_ascii_lowercase()))
    );
    assert_never_printed(&out, &[token, request_token]);
    let report = parse_report(&out);
    let claims = &report["identity"]["sources"][0]["claims"];
    assert_eq!(claims["subject"], "repo:org/app:environment:prod", "{report:#}");
    assert_eq!(claims["ci"]["environment"], "prod");
}
