//! Which browser a login opens: `$BROWSER` when set (run with the URL as its argument),
//! else `xdg-open` when there is a display to show it on. None over a bare SSH session,
//! where the device flow fits better.

use std::process::{Command, Stdio};

use crate::{Env, EnvVars};

/// A way to open a URL in a browser.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Browser {
    /// The command `$BROWSER` names.
    Named(String),
    /// The desktop's default browser.
    XdgOpen,
}

impl Browser {
    /// The browser of this session, if it has one.
    pub(crate) fn find(env: &Env) -> Option<Self> {
        if let Some(named) = env.get(EnvVars::BROWSER).filter(|b| !b.trim().is_empty()) {
            return Some(Self::Named(named.to_owned()));
        }
        let display =
            [EnvVars::DISPLAY, EnvVars::WAYLAND_DISPLAY].iter().any(|v| env.get(v).is_some_and(|d| !d.is_empty()));
        display.then_some(Self::XdgOpen)
    }

    /// How it is named to people.
    pub(crate) fn shown(&self) -> String {
        match self {
            Self::Named(command) => format!("`{}` ($BROWSER)", crate::sanitize_for_terminal(command)),
            Self::XdgOpen => "xdg-open".into(),
        }
    }

    /// Starts it on `url` without waiting for it: a browser may run long after the login.
    /// Its output is not mixed into mayfly's.
    pub(crate) fn open(&self, url: &str) -> Result<(), String> {
        let program = match self {
            Self::Named(command) => command.as_str(),
            Self::XdgOpen => "xdg-open",
        };
        Command::new(program)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start {}: {e}", self.shown()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_wins_over_a_display_and_no_display_means_no_browser() {
        let env = |pairs: &[(&str, &str)]| Env::from_pairs(pairs.iter().copied());
        assert_eq!(
            Browser::find(&env(&[("BROWSER", "/opt/b"), ("DISPLAY", ":0")])),
            Some(Browser::Named("/opt/b".into()))
        );
        assert_eq!(Browser::find(&env(&[("WAYLAND_DISPLAY", "wayland-0")])), Some(Browser::XdgOpen));
        assert_eq!(Browser::find(&env(&[("BROWSER", " "), ("DISPLAY", "")])), None);
        assert_eq!(Browser::find(&env(&[])), None);
    }
}
