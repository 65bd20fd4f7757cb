//! Operational lines (start, listening, errors, the revocation store going down and
//! coming back): `mayfly-sts: ...` on stderr, or with `log_format = "json"` one JSON object
//! a line on stdout (`{"time", "level", "message"}`) for platforms that collect logs.
//! Audit lines are not these: they go where `audit_log` says.

use std::io::Write;
use std::sync::OnceLock;

/// How operational lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `mayfly-sts: MESSAGE` on stderr.
    #[default]
    Text,
    /// `{"time":..., "level":..., "message":...}` on stdout.
    Json,
}

impl Format {
    /// `text` (also when not set) or `json`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!("`log_format` is `text` or `json`, not `{other}`")),
        }
    }
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the format for the rest of the process (the first call wins).
pub fn init(format: Format) {
    let _ = FORMAT.set(format);
}

/// An informational line.
pub fn info(message: &str) {
    write("info", message);
}

/// An error the exchange keeps serving through.
pub fn error(message: &str) {
    write("error", message);
}

fn write(level: &str, message: &str) {
    match FORMAT.get().copied().unwrap_or_default() {
        Format::Text => eprintln!("mayfly-sts: {message}"),
        Format::Json => {
            let line = serde_json::json!({
                "time": crate::audit::now_rfc3339(),
                "level": level,
                "message": message,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_text_unless_json_is_asked_for() {
        assert_eq!(Format::parse(None), Ok(Format::Text));
        assert_eq!(Format::parse(Some("json")), Ok(Format::Json));
        assert!(Format::parse(Some("JSON")).unwrap_err().contains("`JSON`"));
    }
}
