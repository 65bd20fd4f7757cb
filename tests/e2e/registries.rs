//! Registries that take the workload's ID token at their own endpoint: Docker Hub's OIDC
//! connections, Hugging Face's trusted publishers, JFrog Artifactory, Cloudsmith and
//! GitLab's token exchange, each
//! against a loopback stand-in that verifies the ID token for real and records what it
//! was sent.

use std::collections::BTreeMap;
use std::process::Output;

use mayfly_core::{ExchangeEntry, RouteEntry};
use mayfly_devstack::{
    Artifactory, Cloudsmith, DOCKER_HUB_AUDIENCE, DOCKER_HUB_REGISTRY_ISSUER, DockerHub, GitlabExchange,
    HUGGING_FACE_AUDIENCE, HuggingFaceHub,
};
use mayfly_tests::{Stack, bin, mayfly_lines, require_tool, routes_toml};
use serde_json::Value;

/// The `sub` of the stack's ID tokens.
const SUBJECT: &str = "repo:org/app:ref:refs/heads/main";
/// A Docker Hub connection.
const CONNECTION: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";

/// An exchange of `kind` at `endpoint`, trusting the stack's CA, with these settings.
fn exchange(stack: &Stack, kind: &str, endpoint: &str, settings: &[(&str, &str)]) -> ExchangeEntry {
    ExchangeEntry {
        kind: kind.into(),
        token_endpoint: Some(endpoint.into()),
        ca_file: Some(stack.ca.ca_cert.clone()),
        timeout: Some("5s".into()),
        settings: settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

/// A route of `tool` at `host` through `exchange`, for the identity `ci`.
fn route(tool: &str, host: &str, exchange: &str) -> RouteEntry {
    RouteEntry {
        tool: tool.into(),
        host: Some(host.into()),
        identity: "ci".into(),
        exchange: exchange.into(),
        ..Default::default()
    }
}

/// Writes the client config: the stack's own, these exchanges and these routes.
fn configure(stack: &Stack, exchanges: Vec<(&str, ExchangeEntry)>, routes: Vec<RouteEntry>) {
    let mut config = stack.base_config();
    for (name, entry) in exchanges {
        config.exchanges.insert(name.into(), entry);
    }
    stack.write_config_text(&format!("{}\n{}", config.to_toml(), routes_toml(routes)));
}

/// `docker-credential-mayfly get` for a server, as docker asks.
fn docker_get(stack: &Stack, server: &str) -> Output {
    assert_cmd::Command::new(bin("docker-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin(server)
        .output()
        .expect("the helper runs")
}

/// The helper's answer: (user name, secret).
fn docker_credentials(stack: &Stack, server: &str) -> (String, String) {
    let out = docker_get(stack, server);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    assert_eq!(answer["ServerURL"], server);
    (answer["Username"].as_str().unwrap().to_owned(), answer["Secret"].as_str().unwrap().to_owned())
}

/// A refused exchange reaches the user as one line naming the exchange and the
/// registry's own words.
fn assert_one_refusal_line(stderr: &[u8], exchange: &str, words: &str) {
    let lines = mayfly_lines(stderr);
    assert_eq!(lines.len(), 1, "{}", String::from_utf8_lossy(stderr));
    assert!(lines[0].contains(&format!("exchange `{exchange}` refused: {words}")), "{lines:?}");
}

/// The audit lines' outcomes.
fn outcomes(stack: &Stack) -> Vec<String> {
    stack.client_audit().iter().map(|l| l["outcome"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn docker_hub_trades_the_id_token_for_an_organisation_token_that_docker_signs_in_with() {
    let stack = Stack::builder().start();
    let hub = DockerHub::start(stack.runtime(), &stack.ca, &stack.issuer).expect("Docker Hub");
    hub.connect(CONNECTION, "acme", SUBJECT);
    let settings = [("connection_id", CONNECTION), ("organisation", "acme"), ("lifetime", "10m")];
    configure(
        &stack,
        vec![
            ("hub", exchange(&stack, "docker-hub", &hub.token_url(), &settings)),
            (
                "stranger",
                exchange(&stack, "docker-hub", &hub.token_url(), &[("connection_id", &CONNECTION.replace('3', "4"))]),
            ),
        ],
        vec![
            route("oci", "index.docker.io", "hub"),
            RouteEntry { username: Some("acme".into()), ..route("oci", "registry.acme.test", "stranger") },
        ],
    );
    let server = "https://index.docker.io/v1/";
    let (user, secret) = docker_credentials(&stack, server);
    assert_eq!(user, "acme", "docker signs in as the organisation");
    assert_eq!(hub.organisation_of(&secret).as_deref(), Some("acme"), "the token Docker minted reaches docker");
    assert_eq!(docker_credentials(&stack, server), (user, secret.clone()), "the second ask is served from the cache");

    let requests = hub.requests();
    assert_eq!(requests.len(), 1, "one exchange");
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/oauth/token"));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(request.header("authorization"), None, "the ID token is the only credential");
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&request.body).into_owned().collect();
    let keys: Vec<&str> = form.keys().map(String::as_str).collect();
    assert_eq!(keys, ["connection_id", "expires_in", "grant_type", "subject_token", "subject_token_type"]);
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(form["subject_token_type"], "urn:ietf:params:oauth:token-type:id_token");
    assert_eq!((form["connection_id"].as_str(), form["expires_in"].as_str()), (CONNECTION, "600"));
    assert_eq!(request.id_token_audience, Some(Value::from(DOCKER_HUB_AUDIENCE)));
    assert_eq!(outcomes(&stack), ["issued", "cache-hit"]);
    let audit = std::fs::read_to_string(stack.home.join(".local/state/mayfly/audit.jsonl")).unwrap();
    assert!(!audit.contains(&secret), "no token in the audit log");

    // A connection Docker does not know: its message, on one line.
    let out = docker_get(&stack, "registry.acme.test");
    assert!(!out.status.success());
    assert_one_refusal_line(&out.stderr, "stranger", "connection not found");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("eyJ"), "no token in the message");
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn skopeo_pushes_to_a_registry_that_trusts_docker_hubs_token_service_with_the_organisations_token() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let stack = Stack::builder().oci().start();
    let hub = DockerHub::start(stack.runtime(), &stack.ca, &stack.issuer).expect("Docker Hub");
    hub.connect(CONNECTION, "acme", SUBJECT);
    let registry = super::oci::Registry::start_with(
        &stack,
        &hub.registry_token_url(),
        DOCKER_HUB_REGISTRY_ISSUER,
        &hub.registry_certificate_pem(),
    );
    let settings = [("connection_id", CONNECTION), ("organisation", "acme")];
    configure(
        &stack,
        vec![("hub", exchange(&stack, "docker-hub", &hub.token_url(), &settings))],
        vec![RouteEntry {
            operations: Some(vec!["read".into(), "write".into()]),
            ..route("oci", &registry.host, "hub")
        }],
    );
    let auth = stack.dir.path().join("auth.json");
    std::fs::write(&auth, serde_json::json!({"credHelpers": {registry.host.clone(): "mayfly"}}).to_string()).unwrap();
    let layout = super::oci::image_layout(stack.dir.path());
    let image = format!("docker://{}/acme/app:v1", registry.host);
    let authfile = auth.to_str().unwrap();
    let copy = super::oci::client(
        &stack,
        "skopeo",
        &["copy", "--dest-tls-verify=false", "--authfile", authfile, &format!("oci:{}:v1", layout.display()), &image],
    );
    assert!(copy.status.success(), "{}", String::from_utf8_lossy(&copy.stderr));
    let inspect =
        super::oci::client(&stack, "skopeo", &["inspect", "--tls-verify=false", "--authfile", authfile, &image]);
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let inspected: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(inspected["Digest"].as_str().unwrap().starts_with("sha256:"));

    let requests = hub.requests();
    let exchanges: Vec<_> = requests.iter().filter(|r| r.path == "/oauth/token").collect();
    assert!(!exchanges.is_empty());
    for request in &exchanges {
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(&request.body).into_owned().collect();
        assert_eq!((form["connection_id"].as_str(), form["expires_in"].as_str()), (CONNECTION, "300"));
        assert_eq!(request.id_token_audience, Some(Value::from(DOCKER_HUB_AUDIENCE)));
    }
    // skopeo took the organisation and Docker's token to the registry's token service.
    let token_requests: Vec<_> = requests.iter().filter(|r| r.path == "/token").collect();
    assert!(
        token_requests.iter().any(|r| r.query.as_deref().unwrap_or("").contains("acme%2Fapp%3Apull%2Cpush")
            || r.query.as_deref().unwrap_or("").contains("acme/app:pull,push")),
        "{token_requests:?}"
    );
    assert!(token_requests.iter().all(|r| r.header("authorization").is_some_and(|a| a.starts_with("Basic "))));
    let issued: Vec<String> = stack
        .client_audit()
        .iter()
        .filter(|l| l["outcome"] == "issued")
        .map(|l| l["operation"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(issued.contains(&"write".to_owned()), "skopeo copy asked to write: {issued:?}");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn hugging_face_trusted_publishers_let_git_clone_and_push_one_hub_repository() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().start();
    let hub = HuggingFaceHub::start(stack.runtime(), stack.dir.path().join("hub"), &stack.ca, &stack.issuer)
        .expect("the Hub");
    hub.create_repo("acme/model", SUBJECT, false).unwrap();
    hub.create_repo("datasets/acme/data", SUBJECT, true).unwrap();
    hub.create_repo("acme/other", "repo:someone/else:ref:refs/heads/main", false).unwrap();
    configure(
        &stack,
        vec![("hf", exchange(&stack, "huggingface", &hub.token_url(), &[]))],
        vec![route("git", hub.host(), "hf")],
    );
    stack.wire_git(&hub.base_url);

    stack.git_ok(&stack.work, &["clone", &format!("{}/acme/model", hub.base_url), "model"]);
    let model = stack.work.join("model");
    stack.commit_file(&model, "weights.txt");
    stack.git_ok(&model, &["push", "origin", "main"]);
    let log = std::process::Command::new("git")
        .args(["--git-dir", &hub.root.join("acme/model").display().to_string(), "log", "--oneline"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("weights.txt"), "the push reached the Hub");

    // A read-only publisher's token reads the dataset and cannot push to it.
    stack.git_ok(&stack.work, &["clone", &format!("{}/datasets/acme/data", hub.base_url), "data"]);
    let data = stack.work.join("data");
    stack.commit_file(&data, "rows.txt");
    assert!(!stack.git(&data, &["push", "origin", "main"]).status.success(), "a read-only token cannot push");

    let exchanges: Vec<_> = hub.requests().into_iter().filter(|r| r.path == "/oauth/token").collect();
    assert!(!exchanges.is_empty());
    let mut resources = Vec::new();
    for request in &exchanges {
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = request.json();
        let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["grant_type", "resource", "subject_token", "subject_token_type"]);
        assert_eq!(body["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
        assert_eq!(body["subject_token_type"], "urn:ietf:params:oauth:token-type:id_token");
        assert_eq!(request.id_token_audience, Some(Value::from(HUGGING_FACE_AUDIENCE)));
        resources.push(body["resource"].as_str().unwrap().to_owned());
    }
    resources.dedup();
    assert_eq!(resources, ["acme/model", "datasets/acme/data"], "the resource is the repository git asked for");
    let audit = stack.client_audit();
    assert!(audit.iter().any(|l| l["outcome"] == "issued" && l["scope"] == "acme/model"), "{audit:?}");
    let audit_text = std::fs::read_to_string(stack.home.join(".local/state/mayfly/audit.jsonl")).unwrap();
    assert!(!audit_text.contains("hf_jwt_"), "no Hub token in the audit log");
    stack.assert_no_tokens_on_disk();

    // No publisher of acme/other matches: the Hub's `invalid_grant`, on one line.
    let out = stack.git(&stack.work, &["clone", &format!("{}/acme/other", hub.base_url), "other"]);
    assert!(!out.status.success());
    assert_one_refusal_line(&out.stderr, "hf", "invalid_grant");
}

#[test]
fn jfrog_trades_the_id_token_at_the_platforms_oidc_integration_for_an_oci_route() {
    let stack = Stack::builder().start();
    let artifactory = Artifactory::start(stack.runtime(), &stack.ca, &stack.issuer).expect("Artifactory");
    artifactory.integrate("github", &artifactory.base_url, SUBJECT, "ci-deployer");
    configure(
        &stack,
        vec![
            ("art", exchange(&stack, "jfrog", &artifactory.token_url(), &[("provider_name", "github")])),
            ("art-typo", exchange(&stack, "jfrog", &artifactory.token_url(), &[("provider_name", "githbu")])),
        ],
        vec![
            RouteEntry { username: Some("ci-deployer".into()), ..route("oci", "acme.jfrog.io", "art") },
            route("oci", "typo.jfrog.io", "art-typo"),
        ],
    );
    let (user, secret) = docker_credentials(&stack, "acme.jfrog.io");
    assert_eq!(user, "ci-deployer");
    assert_eq!(artifactory.user_of(&secret).as_deref(), Some("ci-deployer"), "Artifactory's token reaches docker");
    assert_eq!(docker_credentials(&stack, "acme.jfrog.io").1, secret, "cached for its `expires_in`");

    let requests = artifactory.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/access/api/v1/oidc/token"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["grant_type", "provider_name", "subject_token", "subject_token_type"]);
    assert_eq!(body["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(body["subject_token_type"], "urn:ietf:params:oauth:token-type:id_token");
    assert_eq!(body["provider_name"], "github");
    assert_eq!(request.id_token_audience, Some(Value::from(artifactory.base_url.clone())));
    assert_eq!(outcomes(&stack), ["issued", "cache-hit"]);

    let out = docker_get(&stack, "typo.jfrog.io");
    assert!(!out.status.success());
    assert_one_refusal_line(&out.stderr, "art-typo", "OIDC integration 'githbu' not found");
}

#[test]
fn cloudsmith_trades_the_id_token_for_a_service_accounts_token_for_an_oci_route() {
    let stack = Stack::builder().start();
    let cloudsmith = Cloudsmith::start(stack.runtime(), &stack.ca, &stack.issuer).expect("Cloudsmith");
    cloudsmith.add_service("acme", "ci-publisher", &cloudsmith.base_url, SUBJECT);
    configure(
        &stack,
        vec![
            (
                "cs",
                exchange(
                    &stack,
                    "cloudsmith",
                    &cloudsmith.openid_url(),
                    &[("owner", "acme"), ("service_slug", "ci-publisher")],
                ),
            ),
            (
                "cs-other",
                exchange(
                    &stack,
                    "cloudsmith",
                    &cloudsmith.openid_url(),
                    &[("owner", "acme"), ("service_slug", "nobody")],
                ),
            ),
        ],
        vec![route("oci", "docker.cloudsmith.io", "cs"), route("oci", "other.cloudsmith.io", "cs-other")],
    );
    let (user, secret) = docker_credentials(&stack, "docker.cloudsmith.io");
    assert_eq!(user, "ci-publisher", "the service account's slug is the user name");
    assert_eq!(cloudsmith.service_of(&secret).as_deref(), Some("ci-publisher"), "Cloudsmith's token reaches docker");
    assert_eq!(docker_credentials(&stack, "docker.cloudsmith.io").1, secret, "cached until the token's `exp`");

    let requests = cloudsmith.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v2/openid/acme"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["oidc_token", "service_slug"]);
    assert_eq!(body["service_slug"], "ci-publisher");
    assert_eq!(request.id_token_audience, Some(Value::from(cloudsmith.base_url.clone())));
    assert_eq!(outcomes(&stack), ["issued", "cache-hit"]);

    let out = docker_get(&stack, "other.cloudsmith.io");
    assert!(!out.status.success());
    assert_one_refusal_line(&out.stderr, "cs-other", "The JWT cannot be created.");
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn twine_uploads_to_an_artifactory_pypi_repository_with_the_platforms_access_token() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::builder().start();
    let artifactory = Artifactory::start(stack.runtime(), &stack.ca, &stack.issuer).expect("Artifactory");
    artifactory.integrate("github", &artifactory.base_url, SUBJECT, "ci-deployer");
    configure(
        &stack,
        vec![("art", exchange(&stack, "jfrog", &artifactory.token_url(), &[("provider_name", "github")]))],
        vec![RouteEntry {
            operations: Some(vec!["publish".into()]),
            username: Some("ci-deployer".into()),
            ..route("pypi", artifactory.host(), "art")
        }],
    );
    let file = super::shims::sdist(&stack, "mayfly-py", "0.1.0");
    let out = std::process::Command::new(bin("mayfly"))
        .args(["exec", "--session", "art-1", "--", "twine", "upload", "--non-interactive", "--disable-progress-bar"])
        .args(["--repository-url", &artifactory.pypi_upload_url("pypi-local")])
        .arg(&file)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("REQUESTS_CA_BUNDLE", &stack.ca.ca_cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        artifactory.uploads(),
        [("ci-deployer".to_owned(), "pypi-local".to_owned(), "mayfly_py-0.1.0.tar.gz".to_owned())]
    );
    let exchanges: Vec<_> =
        artifactory.requests().into_iter().filter(|r| r.path == "/access/api/v1/oidc/token").collect();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].json()["provider_name"], "github");
    let issued: Vec<_> = stack.client_audit().into_iter().filter(|l| l["outcome"] == "issued").collect();
    assert_eq!(issued.len(), 1);
    assert_eq!((issued[0]["tool"].as_str(), issued[0]["operation"].as_str()), (Some("pypi"), Some("publish")));
    stack.assert_no_tokens_on_disk();
}

#[test]
fn gitlab_trades_a_ci_id_token_addressed_to_the_exchange_for_an_artifact_registry_token() {
    let stack = Stack::builder().start();
    let gitlab = GitlabExchange::start(stack.runtime(), &stack.ca, &stack.issuer).expect("GitLab");
    let url = gitlab.exchange_url();
    configure(
        &stack,
        vec![
            ("gl", exchange(&stack, "gitlab", &url, &[("audience", "gitlab-artifact-registry")])),
            ("gl-typo", exchange(&stack, "gitlab", &url, &[("audience", "gitlab-artefact-registry")])),
        ],
        vec![
            RouteEntry { username: Some("ci".into()), ..route("oci", "registry.gitlab.example", "gl") },
            RouteEntry { username: Some("ci".into()), ..route("oci", "typo.gitlab.example", "gl-typo") },
        ],
    );
    let (user, secret) = docker_credentials(&stack, "registry.gitlab.example");
    assert_eq!(user, "ci");
    assert_eq!(
        gitlab.token_for(&secret),
        Some(("gitlab-artifact-registry".to_owned(), "org/app".to_owned())),
        "GitLab's token reaches docker"
    );
    assert_eq!(docker_credentials(&stack, "registry.gitlab.example").1, secret, "cached until the token's `exp`");

    let requests = gitlab.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/v4/token_exchange"));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert!(request.header("authorization").is_some_and(|v| v.starts_with("Bearer ")), "the ID token as bearer");
    assert_eq!(String::from_utf8_lossy(&request.body), "audience=gitlab-artifact-registry");
    // The stand-in verified the ID token's one audience: the exchange URL.
    assert_eq!(outcomes(&stack), ["issued", "cache-hit"]);

    let out = docker_get(&stack, "typo.gitlab.example");
    assert!(!out.status.success());
    assert_one_refusal_line(&out.stderr, "gl-typo", "400 Bad request - audience is invalid");
}
