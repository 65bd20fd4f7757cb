//! Azure Pipelines: `POST $SYSTEM_OIDCREQUESTURI?api-version=7.1&serviceConnectionId=ID`
//! with `$SYSTEM_ACCESSTOKEN` as Bearer; the answer is `{"oidcToken": "<jwt>"}`. Its
//! audience is Azure's own (`api://AzureADTokenExchange`): it cannot be asked for.

use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::Env;

/// The job's OIDC request URL (set in every job).
pub(crate) const REQUEST_URI: &str = "SYSTEM_OIDCREQUESTURI";
/// The job's access token (set only where a step maps `System.AccessToken` into its env).
const ACCESS_TOKEN: &str = "SYSTEM_ACCESSTOKEN";
/// The API version the request names.
const API_VERSION: &str = "7.1";

/// Azure Pipelines' job OIDC endpoint, for one service connection.
#[derive(Debug)]
pub(crate) struct AzurePipelines {
    /// The service connection (its id) whose federated credential trusts the token.
    pub(crate) service_connection: Option<String>,
}

impl AzurePipelines {
    /// The request URL and the access token, or what is missing.
    fn request<'a>(&self, env: &'a Env) -> Result<(url::Url, &'a str), String> {
        let base = env.get(REQUEST_URI).ok_or_else(|| format!("`{REQUEST_URI}` is not set"))?;
        let bearer = env.get(ACCESS_TOKEN).ok_or_else(|| {
            format!("`{ACCESS_TOKEN}` is not set (map it into the step: `env: {ACCESS_TOKEN}: $(System.AccessToken)`)")
        })?;
        let connection = self
            .service_connection
            .as_deref()
            .ok_or("no service connection: set `azure_service_connection` to its id")?;
        let mut url = url::Url::parse(base.trim_end_matches('/')).map_err(|e| format!("`{REQUEST_URI}`: {e}"))?;
        url.query_pairs_mut().append_pair("api-version", API_VERSION).append_pair("serviceConnectionId", connection);
        Ok((url, bearer))
    }
}

impl Source for AzurePipelines {
    fn kind(&self) -> &'static str {
        "azure-pipelines"
    }

    fn variables(&self) -> Vec<String> {
        vec![REQUEST_URI.to_owned(), ACCESS_TOKEN.to_owned()]
    }

    fn origin(&self, env: &Env) -> String {
        env.get(REQUEST_URI)
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| crate::target::host_port(&u))
            .unwrap_or_else(|| format!("${REQUEST_URI}"))
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn look(&self, env: &Env) -> Presence {
        match self.request(env) {
            Ok(_) => Presence::Ready,
            Err(why) => Presence::Absent(why),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let name = ask.name;
        let (url, bearer) = match self.request(ask.env) {
            Ok(request) => request,
            Err(_) if ask.env.get(REQUEST_URI).is_none() || ask.env.get(ACCESS_TOKEN).is_none() => return Ok(None),
            Err(why) => return Err(Error::Unavailable(format!("identity `{name}`: {why}"))),
        };
        let http = (ask.http)()?;
        let build = || {
            Ok(http
                .post(&url)?
                .bearer_auth(bearer)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                // Asks for a status, never a redirect to a sign-in page.
                .header("X-TFS-FedAuthRedirect", "Suppress"))
        };
        let body = match http.send_retrying(&url, crate::http::Retry::Unavailable, &build)? {
            (200, body) => body,
            (status, _) => {
                return Err(Error::Unavailable(format!(
                    "identity `{name}`: Azure Pipelines' OIDC endpoint answered {status} (is the service connection's id right, and may this pipeline use it?)"
                )));
            }
        };
        SubjectToken::new(name, parse(name, &body)?, ask.now).map(Some)
    }
}

/// The token in the endpoint's answer.
fn parse(source: &str, body: &[u8]) -> Result<String, Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        oidc_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| Error::Malformed(format!("identity `{source}`: OIDC endpoint answer is not JSON")))?;
    answer
        .oidc_token
        .ok_or_else(|| Error::Malformed(format!("identity `{source}`: OIDC endpoint answer has no `oidcToken`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_for_their_oidc_token() {
        assert_eq!(parse("t", br#"{"oidcToken":"jwt"}"#).unwrap(), "jwt");
        assert!(parse("t", br#"{"value":"jwt"}"#).unwrap_err().to_string().contains("no `oidcToken`"));
        assert!(parse("t", b"<html>").is_err());
    }

    #[test]
    fn the_request_names_the_connection_and_each_missing_piece() {
        let source = AzurePipelines { service_connection: Some("c0ffee".into()) };
        let base = "https://dev.azure.com/org/p/_apis/distributedtask/hubs/build/plans/1/jobs/2/oidctoken";
        let env = Env::from_pairs([(REQUEST_URI, base)]);
        let Presence::Absent(why) = source.look(&env) else { panic!("no access token, yet present") };
        assert!(why.starts_with("`SYSTEM_ACCESSTOKEN` is not set"), "{why}");
        let env = env.with(&[(ACCESS_TOKEN, "a")]);
        let (url, bearer) = source.request(&env).unwrap();
        assert_eq!(url.as_str(), format!("{base}?api-version=7.1&serviceConnectionId=c0ffee"));
        assert_eq!((bearer, source.origin(&env).as_str()), ("a", "dev.azure.com"));
        let unnamed = AzurePipelines { service_connection: None };
        let Presence::Absent(why) = unnamed.look(&env) else { panic!("no connection, yet present") };
        assert_eq!(why, "no service connection: set `azure_service_connection` to its id");
    }
}
