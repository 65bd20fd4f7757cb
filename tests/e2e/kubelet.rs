//! `mayfly-kubelet-credential`, run as the kubelet runs it, against the real distribution
//! registry with token auth pointing at `mayfly-sts`; skopeo pulls with its answers.

use std::process::Output;

use mayfly_tests::{Stack, bin, require_tool};
use serde_json::{Value, json};

use crate::oci::{Registry, client, configure, ok, push_hello};

const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";

/// The provider with this request on stdin, in the stack's environment.
fn provide(stack: &Stack, request: &str) -> Output {
    assert_cmd::Command::new(bin("mayfly-kubelet-credential"))
        .env_clear()
        .envs(stack.env())
        .write_stdin(request)
        .output()
        .unwrap()
}

fn request(image: &str, service_account_token: Option<&str>) -> String {
    let mut request = json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest", "image": image});
    if let Some(token) = service_account_token {
        request["serviceAccountToken"] = json!(token);
        request["serviceAccountAnnotations"] = json!({"mayfly.example/role": "puller"});
    }
    request.to_string()
}

/// The provider's answer, which must be a well-formed response.
fn answer(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["apiVersion"], API_VERSION);
    assert_eq!(answer["kind"], "CredentialProviderResponse");
    assert_eq!(answer["cacheKeyType"], "Image");
    answer
}

/// `(username, password)` of the answer's entry for `key`.
fn credentials(answer: &Value, key: &str) -> (String, String) {
    let auth = answer["auth"].as_object().unwrap();
    assert_eq!(auth.keys().collect::<Vec<_>>(), [key], "{:?}", auth.keys());
    let entry = &auth[key];
    (entry["username"].as_str().unwrap().to_owned(), entry["password"].as_str().unwrap().to_owned())
}

/// Seconds of a Go duration the provider writes (`840s`).
fn seconds(duration: &Value) -> i64 {
    duration.as_str().and_then(|d| d.strip_suffix('s')).and_then(|d| d.parse().ok()).unwrap()
}

fn skopeo_inspect(stack: &Stack, image: &str, username: &str, password: &str) -> Value {
    let creds = format!("{username}:{password}");
    let out =
        client(stack, "skopeo", &["inspect", "--tls-verify=false", "--creds", &creds, &format!("docker://{image}")]);
    serde_json::from_str(&ok(&out)).unwrap()
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn skopeo_pulls_with_the_credentials_the_kubelet_provider_answers() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let stack = Stack::builder().git().oci().start();
    let registry = Registry::start(&stack);
    let (auth, _) = configure(&stack, &registry, "\"read\", \"write\"");
    let image = push_hello(&stack, &registry, &auth);

    let answer = answer(&provide(&stack, &request(&image, None)));
    let (username, password) = credentials(&answer, &format!("{}/test/hello", registry.host));
    assert_eq!(username, "mayfly");
    let issued: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["tool"] == "oci").collect();
    let last = issued.last().unwrap();
    assert_eq!((&last["outcome"], &last["operation"]), (&json!("issued"), &json!("read")), "{last}");
    assert_eq!(last["target"], format!("https://{}/test/hello", registry.host));
    // The kubelet reuses the answer for less than the token lives.
    let expires =
        time::OffsetDateTime::parse(last["expires"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    let left = expires.unix_timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    let cache = seconds(&answer["cacheDuration"]);
    assert!(cache > 0 && cache < left, "cacheDuration {cache}s, token left {left}s");

    let inspected = skopeo_inspect(&stack, &image, &username, &password);
    assert!(inspected["Digest"].as_str().unwrap().starts_with("sha256:"));
    // A read token: the registry refuses a push with it.
    let layout = crate::oci::image_layout(&stack.dir.path().join("again"));
    let creds = format!("{username}:{password}");
    let push = client(
        &stack,
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{}/test/hello:v2", registry.host),
        ],
    );
    assert!(!push.status.success(), "pushed with a pull token");
    let stderr = String::from_utf8_lossy(&push.stderr);
    assert!(!stderr.contains(&password), "the token was echoed");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn each_service_account_token_is_exchanged_for_its_own_registry_token() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let stack = Stack::builder().git().oci().start();
    let registry = Registry::start(&stack);
    let (auth, _) = configure(&stack, &registry, "\"read\", \"write\"");
    let image = push_hello(&stack, &registry, &auth);
    let key = format!("{}/test/hello", registry.host);
    // Two pods' service account tokens, as the kubelet requests them for the provider.
    let pod = |sub: &str| stack.issuer.mint("mayfly-sts", &json!({"sub": sub}));
    let (team_a, team_b) = (pod("system:serviceaccount:team-a:puller"), pod("system:serviceaccount:team-b:puller"));

    let exchanges_before = stack.sts_issued();
    let a = credentials(&answer(&provide(&stack, &request(&image, Some(&team_a)))), &key);
    let b = credentials(&answer(&provide(&stack, &request(&image, Some(&team_b)))), &key);
    assert!(a.1 != b.1, "team-b was served team-a's token");
    assert_eq!(stack.sts_issued(), exchanges_before + 2, "one exchange per service account");
    // The same pod again: its own cached token, no exchange.
    let again = credentials(&answer(&provide(&stack, &request(&image, Some(&team_a)))), &key);
    assert!(again.1 == a.1, "team-a's second pull got another token");
    assert_eq!(stack.sts_issued(), exchanges_before + 2);

    let lines: Vec<(String, String)> = stack
        .client_audit()
        .iter()
        .filter(|l| l["tool"] == "oci" && l["operation"] == "read")
        .map(|l| (l["outcome"].as_str().unwrap().to_owned(), l["subject"].as_str().unwrap_or("").to_owned()))
        .collect();
    let tail: Vec<(&str, &str)> = lines[lines.len() - 3..].iter().map(|(o, s)| (o.as_str(), s.as_str())).collect();
    assert_eq!(
        tail,
        [
            ("issued", "system:serviceaccount:team-a:puller"),
            ("issued", "system:serviceaccount:team-b:puller"),
            ("cache-hit", "system:serviceaccount:team-a:puller"),
        ]
    );
    let sts_subjects: Vec<String> = stack
        .sts_audit()
        .iter()
        .filter_map(|l| l["subject"].as_str().filter(|s| s.starts_with("system:serviceaccount:")).map(str::to_owned))
        .collect();
    assert!(
        sts_subjects.iter().any(|s| s.contains("team-a")) && sts_subjects.iter().any(|s| s.contains("team-b")),
        "the exchange saw each pod's service account: {sts_subjects:?}"
    );
    for (username, password) in [a, b] {
        assert!(skopeo_inspect(&stack, &image, &username, &password)["Digest"].is_string());
    }
    stack.assert_no_tokens_on_disk();
}

#[test]
fn unrouted_images_get_an_empty_auth_and_bad_requests_one_line() {
    let stack = Stack::builder().git().oci().start();
    for image in ["registry.example.com/team/app:v1", "nginx:1.27", "docker.io/library/busybox@sha256:0123abcd"] {
        let out = provide(&stack, &request(image, None));
        assert_eq!(answer(&out)["auth"], json!({}), "{image}");
        assert!(out.stderr.is_empty(), "{image}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let secret = stack.issuer.mint("mayfly-sts", &Value::Null);
    for (input, says) in [
        ("{\"apiVersion\": ".to_owned(), "not a CredentialProviderRequest"),
        (
            json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1beta1", "kind": "CredentialProviderRequest",
                "image": "r.example/a", "serviceAccountToken": secret})
            .to_string(),
            "apiVersion `credentialprovider.kubelet.k8s.io/v1beta1` is not supported",
        ),
        (request("r.example/Bad Name", Some(&secret)), "`image` is not an image reference"),
    ] {
        let out = provide(&stack, &input);
        assert_eq!(out.status.code(), Some(1), "{input}");
        assert!(out.stdout.is_empty(), "{input}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("mayfly: kubelet credential request refused: ") && stderr.contains(says),
            "{stderr}"
        );
        assert!(!stderr.contains(&secret), "the token was echoed");
    }
    assert!(stack.client_audit().is_empty(), "nothing was asked of a route");
}
