//! The hook protocols, each a function over injected I/O. Binaries only wire them to
//! stdin, stdout and the process exit code.

pub mod git;

use std::error::Error;

/// An error and its causes as one line, safe for a terminal.
pub fn one_line(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    crate::sanitize_for_terminal(&line)
}

/// One `mayfly: ...` line on stderr.
pub fn warn(message: &str) {
    use std::io::Write;
    let line = format!("mayfly: {}\n", crate::sanitize_for_terminal(message));
    let _ = std::io::stderr().write_all(line.as_bytes());
}
