//! The real npm against a real verdaccio that lets in only mayfly's tokens: publish and
//! install with scoped tokens from `mayfly-sts`, refusals for the wrong scope, audience, key,
//! expiry and revoked tokens, and npm's trusted-publishing exchange.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mayfly_devstack::StsClient;
use mayfly_sts::{Algorithm, SigningKey};
use mayfly_tests::verdaccio::{Verdaccio, require_verdaccio};
use mayfly_tests::{Stack, bin};
use serde_json::{Value, json};

const DEMO: &str = "mayfly-npm-demo";
const SCOPED: &str = "@org/scoped";
const TRUSTED: &str = "@org/trusted";
/// An audience the exchange also mints for: some other registry.
const OTHER_REGISTRY: &str = "http://127.0.0.1:1";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A second `mayfly-sts` whose rules mint npm scopes for one verdaccio (the stack's own
/// exchange knows nothing of npm), with a signing key the test holds to forge tokens.
struct NpmSts {
    child: Child,
    url: String,
    key: SigningKey,
}

impl Drop for NpmSts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stack, an npm exchange and a verdaccio trusting it.
struct Npm {
    verdaccio: Verdaccio,
    sts: NpmSts,
    stack: Stack,
}

impl Npm {
    /// With `introspect`, verdaccio asks the exchange about every token (revocation).
    fn start(introspect: bool, trusted_publishers: &[(&str, &str)]) -> Self {
        let stack = Stack::new();
        let (listener, sts_url) = mayfly_tests::https_listener();
        let client = StsClient::generate(&sts_url, "verdaccio");
        // Verdaccio first: the exchange's rules name its URL, and it reaches the exchange
        // only when a token arrives.
        let verdaccio = Verdaccio::start(
            &stack.dir.path().join("verdaccio"),
            &sts_url,
            &stack.ca.ca_cert,
            stack.issuer.issuer(),
            introspect.then(|| (client.client_id.as_str(), client.client_secret.expose())),
            trusted_publishers,
        );
        let sts = start_npm_sts(&stack, listener, client, &verdaccio.url);
        Self { verdaccio, sts, stack }
    }

    fn http(&self) -> reqwest::blocking::Client {
        self.stack.https_client()
    }

    /// A token from the npm exchange (RFC 8693) for an ID token of the stack's issuer.
    fn mint(&self, audience: &str, scope: &str) -> String {
        mayfly_tests::exchange_token(&self.http(), &self.sts.url, &self.stack.issuer, audience, scope)
    }

    /// A token signed with the exchange's own key: these claims on top of good ones.
    fn forge(&self, overrides: &Value) -> String {
        let mut claims = json!({
            "iss": self.sts.url,
            "sub": "repo:org/app:ref:refs/heads/main",
            "aud": self.verdaccio.url,
            "scope": "npm:*:read",
            "iat": now(),
            "exp": now() + 300,
            "jti": format!("forged-{}", now()),
        });
        for (k, v) in overrides.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.sts.key.sign(Some("JWT"), &claims).unwrap()
    }

    /// The status of `GET /<package>` with this Authorization header.
    fn get(&self, package: &str, authorization: Option<&str>) -> (u16, Value) {
        let mut request = self.http().get(format!("{}/{}", self.verdaccio.url, package.replace('/', "%2f")));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    /// `POST` to the trusted-publishing exchange for `escaped` with this ID token.
    fn exchange(&self, escaped: &str, id_token: Option<&str>) -> (u16, Value) {
        let url = format!("{}/-/npm/v1/oidc/token/exchange/package/{escaped}", self.verdaccio.url);
        let mut request = self.http().post(url);
        if let Some(token) = id_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    /// A project in the work tree with a package.json and an `.npmrc` that points at
    /// verdaccio and takes its token from `$MAYFLY_TEST_NPM_TOKEN` (with `auth`).
    fn project(&self, dir_name: &str, package: &str, version: &str, auth: bool) -> PathBuf {
        let dir = self.stack.work.join(dir_name);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = json!({
            "name": package,
            "version": version,
            "description": "mayfly test package",
            "license": "Apache-2.0",
            "main": "index.js",
        });
        std::fs::write(dir.join("package.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
        std::fs::write(dir.join("index.js"), format!("module.exports = {};\n", json!(package))).unwrap();
        let mut npmrc = format!("registry={}/\n", self.verdaccio.url);
        if auth {
            npmrc += &format!("//{}/:_authToken=${{MAYFLY_TEST_NPM_TOKEN}}\n", self.verdaccio.host);
        }
        std::fs::write(dir.join(".npmrc"), npmrc).unwrap();
        dir
    }

    /// npm in `dir` with a private HOME, cache and user and global config, and the token
    /// (when given) in `$MAYFLY_TEST_NPM_TOKEN`.
    fn npm_command(&self, dir: &Path, args: &[&str], token: Option<&str>) -> Command {
        let root = self.stack.dir.path();
        for file in ["npmrc-user", "npmrc-global"] {
            std::fs::write(root.join(file), "").unwrap();
        }
        let mut command = Command::new("npm");
        command
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.stack.home)
            .env("TMPDIR", root.join("tmp"))
            .env("npm_config_cache", root.join("npm-cache"))
            .env("npm_config_userconfig", root.join("npmrc-user"))
            .env("npm_config_globalconfig", root.join("npmrc-global"))
            .env("npm_config_update_notifier", "false")
            .env("npm_config_audit", "false")
            .env("npm_config_fund", "false")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.env("MAYFLY_TEST_NPM_TOKEN", token);
        }
        command
    }

    fn npm(&self, dir: &Path, args: &[&str], token: Option<&str>) -> Output {
        self.npm_command(dir, args, token).output().expect("npm runs")
    }

    /// Runs npm and fails the test, with npm's output and verdaccio's log, if it fails.
    fn npm_ok(&self, dir: &Path, args: &[&str], token: Option<&str>) -> Output {
        let out = self.npm(dir, args, token);
        assert!(
            out.status.success(),
            "npm {} failed:\n{}{}\n--- verdaccio ---\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.verdaccio.log_text()
        );
        out
    }

    /// Runs npm, which must fail with this npm error code (`E401`, `E403`...).
    fn npm_fails(&self, dir: &Path, args: &[&str], token: Option<&str>, code: &str) -> String {
        let out = self.npm(dir, args, token);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "npm {} succeeded", args.join(" "));
        assert!(stderr.contains(&format!("code {code}")), "npm {}: want {code}, got:\n{stderr}", args.join(" "));
        stderr
    }
}

fn start_npm_sts(stack: &Stack, listener: std::net::TcpListener, client: StsClient, registry: &str) -> NpmSts {
    let dir = stack.dir.path();
    let key = SigningKey::generate(Algorithm::Es256).unwrap();
    let key_file = dir.join("npm-sts-key.pem");
    std::fs::write(&key_file, key.private_pem()).unwrap();
    let rule = |name: &str, audience: &str, scopes: &[&str]| mayfly_sts::RuleEntry {
        name: Some(name.into()),
        issuer: stack.issuer.issuer().into(),
        claims: [("repository".to_owned(), "org/app".to_owned())].into(),
        audiences: vec![audience.into()],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        max_ttl: None,
    };
    let own = [DEMO, SCOPED].map(|name| format!("npm:{name}:publish"));
    let config = mayfly_sts::ConfigFile {
        issuer: client.issuer.clone(),
        audit_log: Some(dir.join("npm-sts-audit.jsonl")),
        signing_key: Some(key_file),
        max_ttl: Some("10m".into()),
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        rules: vec![
            rule(
                "org/app reads npm packages and publishes its own",
                registry,
                &["npm:*:read", &own[0], &own[1], &format!("npm:{DEMO}:read")],
            ),
            rule("org/app reads another registry", OTHER_REGISTRY, &["npm:*:read"]),
        ],
        introspection_clients: vec![client.config_entry()],
        ..Default::default()
    };
    let child = mayfly_tests::spawn_sts_on(dir, "npm-sts", listener, &config);
    NpmSts { child, url: client.issuer, key }
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio"),
    ignore = "needs node, npm, verdaccio: one is not installed"
)]
fn npm_publishes_and_installs_with_tokens_scoped_by_mayfly() {
    if !require_verdaccio() {
        return;
    }
    let npm = Npm::start(true, &[]);
    let publish = npm.mint(&npm.verdaccio.url, &format!("npm:{DEMO}:publish npm:{SCOPED}:publish"));
    let read = npm.mint(&npm.verdaccio.url, "npm:*:read");

    let demo = npm.project("demo", DEMO, "1.0.0", true);
    let out = npm.npm_ok(&demo, &["whoami"], Some(&read));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "repo:org/app:ref:refs/heads/main");
    npm.npm_ok(&demo, &["publish"], Some(&publish));
    let scoped = npm.project("scoped", SCOPED, "1.0.0", true);
    npm.npm_ok(&scoped, &["publish", "--access", "public"], Some(&publish));

    let consumer = npm.project("consumer", "consumer", "1.0.0", true);
    npm.npm_ok(&consumer, &["install", &format!("{DEMO}@1.0.0"), SCOPED], Some(&read));
    for package in [DEMO, SCOPED] {
        let installed = consumer.join("node_modules").join(package).join("package.json");
        let manifest: Value = serde_json::from_slice(&std::fs::read(&installed).unwrap()).unwrap();
        assert_eq!(manifest["version"], "1.0.0", "{package}");
    }
    // Reading needs no read scope of its own when the token publishes something.
    let out = npm.npm_ok(&consumer, &["view", SCOPED, "version"], Some(&publish));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0");
    let one = npm.mint(&npm.verdaccio.url, &format!("npm:{DEMO}:read"));
    npm.npm_ok(&consumer, &["view", DEMO, "version"], Some(&one));
    npm.npm_fails(&consumer, &["view", SCOPED, "version"], Some(&one), "E403");

    // A read token publishes nothing; a publish token only its own packages.
    let next = npm.project("demo-next", DEMO, "1.0.1", true);
    let stderr = npm.npm_fails(&next, &["publish"], Some(&read), "E403");
    assert!(stderr.contains(&format!("token does not allow publish of {DEMO}")), "{stderr}");
    let only_scoped = npm.mint(&npm.verdaccio.url, &format!("npm:{SCOPED}:publish"));
    npm.npm_fails(&next, &["publish"], Some(&only_scoped), "E403");

    // Tokens for another registry, from another exchange, or none at all.
    let elsewhere = npm.mint(OTHER_REGISTRY, "npm:*:read");
    let stderr = npm.npm_fails(&consumer, &["view", DEMO, "version"], Some(&elsewhere), "E401");
    assert!(npm.verdaccio.log_text().contains("token audience is wrong"), "{stderr}");
    let subject = npm.stack.issuer.mint("mayfly-sts", &Value::Null);
    let foreign = npm
        .http()
        .post(format!("{}/token", npm.stack.sts.url))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
            ("audience", npm.stack.git_server().base_url.as_str()),
            ("scope", "repo:org/docs:read"),
        ])
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    npm.npm_fails(&consumer, &["view", DEMO, "version"], Some(&foreign), "E401");
    // npm sends an unset variable's reference as the token itself.
    npm.npm_fails(&consumer, &["view", DEMO, "version"], None, "E401");

    // A revoked token stops working at once.
    let revoked = npm.mint(&npm.verdaccio.url, "npm:*:read");
    npm.npm_ok(&consumer, &["view", DEMO, "version"], Some(&revoked));
    let response = npm.http().post(format!("{}/revoke", npm.sts.url)).form(&[("token", revoked.as_str())]).send();
    assert_eq!(response.unwrap().status(), 200);
    npm.npm_fails(&consumer, &["view", DEMO, "version"], Some(&revoked), "E401");
    assert!(npm.verdaccio.log_text().contains("token has been revoked"));
    npm.npm_ok(&consumer, &["view", DEMO, "version"], Some(&read));

    npm.stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio"),
    ignore = "needs node, npm, verdaccio: one is not installed"
)]
fn verdaccio_checks_signature_claims_and_scopes() {
    if !require_verdaccio() {
        return;
    }
    let npm = Npm::start(true, &[]);
    let bearer = |token: &str| format!("Bearer {token}");
    // The forged tokens are signed with the exchange's own key, so each case tests one claim.
    let (status, body) = npm.get(DEMO, Some(&bearer(&npm.forge(&json!({})))));
    assert_eq!(status, 404, "a good token reads (there is no such package yet): {body}");

    let stranger = SigningKey::generate(Algorithm::Es256).unwrap();
    let claims =
        json!({"iss": npm.sts.url, "sub": "x", "aud": npm.verdaccio.url, "scope": "npm:*:read", "exp": now() + 300});
    let mut tampered: Vec<String> = npm.forge(&json!({})).split('.').map(str::to_owned).collect();
    tampered[1] = URL_SAFE_NO_PAD.encode(
        json!({"iss": npm.sts.url, "sub": "x", "aud": npm.verdaccio.url, "scope": "npm:*:publish", "exp": now() + 300})
            .to_string(),
    );
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let cases = [
        (npm.forge(&json!({"exp": now() - 60, "iat": now() - 400})), "token has expired"),
        (npm.forge(&json!({"nbf": now() + 600})), "token is not valid yet"),
        (npm.forge(&json!({"aud": OTHER_REGISTRY})), "token audience is wrong"),
        (npm.forge(&json!({"aud": format!("{}/", npm.verdaccio.url)})), "token audience is wrong"),
        (npm.forge(&json!({"iss": npm.stack.sts.url})), "token issuer is wrong"),
        (stranger.sign(Some("JWT"), &claims).unwrap(), "token signed by an unknown key"),
        (tampered.join("."), "token signature does not verify"),
        (unsigned, "token algorithm `none` is not accepted"),
        ("not-a-jwt".to_owned(), "token is not a JWT"),
        ("npm_0123456789abcdef".to_owned(), "unknown or expired publish token"),
    ];
    for (token, reason) in cases {
        let (status, body) = npm.get(DEMO, Some(&bearer(&token)));
        assert_eq!((status, body["error"].as_str()), (401, Some(reason)), "{reason}");
    }
    let (status, _) = npm.get(DEMO, None);
    assert_eq!(status, 401, "no token");
    let basic = format!("Basic {}", STANDARD.encode("u:p"));
    assert_eq!(npm.get(DEMO, Some(&basic)).0, 401, "Basic");

    // Verified tokens without the scope the request needs.
    for scope in ["npm:other:read", "repo:org/app:read", "", "npm:*:write"] {
        let (status, body) = npm.get(DEMO, Some(&bearer(&npm.forge(&json!({"scope": scope})))));
        assert_eq!(status, 403, "scope `{scope}`: {body}");
    }
    let (status, body) = npm.get(SCOPED, Some(&bearer(&npm.forge(&json!({"scope": format!("npm:{DEMO}:read")})))));
    assert_eq!(status, 403, "{body}");
    let (status, _) = npm.get(SCOPED, Some(&bearer(&npm.forge(&json!({"scope": format!("npm:{DEMO}:publish")})))));
    assert_eq!(status, 404, "any publish scope reads");
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio"),
    ignore = "needs node, npm, verdaccio: one is not installed"
)]
fn trusted_publishing_exchanges_a_ci_id_token_for_a_publish_token() {
    if !require_verdaccio() {
        return;
    }
    // Without introspection: the plugin then trusts signature and claims alone.
    let npm = Npm::start(false, &[("org/app", TRUSTED), ("org/other", DEMO)]);
    let id_token = npm.stack.issuer.mint("npm:127.0.0.1", &Value::Null);

    let (status, body) = npm.exchange("@org%2ftrusted", Some(&id_token));
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("npm_"), "{token}");
    let (status, body) = npm.exchange("@org%2Ftrusted", Some(&id_token));
    assert_eq!(status, 201, "uppercase %2F: {body}");
    assert_ne!(body["token"].as_str().unwrap(), token, "each exchange hands out a new token");

    let trusted = npm.project("trusted", TRUSTED, "1.0.0", true);
    npm.npm_ok(&trusted, &["publish", "--access", "public"], Some(&token));
    // It publishes that package and nothing else, and reads nothing.
    let other = npm.project("demo", DEMO, "1.0.0", true);
    npm.npm_fails(&other, &["publish"], Some(&token), "E403");
    assert_eq!(npm.get(TRUSTED, Some(&format!("Bearer {token}"))).0, 403);
    let read = npm.mint(&npm.verdaccio.url, "npm:*:read");
    let consumer = npm.project("consumer", "consumer", "1.0.0", true);
    let out = npm.npm_ok(&consumer, &["view", TRUSTED, "version"], Some(&read));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0");

    // No trusted publisher for this repository and package.
    for escaped in [DEMO, "@org%2funknown", "mayfly-unknown"] {
        let (status, body) = npm.exchange(escaped, Some(&id_token));
        assert_eq!(status, 404, "{escaped}: {body}");
        assert_eq!(body, json!({"message": "OIDC token exchange error - package not found"}));
    }
    // ID tokens the exchange must not take.
    let issuer = &npm.stack.issuer;
    let port_audience = format!("npm:{}", npm.verdaccio.host);
    let cases = [
        (issuer.mint(&port_audience, &Value::Null), "token audience is wrong"),
        (issuer.mint("mayfly-sts", &Value::Null), "token audience is wrong"),
        (issuer.mint("npm:127.0.0.1", &json!({"exp": now() - 60, "iat": now() - 400})), "token has expired"),
        (issuer.mint("npm:127.0.0.1", &json!({"iss": "https://evil.example"})), "token issuer is wrong"),
        (npm.mint(&npm.verdaccio.url, "npm:*:read"), "token signed by an unknown key"),
        ("not-a-jwt".to_owned(), "token is not a JWT"),
    ];
    for (bad, reason) in cases {
        let (status, body) = npm.exchange("@org%2ftrusted", Some(&bad));
        assert_eq!(status, 401, "{reason}: {body}");
        assert_eq!(body["message"], format!("OIDC token exchange error - {reason}"));
    }
    assert_eq!(npm.exchange("@org%2ftrusted", None).0, 401);

    // npm runs the same exchange itself in a GitHub Actions job with `id-token: write`:
    // no token configured, only the job's ID token endpoint.
    let next = npm.project("trusted-next", TRUSTED, "1.0.1", false);
    let issued = issuer.issued();
    let mut command = npm.npm_command(&next, &["publish", "--access", "public"], None);
    command
        .env("GITHUB_ACTIONS", "true")
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", issuer.request_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", issuer.request_token());
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "npm publish with trusted publishing failed:\n{}\n--- verdaccio ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        npm.verdaccio.log_text()
    );
    assert_eq!(issuer.issued(), issued + 1, "npm asked the job's issuer for one ID token");
    let out = npm.npm_ok(&consumer, &["view", TRUSTED, "versions", "--json"], Some(&read));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!(["1.0.0", "1.0.1"]));

    npm.stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio"),
    ignore = "needs node, npm, verdaccio: one is not installed"
)]
fn mayfly_exec_publishes_and_installs_through_the_npm_shim_and_revokes_at_exit() {
    if !require_verdaccio() {
        return;
    }
    let npm = Npm::start(true, &[]);
    npm.stack.write_config(&format!(
        "[exchanges.npm-sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"{sts}/token\"\nrevocation_endpoint = \"{sts}/revoke\"\nca_file = \"{ca}\"\n\n[[routes]]\ntool = \"npm\"\nprotocol = \"http\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"npm-sts\"\noperations = [\"read\", \"publish\"]\n",
        sts = npm.sts.url,
        ca = npm.stack.ca.ca_cert.display(),
        host = npm.verdaccio.host,
    ));
    // No token in any .npmrc: the shim supplies it, in npm's environment only.
    npm.project("demo", DEMO, "1.0.0", false);
    let app = npm.project("app", "app", "1.0.0", false);
    let manifest = json!({"name": "app", "version": "1.0.0", "dependencies": {DEMO: "1.0.0"}});
    std::fs::write(app.join("package.json"), manifest.to_string()).unwrap();
    let script = "set -e; cd demo; npm publish; cd ../app; npm install";
    let npm_env = npm.npm_command(&npm.stack.work, &[], None);
    let mut exec = Command::new(bin("mayfly"));
    exec.args(["exec", "--session", "npm-1", "--", "sh", "-c", script]).current_dir(&npm.stack.work);
    exec.env_clear().envs(npm.stack.env());
    for (key, value) in npm_env.get_envs() {
        if let Some(value) = value.filter(|_| key != "PATH") {
            exec.env(key, value);
        }
    }
    let out = exec.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}\n--- verdaccio ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        npm.verdaccio.log_text()
    );
    let installed = npm.stack.work.join("app/node_modules").join(DEMO).join("package.json");
    assert!(installed.is_file(), "the dependency was installed");

    let lines: Vec<Value> = npm.stack.client_audit().into_iter().filter(|l| l["session"] == "npm-1").collect();
    let issued: Vec<&str> =
        lines.iter().filter(|l| l["outcome"] == "issued").map(|l| l["scope"].as_str().unwrap()).collect();
    assert!(issued.contains(&format!("npm:{DEMO}:publish").as_str()), "{issued:?}");
    assert!(issued.contains(&"npm:*:read"), "{issued:?}");
    let argv = &lines.iter().find(|l| l["outcome"] == "issued").unwrap()["process"][0]["argv"];
    assert_eq!(argv[0], "npm", "the shim heads the chain: {argv}");
    assert_eq!(lines.iter().filter(|l| l["outcome"] == "revoked").count(), issued.len());
    // The exchange revoked exactly what it issued (verdaccio refuses revoked tokens: see
    // the first test).
    let audit = mayfly_tests::read_json_lines(&npm.stack.dir.path().join("npm-sts-audit.jsonl"));
    let jtis = |outcome: &str| {
        let mut jtis: Vec<String> =
            audit.iter().filter(|l| l["outcome"] == outcome).map(|l| l["jti"].as_str().unwrap().to_owned()).collect();
        jtis.sort();
        jtis
    };
    assert_eq!(jtis("issued").len(), issued.len());
    assert_eq!(jtis("revoked"), jtis("issued"));

    // A project that plants a FIFO as its `.npmrc` (the shim reads it for the registry)
    // gets one line naming the file, at once: the shim never waits on it, mints nothing.
    let _ = std::fs::remove_file(app.join(".npmrc"));
    nix::unistd::mkfifo(&app.join(".npmrc"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut exec = Command::new(bin("mayfly"));
    exec.args(["exec", "--session", "npm-2", "--", "sh", "-c", "cd app && npm install"]).current_dir(&npm.stack.work);
    exec.env_clear().envs(npm.stack.env());
    for (key, value) in npm_env.get_envs() {
        if let Some(value) = value.filter(|_| key != "PATH") {
            exec.env(key, value);
        }
    }
    let mut child = exec.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the shim waited on a planted FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("mayfly:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(".npmrc") && line.contains("not a regular file"), "{line}");
    let second = npm.stack.client_audit().into_iter().filter(|l| l["session"] == "npm-2").collect::<Vec<_>>();
    assert!(second.iter().all(|l| l["outcome"] != "issued"), "{second:?}");
    npm.stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "npm", missing = "verdaccio"),
    ignore = "needs node, npm, verdaccio: one is not installed"
)]
fn mayfly_exec_publishes_with_npm_trusted_publishing_and_reads_go_without_a_token() {
    if !require_verdaccio() {
        return;
    }
    let npm = Npm::start(false, &[("org/app", TRUSTED)]);
    npm.stack.write_config(&format!(
        "[exchanges.npm-registry]\nkind = \"npm\"\ntoken_endpoint = \"{url}/\"\n\n[[routes]]\ntool = \"npm\"\nprotocol = \"http\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"npm-registry\"\n",
        url = npm.verdaccio.url,
        host = npm.verdaccio.host,
    ));
    npm.project("trusted", TRUSTED, "2.0.0", false);
    let exec = |script: &str| {
        let npm_env = npm.npm_command(&npm.stack.work, &[], None);
        let mut exec = Command::new(bin("mayfly"));
        exec.args(["exec", "--session", "tp-npm", "--", "sh", "-c", script]).current_dir(&npm.stack.work);
        exec.env_clear().envs(npm.stack.env());
        for (key, value) in npm_env.get_envs() {
            if let Some(value) = value.filter(|_| key != "PATH") {
                exec.env(key, value);
            }
        }
        exec.output().unwrap()
    };
    let out = exec("cd trusted && npm publish --access public");
    assert!(
        out.status.success(),
        "{}\n--- verdaccio ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        npm.verdaccio.log_text()
    );
    let read = npm.mint(&npm.verdaccio.url, "npm:*:read");
    let (status, body) = npm.get(TRUSTED, Some(&format!("Bearer {read}")));
    assert_eq!(status, 200);
    assert!(body["versions"]["2.0.0"].is_object(), "{body}");
    let audit = npm.stack.client_audit();
    let issued: Vec<&Value> = audit.iter().filter(|l| l["outcome"] == "issued").collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["operation"], "publish");
    assert_eq!(issued[0]["target"], format!("{}/{TRUSTED}", npm.verdaccio.url));
    // A read on a publish-only route runs npm without a token (and spends no ID token):
    // this registry refuses anonymous reads, as a private one would.
    let before = npm.stack.issuer.issued();
    let out = exec("cd trusted && npm view @org/trusted version");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("E401"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(npm.stack.issuer.issued(), before);
    assert!(!npm.stack.client_audit().iter().any(|l| l["outcome"] == "denied" || l["outcome"] == "failed"));
}
