//! `/.well-known/openid-configuration`: what a `mayfly-sts` supports, with the approval and
//! admin endpoints only where they are configured.

use mayfly_core::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::Stack;
use serde_json::{Value, json};

const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The discovery document of an exchange of its own, with approvers and administrators or not.
fn discovery(stack: &Stack, with_people: bool) -> (String, Value) {
    let (listener, url) = mayfly_tests::https_listener();
    let issuer = stack.issuer.issuer().to_owned();
    let mut config = mayfly_sts::ConfigFile {
        issuer: url.clone(),
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        ..Default::default()
    };
    if with_people {
        config.approvers = vec![mayfly_sts::ApproverEntry {
            name: "release-managers".into(),
            issuer: issuer.clone(),
            ..Default::default()
        }];
        config.administrators = vec![mayfly_sts::AdministratorEntry { issuer, ..Default::default() }];
    }
    let sts = mayfly_sts::Sts::new(mayfly_sts::Config::from_file(config).expect("config"), None).expect("mayfly-sts");
    stack.runtime().spawn(mayfly_sts::serve(sts, listener));
    let response =
        stack.https_client().get(format!("{url}/.well-known/openid-configuration")).send().expect("discovery");
    assert_eq!(response.status(), 200);
    (url, response.json().expect("JSON"))
}

#[test]
fn discovery_advertises_the_exchange_and_only_the_endpoints_configured() {
    let stack = Stack::builder().start();
    let (url, metadata) = discovery(&stack, true);
    assert_eq!(metadata["issuer"], url);
    assert_eq!(metadata["token_endpoint"], format!("{url}/token"));
    assert_eq!(metadata["jwks_uri"], format!("{url}/.well-known/jwks.json"));
    assert_eq!(metadata["grant_types_supported"], json!([TOKEN_EXCHANGE_GRANT]));
    assert_eq!(metadata["token_endpoint_auth_methods_supported"], json!(["none"]));
    assert_eq!(metadata["revocation_endpoint"], format!("{url}/revoke"));
    assert_eq!(metadata["introspection_endpoint"], format!("{url}/introspect"));
    assert_eq!(metadata["mayfly_subject_token_types_supported"], json!([ID_TOKEN_TYPE, JWT_TOKEN_TYPE]));
    assert_eq!(
        metadata["mayfly_actor_token_types_supported"],
        json!([ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TOKEN_TYPE])
    );
    assert_eq!(metadata["mayfly_requested_token_types_supported"], json!([ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]));
    assert_eq!(metadata["mayfly_issued_token_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(metadata["mayfly_session_scope"], "session");
    assert_eq!(metadata["mayfly_approval_endpoint"], format!("{url}/approve"));
    assert_eq!(metadata["mayfly_admin_revocation_endpoint"], format!("{url}/admin/revoke"));
    // Every name is registered (RFC 8414, OpenID Connect Discovery) or mayfly's own.
    let registered = [
        "issuer",
        "jwks_uri",
        "token_endpoint",
        "token_endpoint_auth_methods_supported",
        "grant_types_supported",
        "revocation_endpoint",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint",
        "introspection_endpoint_auth_methods_supported",
        "id_token_signing_alg_values_supported",
    ];
    for name in metadata.as_object().unwrap().keys() {
        assert!(registered.contains(&name.as_str()) || name.starts_with("mayfly_"), "unregistered `{name}`");
    }

    // Without approvers or administrators, their endpoints are not advertised.
    let (_, bare) = discovery(&stack, false);
    assert!(bare.get("mayfly_approval_endpoint").is_none(), "{bare}");
    assert!(bare.get("mayfly_admin_revocation_endpoint").is_none(), "{bare}");
    assert_eq!(bare["grant_types_supported"], json!([TOKEN_EXCHANGE_GRANT]));
}
