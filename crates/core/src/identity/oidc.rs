//! A person's login at the organisation's OpenID provider (`mayfly login`): the ID token
//! of that login, refreshed with its refresh token near expiry. Both live only in
//! memory-backed storage ([`crate::login`]).

use std::path::PathBuf;

use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::{Env, Secret};

/// An `oidc` identity: one client at one provider.
#[derive(Debug)]
pub(crate) struct Oidc {
    /// Its name in the config (messages say `run mayfly login NAME`).
    pub(crate) name: String,
    /// The issuer, without a trailing `/`.
    pub(crate) issuer: String,
    /// The client id registered at the provider.
    pub(crate) client_id: String,
    /// A confidential client's secret (most CLI clients are public and have none).
    pub(crate) client_secret: Option<Secret>,
    /// Scopes asked at login.
    pub(crate) scopes: String,
    /// The ID token's expected `aud` (the client id unless the provider says otherwise).
    pub(crate) audience: String,
    /// Longest a login lasts, seconds.
    pub(crate) max_login: i64,
    /// Longest a login may go unused, seconds.
    pub(crate) idle: i64,
    /// Extra CA certificates (PEM) for reaching the provider.
    pub(crate) ca_file: Option<PathBuf>,
}

impl Oidc {
    /// The hint every message about a missing or ended login carries.
    pub(crate) fn hint(&self) -> String {
        format!("run `mayfly login {}`", self.name)
    }
}

impl Source for Oidc {
    fn kind(&self) -> &'static str {
        "oidc"
    }

    fn origin(&self, _env: &Env) -> String {
        url::Url::parse(&self.issuer)
            .ok()
            .and_then(|u| crate::target::host_port(&u))
            .unwrap_or_else(|| self.issuer.clone())
    }

    fn look(&self, env: &Env) -> Presence {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match crate::login::stored_id_token(self, env, now) {
            Ok(Some(token)) => Presence::Token(token),
            Ok(None) => Presence::Absent(format!("not logged in: {}", self.hint())),
            Err(why) => Presence::Absent(why),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let Some(token) = crate::login::id_token(self, ask.env, ask.now)? else { return Ok(None) };
        SubjectToken::new(ask.name, token.expose().to_owned(), ask.now).map(Some)
    }

    fn oidc(&self) -> Option<&Oidc> {
        Some(self)
    }

    fn vouches_for_cached(&self, name: &str, env: &Env, now: i64) -> Result<(), Error> {
        match crate::login::in_force(self, env, now) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Unavailable(format!("identity `{name}`: not logged in: {}", self.hint()))),
            Err(why) => Err(Error::Unavailable(format!("identity `{name}`: {why}"))),
        }
    }
}
