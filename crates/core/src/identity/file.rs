//! A file re-read on every use (Kubernetes projected tokens, SPIFFE JWT-SVIDs,
//! `AWS_WEB_IDENTITY_TOKEN_FILE`): its owner rotates it.

use std::path::PathBuf;

use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::{Env, Secret};

/// A token file.
#[derive(Debug)]
pub(crate) struct File {
    /// The file.
    pub(crate) path: PathBuf,
}

impl File {
    /// Its text; one larger than any token is refused rather than cut, and anything but a
    /// regular file (through symbolic links, as Kubernetes projects tokens) is refused
    /// rather than waited on: a FIFO without a writer would hold the tool that asked.
    fn read(&self) -> Result<String, String> {
        crate::files::read_regular_text(&self.path, crate::http::MAX_BODY)
            .map_err(|e| format!("cannot read `{}`: {e}", self.path.display()))
    }
}

impl Source for File {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn origin(&self, _env: &Env) -> String {
        self.path.display().to_string()
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn look(&self, _env: &Env) -> Presence {
        match self.read() {
            Ok(text) => Presence::Token(Secret::new(text.trim())),
            Err(why) => Presence::Absent(why),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let text = self.read().map_err(|why| Error::Unavailable(format!("identity `{}`: {why}", ask.name)))?;
        SubjectToken::new(ask.name, text, ask.now).map(Some)
    }
}
