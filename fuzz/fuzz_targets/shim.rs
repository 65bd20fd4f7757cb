//! The shims' reading of a command line, the environment, a project's `.npmrc` and
//! `package.json`, and the user's `.npmrc` (`need`), and the variables that carry a token
//! to the real tool (`token_vars`).
//!
//! Input: a header line naming the tool (`npm`, `pnpm`, `yarn`, `twine`, `gem`, `hf`), one argument
//! per line, then sections `--- env` (`NAME=value` lines), `--- npmrc`, `--- home-npmrc`
//! and `--- package.json`, each written to its file for the run.
//!
//! Invariants:
//! - a registry the command needs is a URL without userinfo, with a host, a path ending
//!   in `/` and no whitespace or control character; a target made from it is normalised;
//! - the variables handed to the real tool have non-empty names without `=` or NUL and
//!   values without NUL, and the token goes only into the variable of that registry.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mayfly_core::protocol::shim::{Family, need, token_vars};
use mayfly_core::{Env, EnvVars, Issued, Operation, Scheme, Secret, Target};
use mayfly_fuzz::{Header, assert_normalised, fixture, lines, section, sections};

const TOKEN: &str = "mayfly-fuzz-token";

fuzz_target!(|data: &[u8]| {
    let header = Header::read(data);
    let Some(family) = Family::from_name(&header.action) else { return };
    let parts = sections(header.rest);
    let args = lines(section(&parts, "").unwrap_or_default());
    let root = &fixture().scratch;
    let (project, home) = (root.join("project"), root.join("home"));
    write(&project.join("package.json"), section(&parts, "package.json"));
    write(&project.join(".npmrc"), section(&parts, "npmrc"));
    write(&home.join(".npmrc"), section(&parts, "home-npmrc"));
    let mut vars = vec![(EnvVars::HOME.to_owned(), home.display().to_string())];
    for line in lines(section(&parts, "env").unwrap_or_default()) {
        if let Some((name, value)) = line.split_once('=') {
            vars.push((name.to_owned(), value.to_owned()));
        }
    }
    let Ok(Some(need)) = need(family, &args, &Env::from_pairs(vars), &project) else { return };
    let registry = &need.registry;
    let shown = registry.as_str();
    assert!(registry.username().is_empty() && registry.password().is_none(), "userinfo in {shown}");
    assert!(registry.host_str().is_some_and(|h| !h.is_empty()), "no host in {shown}");
    assert!(registry.path().ends_with('/') || family == Family::Twine, "{shown} does not end in `/`");
    assert!(!shown.chars().any(|c| c.is_whitespace() || c.is_control()), "{shown:?}");
    // hf's reads name the repository, the Hub's resource.
    assert!(
        need.package.is_none() || need.operation != Operation::Read || family == Family::Hf,
        "a read names a package"
    );
    let host = match registry.port() {
        Some(port) => format!("{}:{port}", registry.host_str().unwrap_or_default()),
        None => registry.host_str().unwrap_or_default().to_owned(),
    };
    if let Ok(target) = Target::new(family.tool(), registry.scheme(), &host, need.package.as_deref()) {
        assert_normalised(&target);
    }
    let issued = Issued {
        token: Secret::new(TOKEN),
        expires_at: None,
        token_id: None,
        scheme: Scheme::Bearer,
        username: "__token__".into(),
        from_cache: false,
    };
    for (name, value) in token_vars(family, registry, &issued) {
        assert!(!name.is_empty() && !name.contains('\0') && !name.contains('='), "variable name {name:?}");
        assert!(!value.contains('\0'), "value of {name}");
        let named_for_registry = name == format!("npm_config_//{host}{}:_authToken", registry.path())
            || ["MAYFLY_NPM_TOKEN", "TWINE_PASSWORD", "HF_TOKEN"].contains(&name.as_str());
        assert!(value != TOKEN || named_for_registry, "the token went into {name}");
    }
});

/// Writes a section to its file, or removes the file when the input has no such section.
fn write(path: &Path, body: Option<&[u8]>) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the scratch directories");
    }
    match body {
        Some(body) => std::fs::write(path, body).expect("write a scratch file"),
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
}
