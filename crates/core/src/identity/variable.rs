//! An environment variable (GitLab `id_tokens`, CircleCI, Bitbucket), read on every use.

use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::{Env, Secret};

/// A variable that holds the token.
#[derive(Debug)]
pub(crate) struct Variable {
    /// Its name.
    pub(crate) var: String,
}

impl Source for Variable {
    fn kind(&self) -> &'static str {
        "env"
    }

    fn origin(&self, _env: &Env) -> String {
        format!("${}", self.var)
    }

    fn variables(&self) -> Vec<String> {
        vec![self.var.clone()]
    }

    fn look(&self, env: &Env) -> Presence {
        match env.get(&self.var) {
            Some(token) => Presence::Token(Secret::new(token.trim())),
            None => Presence::Absent(format!("`{}` is not set", self.var)),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let Some(token) = ask.env.get(&self.var) else { return Ok(None) };
        SubjectToken::new(ask.name, token.to_owned(), ask.now).map(Some)
    }
}
