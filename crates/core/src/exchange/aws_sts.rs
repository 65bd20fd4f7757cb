//! AWS STS `AssumeRoleWithWebIdentity`: the subject token in, temporary AWS credentials
//! out, in the shape `credential_process` prints.
//!
//! The call is unsigned (the web identity token is the proof). Session tags and source
//! identity come from the token's claims, never from parameters we could be talked into.

use serde_json::json;

use super::{Ask, Error, ExchangeResponse, Intent, Protocol};
use crate::config::{ExchangeConfig, Route};
use crate::http::{HttpClient, Retry};
use crate::{Secret, Tool, sanitize_for_terminal};

/// The global AWS STS endpoint.
const AWS_STS_ENDPOINT: &str = "https://sts.amazonaws.com/";

/// AWS STS `AssumeRoleWithWebIdentity`: credentials for a role, which cannot be revoked.
pub(crate) struct AwsSts;

impl Protocol for AwsSts {
    fn name(&self) -> &'static str {
        "aws-sts"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(AWS_STS_ENDPOINT)
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        "sts.amazonaws.com".into()
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        exchange(ask.config, ask.http, ask.route, ask.subject, ask.intent)
    }
}

/// The form of one `AssumeRoleWithWebIdentity` call.
pub(crate) fn form(route: &Route, subject: &Secret, intent: &Intent) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("Action", "AssumeRoleWithWebIdentity".to_owned()),
        ("Version", "2011-06-15".to_owned()),
        ("RoleArn", route.role_arn.clone().unwrap_or_default()),
        ("RoleSessionName", session_name(intent)),
        ("WebIdentityToken", subject.expose().to_owned()),
        ("DurationSeconds", route.ttl.as_secs().clamp(900, 43_200).to_string()),
    ];
    if let Some(policy) = &route.session_policy {
        form.push(("Policy", policy.clone()));
    }
    form
}

/// `RoleSessionName` from the intent: `mayfly` and the command, within STS's rules
/// (2 to 64 of `[A-Za-z0-9+=,.@-]`); it shows in the assumed-role ARN and in CloudTrail.
pub(crate) fn session_name(intent: &Intent) -> String {
    let words = intent.command.iter().take(3).filter(|w| !w.starts_with('-'));
    let mut name = String::from("mayfly");
    for word in words.map(|w| w.rsplit('/').next().unwrap_or(w)) {
        name.push('.');
        name.push_str(word);
    }
    if let Some(session) = &intent.session {
        name.push('@');
        name.push_str(session);
    }
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "+=,.@-".contains(c) { c } else { '-' }).collect();
    clean.chars().take(64).collect()
}

/// Reads STS's answer: credentials, or the error document's code and message.
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let text = std::str::from_utf8(body).map_err(|_| malformed("a body that is not UTF-8"))?;
    let doc = roxmltree::Document::parse(text).map_err(|_| malformed("a body that is not XML"))?;
    let find =
        |name: &str| doc.descendants().find(|n| n.tag_name().name() == name).and_then(|n| n.text()).map(str::trim);
    if status != 200 {
        let code = find("Code").ok_or_else(|| malformed("an error without a code"))?;
        return Err(Error::Denied {
            exchange: exchange.into(),
            code: sanitize_for_terminal(code),
            description: find("Message").map(|m| sanitize_for_terminal(m).chars().take(300).collect()),
        });
    }
    let field = |name: &str| find(name).filter(|v| !v.is_empty()).ok_or_else(|| malformed(&format!("no `{name}`")));
    let (key_id, secret, session, expiration) =
        (field("AccessKeyId")?, field("SecretAccessKey")?, field("SessionToken")?, field("Expiration")?);
    if [key_id, secret, session].iter().any(|v| v.chars().any(|c| c.is_control() || c.is_whitespace())) {
        return Err(malformed("credentials containing control characters or spaces"));
    }
    let expires = time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
        .map_err(|_| malformed("an `Expiration` that is not RFC 3339"))?
        .unix_timestamp();
    // An offset can carry a valid local time out of RFC 3339's years; and credentials
    // already expired would only send the tool straight back to us.
    let expiration =
        crate::audit::try_rfc3339(expires).ok_or_else(|| malformed("an `Expiration` outside RFC 3339's years"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if expires <= now {
        return Err(malformed("an `Expiration` already past (is this machine's clock right?)"));
    }
    let document = json!({
        "Version": 1,
        "AccessKeyId": key_id,
        "SecretAccessKey": secret,
        "SessionToken": session,
        "Expiration": expiration,
    });
    Ok(ExchangeResponse {
        access_token: Secret::new(document.to_string()),
        issued_token_type: "aws-credentials".into(),
        expires_in: u64::try_from(expires - now).ok(),
        scope: None,
        token_id: Some(key_id.to_owned()),
    })
}

/// Sends the call, again only where STS cannot have issued anything.
pub(crate) fn exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    route: &Route,
    subject: &Secret,
    intent: &Intent,
) -> Result<ExchangeResponse, Error> {
    let url = &config.token_endpoint;
    let body = form(route, subject, intent);
    let build = || Ok(http.post(url)?.form(&body));
    let (status, body) = http
        .send_retrying(url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse(&config.name, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>repo:org/app:ref:refs/heads/main</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>FQoGZXIvYXdzEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey>
      <Expiration>2099-08-22T13:34:56.123Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn credentials_become_a_credential_process_document_in_any_element_order() {
        let response = parse("aws", 200, OK.as_bytes()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(response.access_token.expose()).unwrap();
        assert_eq!(doc["Version"], 1, "Version must be the integer 1");
        assert_eq!(doc["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(doc["SessionToken"], "FQoGZXIvYXdzEXAMPLE");
        assert_eq!(doc["Expiration"], "2099-08-22T13:34:56Z");
        assert_eq!(response.token_id.as_deref(), Some("ASIAEXAMPLE"));
        assert!(response.expires_in.unwrap() > 3600);
    }

    #[test]
    fn expirations_past_or_beyond_rfc_3339_years_are_malformed() {
        for (expiration, why) in [
            ("0000-01-01T00:00:00+23:59", "outside RFC 3339's years"),
            ("9999-12-31T23:59:59-23:59", "outside RFC 3339's years"),
            ("2001-01-01T00:00:00Z", "already past"),
        ] {
            let body = OK.replace("2099-08-22T13:34:56.123Z", expiration);
            let err = parse("aws", 200, body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{expiration}: {err}");
        }
    }

    #[test]
    fn sts_errors_become_one_line_with_code_and_message() {
        let body = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve
verification key</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        let err = parse("aws", 400, body.as_bytes()).unwrap_err().to_string();
        assert_eq!(err, "exchange `aws` refused: InvalidIdentityToken: Couldn't retrieve\u{fffd}verification key");
    }

    #[test]
    fn proxies_html_and_lying_bodies_are_not_believed() {
        for (status, body) in [
            (200, "<html><body>proxy</body></html>"),
            (502, "<html>bad gateway"),
            (200, ""),
            (200, &OK.replace("ASIAEXAMPLE", "ASIA EXAMPLE")),
        ] {
            assert!(matches!(parse("aws", status, body.as_bytes()), Err(Error::Malformed { .. })), "{status} {body}");
        }
    }

    #[test]
    fn session_names_follow_sts_rules() {
        let intent = Intent {
            command: ["/usr/bin/aws", "s3", "cp", "x"].map(String::from).to_vec(),
            session: Some("ci/run 42".into()),
            ..Intent::default()
        };
        assert_eq!(session_name(&intent), "mayfly.aws.s3.cp@ci-run-42");
        let long = Intent { command: vec!["a".repeat(100)], ..Intent::default() };
        assert_eq!(session_name(&long).len(), 64);
        assert_eq!(session_name(&Intent::default()), "mayfly");
    }
}
