//! The `gcp-sts` exchange through the docker helper, for Artifact Registry: Google's STS
//! and IAM credentials stand-in records each request; the tests read the recording.

use mayfly_devstack::GcpSts;
use mayfly_tests::{Stack, bin, mayfly_lines};
use serde_json::Value;

const PROVIDER: &str =
    "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/ci/providers/github";
const ACCOUNT: &str = "deploy@my-project.iam.gserviceaccount.com";
const REGISTRY: &str = "europe-docker.pkg.dev";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A stack, the stand-in admitting `repository`, and a docker route for Artifact Registry
/// through a `gcp-sts` exchange with these extra settings (`{iam}`: the stand-in's URL).
fn setup(repository: &str, settings: &str) -> (Stack, GcpSts) {
    let stack = Stack::builder().start();
    let gcp = GcpSts::start(stack.runtime(), &stack.ca, &stack.issuer, PROVIDER, repository, &[ACCOUNT]).unwrap();
    stack.write_config(&format!(
        "[exchanges.gcp]\nkind = \"gcp-sts\"\ntoken_endpoint = \"{base}/v1/token\"\nca_file = \"{ca}\"\n\
         workload_provider = \"{PROVIDER}\"\n{settings}\n\n\
         [[routes]]\ntool = \"oci\"\nhost = \"{REGISTRY}\"\nidentity = \"ci\"\nexchange = \"gcp\"\nttl = \"10m\"\n",
        base = gcp.base_url,
        ca = stack.ca.ca_cert.display(),
        settings = settings.replace("{iam}", &gcp.base_url),
    ));
    (stack, gcp)
}

fn docker_get(stack: &Stack) -> std::process::Output {
    assert_cmd::Command::new(bin("docker-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin(REGISTRY)
        .output()
        .unwrap()
}

fn answer(stack: &Stack) -> Value {
    let out = docker_get(stack);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON answer")
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The STS request as Google documents it: form-encoded, no `Authorization`, the
/// provider as audience, an ID token for the provider's default audience.
fn assert_sts_request(request: &mayfly_devstack::RecordedRequest) -> Vec<(String, String)> {
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/token"));
    assert_eq!(request.header("authorization"), None, "no Authorization header at STS");
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    let form = form(&request.body);
    assert_eq!(field(&form, "grant_type"), Some("urn:ietf:params:oauth:grant-type:token-exchange"));
    assert_eq!(field(&form, "audience"), Some(PROVIDER));
    assert_eq!(field(&form, "scope"), Some(CLOUD_PLATFORM));
    assert_eq!(field(&form, "requested_token_type"), Some("urn:ietf:params:oauth:token-type:access_token"));
    assert_eq!(field(&form, "subject_token_type"), Some("urn:ietf:params:oauth:token-type:jwt"));
    assert_eq!(request.id_token_audience, Some(Value::String(format!("https:{PROVIDER}"))));
    form
}

#[test]
fn artifact_registry_gets_an_impersonated_service_account_token_as_oauth2accesstoken() {
    let (stack, gcp) = setup("org/app", &format!("service_account = \"{ACCOUNT}\"\niam_endpoint = \"{{iam}}\""));

    let answer = answer(&stack);
    assert_eq!(answer["ServerURL"], REGISTRY);
    assert_eq!(answer["Username"], "oauth2accesstoken");
    assert!(answer["Secret"].as_str().is_some_and(|s| s.starts_with("ya29.sa-")), "the service account's token");

    let requests = gcp.requests();
    assert_eq!(requests.len(), 2, "STS, then generateAccessToken");
    let form = assert_sts_request(&requests[0]);
    assert_eq!(field(&form, "options"), None, "no options without a boundary");
    let impersonation = &requests[1];
    assert_eq!(impersonation.path, format!("/v1/projects/-/serviceAccounts/{ACCOUNT}:generateAccessToken"));
    assert_eq!(impersonation.header("authorization"), Some("Bearer federated"), "the federated token, as Bearer");
    assert_eq!(impersonation.json(), serde_json::json!({"scope": [CLOUD_PLATFORM], "lifetime": "600s"}));

    let issued = stack.client_audit().into_iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!((issued["tool"].as_str(), issued["scope"].as_str()), (Some("oci"), Some(CLOUD_PLATFORM)));
    let expires = issued["expires"].as_str().unwrap();
    assert!(!expires.is_empty(), "expireTime was read: {issued}");
}

#[test]
fn a_credential_access_boundary_goes_to_sts_as_a_json_string_in_options() {
    let boundary = r#"{"accessBoundary": {"accessBoundaryRules": [{"availableResource": "//storage.googleapis.com/projects/_/buckets/builds", "availablePermissions": ["inRole:roles/storage.objectViewer"]}]}}"#;
    let (stack, gcp) = setup("org/app", &format!("access_boundary = '{boundary}'"));
    let answer = answer(&stack);
    assert!(answer["Secret"].as_str().is_some_and(|s| s.starts_with("ya29.federated-")), "the federated token itself");
    let requests = gcp.requests();
    assert_eq!(requests.len(), 1, "no impersonation without a service account");
    let form = assert_sts_request(&requests[0]);
    let options = field(&form, "options").expect("options sent");
    let sent: Value = serde_json::from_str(options).expect("options is a JSON document in a string");
    assert_eq!(sent, serde_json::from_str::<Value>(boundary).unwrap());
}

#[test]
fn a_token_the_attribute_condition_rejects_is_invalid_grant_on_one_line() {
    let (stack, gcp) = setup("org/other", "");
    let out = docker_get(&stack);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("ya29."));
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(
            "exchange `gcp` refused: invalid_grant: The given credential is rejected by the attribute condition."
        ),
        "{lines:?}"
    );
    assert_eq!(gcp.requests().len(), 1);
}
