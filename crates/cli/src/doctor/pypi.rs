//! PyPI: passwords (API tokens) in `~/.pypirc`, which twine reads.

use std::path::Path;

use mayfly_core::Config;

use super::finding::{Finding, at};
use super::scope::{Contents, Scope, read};
use mayfly_core::ini::{Dialect, parse};

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let path = scope.home.join(".pypirc");
    match read(&path) {
        Contents::Missing => {}
        Contents::Unreadable(why) => findings.push(Finding::unreadable(&path, &format!("cannot read it: {why}"))),
        Contents::Text(text) => findings.extend(passwords(&path, &text, config)),
    }
}

pub(crate) fn passwords(path: &Path, text: &str, config: Option<&Config>) -> Vec<Finding> {
    let served = config.is_some_and(|c| c.routes.iter().any(|r| r.tool == mayfly_core::Tool::Pypi));
    let fix = if served {
        "remove it: a route with tool = \"pypi\" already serves uploads; `mayfly exec` runs twine through the shim"
    } else {
        "remove it and add a route with tool = \"pypi\" (trusted publishing: an exchange with kind = \"pypi\"); `mayfly exec` runs twine through the shim"
    };
    parse(text, Dialect::Python)
        .into_iter()
        .filter(|e| e.key.eq_ignore_ascii_case("password") && !e.value.is_empty())
        .map(|e| {
            Finding::secret(
                "pypirc-password",
                at(path, &format!("[{}] password", e.section.unwrap_or_default())),
                &e.value,
                fix,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_per_section() {
        let text = "[distutils]\nindex-servers =\n  pypi\n[pypi]\nusername = __token__\npassword = pypi-AgEIcHlwaS5vcmc\n[test]\nusername = u\n"; // mayfly-guard: allow
        let found = passwords(Path::new(".pypirc"), text, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, ".pypirc: [pypi] password");
    }
}
