//! GitHub Actions: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=..` with the request token
//! as Bearer; the answer is `{"value": "<jwt>"}`.

use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::{Env, EnvVars};

/// What a job whose request variables are unset, or whose request is refused, lacks.
const HINT: &str = "the job needs `permissions: id-token: write`";

/// GitHub Actions' job OIDC endpoint.
#[derive(Debug)]
pub(crate) struct GitHubActions {
    /// Overrides `ACTIONS_ID_TOKEN_REQUEST_URL`, for development issuers that speak the
    /// same protocol.
    pub(crate) request_url: Option<String>,
}

impl GitHubActions {
    /// The request URL and the request token, or the first variable that is unset.
    fn request<'a>(&'a self, env: &'a Env) -> Result<(&'a str, &'a str), &'static str> {
        let url = self.request_url.as_deref().or(env.get(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL));
        let url = url.ok_or(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL)?;
        let bearer = env.get(EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN).ok_or(EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN)?;
        Ok((url, bearer))
    }
}

impl Source for GitHubActions {
    fn kind(&self) -> &'static str {
        "github-actions"
    }

    fn origin(&self, env: &Env) -> String {
        // The endpoint's host: the rest of the URL is the job's, and says nothing more.
        let url = self.request_url.as_deref().or(env.get(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL));
        url.and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| crate::target::host_port(&u))
            .unwrap_or_else(|| format!("${}", EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL))
    }

    fn variables(&self) -> Vec<String> {
        [EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN].map(str::to_owned).to_vec()
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn look(&self, env: &Env) -> Presence {
        match self.request(env) {
            Ok(_) => Presence::Ready,
            Err(var) => Presence::Absent(format!("`{var}` is not set ({HINT})")),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let Ok((url, bearer)) = self.request(ask.env) else { return Ok(None) };
        let name = ask.name;
        let mut url = url::Url::parse(url)
            .map_err(|e| Error::Unavailable(format!("identity `{name}`: invalid request URL: {e}")))?;
        if let Some(audience) = ask.audience {
            // The URL already carries a query; append, never replace.
            url.query_pairs_mut().append_pair("audience", audience);
        }
        let http = (ask.http)()?;
        let build = || Ok(http.get(&url)?.bearer_auth(bearer).header("Accept", "application/json"));
        let body = match http.send_retrying(&url, crate::http::Retry::ServerError, &build)? {
            (200, body) => body,
            (status, _) if status >= 500 => {
                return Err(Error::Unavailable(format!("identity `{name}`: OIDC endpoint answered {status}")));
            }
            (status, _) => {
                return Err(Error::Unavailable(format!("identity `{name}`: OIDC endpoint answered {status} ({HINT})")));
            }
        };
        SubjectToken::new(name, parse(name, &body)?, ask.now).map(Some)
    }
}

/// The token in the endpoint's answer.
fn parse(source: &str, body: &[u8]) -> Result<String, Error> {
    #[derive(serde::Deserialize)]
    struct Answer {
        value: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| Error::Malformed(format!("identity `{source}`: OIDC endpoint answer is not JSON")))?;
    answer.value.ok_or_else(|| Error::Malformed(format!("identity `{source}`: OIDC endpoint answer has no `value`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_for_their_value() {
        assert_eq!(parse("t", br#"{"value":"jwt","count":1}"#).unwrap(), "jwt");
        assert!(parse("t", br#"{"count":1}"#).unwrap_err().to_string().contains("no `value`"));
        assert!(parse("t", b"<html>").is_err());
    }

    #[test]
    fn it_is_shown_by_the_endpoints_host_and_absent_without_its_variables() {
        let source = GitHubActions { request_url: None };
        let env = Env::from_pairs([(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, "https://pipelines.example:8443/t?x=1")]);
        assert_eq!(source.origin(&env), "pipelines.example:8443");
        assert_eq!(source.origin(&Env::default()), "$ACTIONS_ID_TOKEN_REQUEST_URL");
        let Presence::Absent(why) = source.look(&env) else { panic!("no request token, yet present") };
        assert_eq!(why, "`ACTIONS_ID_TOKEN_REQUEST_TOKEN` is not set (the job needs `permissions: id-token: write`)");
        let env = env.with(&[(EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN, "r")]);
        assert!(matches!(source.look(&env), Presence::Ready));
    }
}
