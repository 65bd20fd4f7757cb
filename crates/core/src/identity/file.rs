//! A file re-read on every use (Kubernetes projected tokens, SPIFFE JWT-SVIDs,
//! `AWS_WEB_IDENTITY_TOKEN_FILE`): its owner rotates it.

use std::io::Read;
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
    /// Its text; one larger than any token is refused rather than cut.
    fn read(&self) -> Result<String, String> {
        let cannot = |why: String| format!("cannot read `{}`: {why}", self.path.display());
        let mut text = String::new();
        std::fs::File::open(&self.path)
            .and_then(|f| f.take(crate::http::MAX_BODY + 1).read_to_string(&mut text))
            .map_err(|e| cannot(e.to_string()))?;
        if text.len() as u64 > crate::http::MAX_BODY {
            return Err(cannot(format!("larger than {} bytes", crate::http::MAX_BODY)));
        }
        Ok(text)
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
