//! `spiffe`: a JWT-SVID for the route's audience from the SPIFFE Workload API (a SPIRE
//! agent, or any other Workload Endpoint), asked with `FetchJWTSVID` at `socket`, else at
//! `$SPIFFE_ENDPOINT_SOCKET`. With `spiffe_id`, only that identity's SVID is asked for
//! and taken; without it, the first the API gives (as go-spiffe and `spire-agent api
//! fetch jwt` take it).

use std::path::PathBuf;

use super::workload_api::{self, CallError, Endpoint, JwtSvid};
use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::Env;

/// Where the SPIFFE Workload Endpoint spec puts the API's address.
pub(crate) const SOCKET_VAR: &str = "SPIFFE_ENDPOINT_SOCKET";

/// `kind = "spiffe"`.
#[derive(Debug)]
pub(crate) struct Spiffe {
    /// The API's address; `$SPIFFE_ENDPOINT_SOCKET` when `None`.
    pub(crate) socket: Option<String>,
    /// The SPIFFE ID whose SVID is taken, when the workload has several.
    pub(crate) spiffe_id: Option<String>,
}

impl Spiffe {
    /// The source a config describes: its address, when written, must be one, and its
    /// SPIFFE ID a `spiffe://` URI.
    pub(crate) fn new(socket: Option<String>, spiffe_id: Option<String>) -> Result<Self, String> {
        if let Some(socket) = &socket {
            Endpoint::parse(socket).map_err(|why| format!("`socket`: {why}"))?;
        }
        if let Some(id) = &spiffe_id
            && (!id.starts_with("spiffe://") || id.chars().any(char::is_control))
        {
            return Err("`spiffe_id` must be a SPIFFE ID (`spiffe://TRUST-DOMAIN/PATH`)".into());
        }
        Ok(Self { socket, spiffe_id })
    }

    /// The address as written and where it came from; `None` when nothing names one.
    fn address(&self, env: &Env) -> Option<(String, String)> {
        match &self.socket {
            Some(socket) => Some((socket.clone(), "`socket`".into())),
            None => env.get(SOCKET_VAR).filter(|s| !s.is_empty()).map(|s| (s.to_owned(), format!("`{SOCKET_VAR}`"))),
        }
    }

    /// The endpoint, or why there is none.
    fn endpoint(&self, env: &Env) -> Result<Option<(String, Endpoint)>, String> {
        let Some((text, from)) = self.address(env) else { return Ok(None) };
        let shown = crate::redact::sanitize_for_terminal(crate::redact::clip(&text, 200));
        match Endpoint::parse(&text) {
            Ok(endpoint) => Ok(Some((shown, endpoint))),
            Err(why) => Err(format!("{from} (`{shown}`) is not a SPIFFE Workload API address: {why}")),
        }
    }

    /// The SVID taken from the API's answer.
    fn choose(&self, svids: Vec<JwtSvid>) -> Result<JwtSvid, String> {
        let mut svids = svids.into_iter();
        match self.spiffe_id.as_deref() {
            // The server was asked for this one only; another is never taken in its place.
            Some(id) => svids.find(|s| s.spiffe_id == id).ok_or_else(|| format!("SPIFFE ID `{id}`")),
            None => svids.next().ok_or_else(|| "this workload".into()),
        }
    }
}

impl Source for Spiffe {
    fn kind(&self) -> &'static str {
        "spiffe"
    }

    fn origin(&self, env: &Env) -> String {
        match self.address(env) {
            Some((text, _)) => crate::redact::sanitize_for_terminal(crate::redact::clip(&text, 200)),
            None => format!("${SOCKET_VAR}"),
        }
    }

    fn variables(&self) -> Vec<String> {
        vec![SOCKET_VAR.into()]
    }

    fn files(&self) -> Vec<PathBuf> {
        match self.socket.as_deref().map(Endpoint::parse) {
            Some(Ok(Endpoint::Unix(path))) => vec![path],
            _ => Vec::new(),
        }
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn look(&self, env: &Env) -> Presence {
        match self.endpoint(env) {
            Ok(Some(_)) => Presence::Ready,
            Ok(None) => Presence::Absent(format!("`{SOCKET_VAR}` is not set")),
            Err(why) => Presence::Absent(why),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let name = ask.name;
        let unavailable = |why: String| Error::Unavailable(format!("identity `{name}`: {why}"));
        let Some((shown, endpoint)) = self.endpoint(ask.env).map_err(unavailable)? else { return Ok(None) };
        let audience = ask
            .audience
            .filter(|a| !a.is_empty())
            .ok_or_else(|| unavailable("the SPIFFE Workload API needs an audience: set `audience`".into()))?;
        let request = workload_api::frame(&workload_api::encode_request(&[audience], self.spiffe_id.as_deref()));
        let answer = workload_api::call(&endpoint, request).and_then(|a| workload_api::read_answer(&a));
        let api = format!("the SPIFFE Workload API at `{shown}`");
        let svids = answer.map_err(|e| match e {
            CallError::Unreachable(why) => unavailable(format!("cannot reach {api}: {why}")),
            CallError::Refused(why) => unavailable(format!("{api} refused: {why}")),
            CallError::Garbage(why) => {
                Error::Malformed(format!("identity `{name}`: {api} answered with no JWT-SVID response: {why}"))
            }
        })?;
        let svid = self
            .choose(svids)
            .map_err(|whom| unavailable(format!("{api} gave no JWT-SVID for {whom} and audience `{audience}`")))?;
        SubjectToken::new(name, svid.svid, ask.now).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid(id: &str) -> JwtSvid {
        JwtSvid { spiffe_id: id.into(), svid: format!("token-of-{id}"), hint: String::new() }
    }

    #[test]
    fn the_address_comes_from_the_config_else_the_variable() {
        let env = Env::from_pairs([(SOCKET_VAR, "unix:///run/spire/agent.sock")]);
        let from_env = Spiffe { socket: None, spiffe_id: None };
        assert_eq!(from_env.origin(&env), "unix:///run/spire/agent.sock");
        assert!(matches!(from_env.look(&env), Presence::Ready));
        assert!(from_env.files().is_empty(), "known only at run time");
        let Presence::Absent(why) = from_env.look(&Env::default()) else { panic!("nothing set, yet present") };
        assert_eq!(why, "`SPIFFE_ENDPOINT_SOCKET` is not set");
        let named = Spiffe { socket: Some("unix:/run/other.sock".into()), spiffe_id: None };
        assert_eq!(named.origin(&env), "unix:/run/other.sock");
        assert_eq!(named.files(), [PathBuf::from("/run/other.sock")]);
        let bad = Env::from_pairs([(SOCKET_VAR, "/run/spire/agent.sock")]);
        let Presence::Absent(why) = from_env.look(&bad) else { panic!("a bare path, yet present") };
        assert_eq!(
            why,
            "`SPIFFE_ENDPOINT_SOCKET` (`/run/spire/agent.sock`) is not a SPIFFE Workload API address: not an address: write `unix:///path`, `unix:/path` or `tcp://IP:PORT`"
        );
    }

    #[test]
    fn a_named_spiffe_id_is_the_only_one_taken() {
        let any = Spiffe { socket: None, spiffe_id: None };
        assert_eq!(any.choose(vec![svid("spiffe://a/x"), svid("spiffe://a/y")]).unwrap().spiffe_id, "spiffe://a/x");
        assert_eq!(any.choose(Vec::new()).unwrap_err(), "this workload");
        let one = Spiffe { socket: None, spiffe_id: Some("spiffe://a/y".into()) };
        assert_eq!(one.choose(vec![svid("spiffe://a/x"), svid("spiffe://a/y")]).unwrap().svid, "token-of-spiffe://a/y");
        // A server that ignores `spiffe_id` and answers with another identity is not believed.
        assert_eq!(one.choose(vec![svid("spiffe://a/x")]).unwrap_err(), "SPIFFE ID `spiffe://a/y`");
    }

    #[test]
    fn a_missing_socket_is_one_line_naming_it() {
        let no_http = || -> Result<crate::HttpClient, crate::http::Error> { panic!("no HTTP expected") };
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("unix://{}/agent.sock", dir.path().display());
        let env = Env::from_pairs([(SOCKET_VAR, socket.as_str())]);
        let ask = Ask { name: "t", audience: Some("sts"), env: &env, http: &no_http, now: 0 };
        let err = Spiffe { socket: None, spiffe_id: None }.fetch(&ask).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "identity `t`: cannot reach the SPIFFE Workload API at `{socket}`: No such file or directory (os error 2)"
            )
        );
        let nothing = Env::default();
        let unset = Ask { env: &nothing, ..ask };
        assert!(Spiffe { socket: None, spiffe_id: None }.fetch(&unset).unwrap().is_none());
    }
}
