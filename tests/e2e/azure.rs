//! The `azure` exchange through the docker helper, for Azure Container Registry: Entra ID's
//! token endpoint with the ID token as a federated client assertion, then ACR's own
//! exchange; the stand-in records each request and the tests read the recording.

use mayfly_devstack::{AZURE_TOKEN_EXCHANGE_AUDIENCE, AzureStandIn, RecordedRequest};
use mayfly_tests::{Stack, bin, mayfly_lines};
use serde_json::Value;

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const ACR_SCOPE: &str = "https://management.core.windows.net/.default";

/// A stack, the stand-in whose federated credential names `subject`, and a docker route
/// for the stand-in's registry through an `azure` exchange.
fn setup(subject: &str) -> (Stack, AzureStandIn) {
    let stack = Stack::builder().start();
    let azure = AzureStandIn::start(stack.runtime(), &stack.ca, &stack.issuer, TENANT, CLIENT_ID, subject).unwrap();
    stack.write_config(&format!(
        "[exchanges.azure]\nkind = \"azure\"\ntoken_endpoint = \"{base}\"\nca_file = \"{ca}\"\n\
         tenant = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\n\n\
         [[routes]]\ntool = \"oci\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"azure\"\n",
        base = azure.base_url,
        ca = stack.ca.ca_cert.display(),
        host = azure.host(),
    ));
    (stack, azure)
}

fn docker_get(stack: &Stack, registry: &str) -> std::process::Output {
    assert_cmd::Command::new(bin("docker-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin(registry.to_owned())
        .output()
        .unwrap()
}

fn form(request: &RecordedRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn acr_gets_a_refresh_token_from_an_entra_token_minted_with_the_id_token_as_assertion() {
    let (stack, azure) = setup("repo:org/app:ref:refs/heads/main");
    let out = docker_get(&stack, azure.host());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["Username"], "00000000-0000-0000-0000-000000000000");
    assert!(answer["Secret"].as_str().is_some_and(|s| s.starts_with("acr-refresh-")), "ACR's refresh token");

    let requests = azure.requests();
    assert_eq!(requests.len(), 2, "Entra ID, then ACR");
    let entra = &requests[0];
    assert_eq!(entra.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(entra.header("authorization"), None);
    assert_eq!(entra.header("content-type"), Some("application/x-www-form-urlencoded"));
    let sent = form(entra);
    assert_eq!(field(&sent, "client_id"), Some(CLIENT_ID));
    assert_eq!(field(&sent, "grant_type"), Some("client_credentials"));
    assert_eq!(field(&sent, "client_assertion_type"), Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"));
    assert_eq!(field(&sent, "scope"), Some(ACR_SCOPE));
    assert_eq!(entra.id_token_audience, Some(Value::String(AZURE_TOKEN_EXCHANGE_AUDIENCE.into())));

    let acr = &requests[1];
    assert_eq!(acr.path, "/oauth2/exchange");
    let sent = form(acr);
    assert_eq!(field(&sent, "grant_type"), Some("access_token"));
    assert_eq!(field(&sent, "service"), Some(azure.host()));
    assert_eq!(field(&sent, "tenant"), Some(TENANT));
    assert!(field(&sent, "access_token").is_some_and(|t| azure.minted_by_entra(t)), "the Entra token goes to ACR");

    let issued = stack.client_audit().into_iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!((issued["tool"].as_str(), issued["scope"].as_str()), (Some("oci"), Some(ACR_SCOPE)));
}

#[test]
fn no_matching_federated_credential_is_one_line_without_entras_trace_ids() {
    let (stack, azure) = setup("repo:org/other:ref:refs/heads/main");
    let out = docker_get(&stack, azure.host());
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("exchange `azure` refused: invalid_client: AADSTS70021: No matching federated identity record found for presented assertion."),
        "{lines:?}"
    );
    assert!(!lines[0].contains("Trace ID"), "{lines:?}");
    assert_eq!(azure.requests().len(), 1, "no ACR exchange after a refusal");
}
