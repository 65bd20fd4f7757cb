//! A Go module proxy (`GOPROXY` protocol: static `@v/list`, `.info`, `.mod` and `.zip`
//! files) on loopback HTTPS that serves each file only to a token minted by one
//! `mayfly-sts` for its audience with the scope `repo:<file path>:read`, as the git
//! server checks repositories: the Go command asks `git credential fill` for each file's
//! URL (`GOAUTH=git`), so each file is a target of its own.

use std::collections::BTreeMap;

use crate::gate::{GatedFile, GatedFiles};
use crate::{DevCa, StsClient};

/// The modules served, each at version [`GO_VERSION`] with one package printing a line.
pub const GO_MODULES: [&str; 2] = ["mayfly.example/greeting", "mayfly.example/private"];
/// The one version of each module.
pub const GO_VERSION: &str = "v1.0.0";

/// A running module proxy.
pub struct GoProxy {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    server: GatedFiles,
}

impl GoProxy {
    /// Starts the proxy over HTTPS with `ca`'s certificate, trusting tokens from `sts`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, sts: &StsClient) -> Result<Self, String> {
        let server = GatedFiles::start(runtime, ca, sts, "mayfly-dev-goproxy", module_files(), str::to_owned)?;
        Ok(Self { base_url: server.base_url.clone(), server })
    }

    /// The files served so far, by path.
    pub fn served(&self) -> Vec<String> {
        self.server.served()
    }

    /// Requests answered 401 or 403 so far.
    pub fn refused(&self) -> usize {
        self.server.refused()
    }
}

/// What the package of module `module` prints.
pub fn go_greeting(module: &str) -> String {
    format!("hello from {module}, fetched with a mayfly token")
}

/// Every file of the proxy protocol for each module, by path without the leading `/`.
fn module_files() -> BTreeMap<String, GatedFile> {
    let mut files = BTreeMap::new();
    for module in GO_MODULES {
        let name = module.rsplit('/').next().unwrap_or(module);
        let go_mod = format!("module {module}\n\ngo 1.21\n");
        let source = format!(
            "// Package {name} says hello.\npackage {name}\n\n// Hello is the greeting.\nfunc Hello() string {{ return {:?} }}\n",
            go_greeting(module)
        );
        let prefix = format!("{module}@{GO_VERSION}");
        let zip = stored_zip(&[
            (format!("{prefix}/go.mod"), go_mod.as_bytes()),
            (format!("{prefix}/{name}.go"), source.as_bytes()),
        ]);
        let at = format!("{module}/@v");
        // Each file is a target of its own: its scope names its path.
        let mut insert = |path: String, content_type, body| {
            files.insert(path.clone(), GatedFile { content_type, scope: format!("repo:{path}:read"), body });
        };
        insert(format!("{at}/list"), "text/plain", format!("{GO_VERSION}\n").into_bytes());
        let info = format!(r#"{{"Version":"{GO_VERSION}","Time":"2026-01-01T00:00:00Z"}}"#);
        insert(format!("{at}/{GO_VERSION}.info"), "application/json", info.into_bytes());
        insert(format!("{at}/{GO_VERSION}.mod"), "text/plain", go_mod.into_bytes());
        insert(format!("{at}/{GO_VERSION}.zip"), "application/zip", zip);
    }
    files
}

/// A zip archive of `entries`, stored without compression (what a module zip may be).
pub(crate) fn stored_zip(entries: &[(String, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        let name_len = name.len() as u16;
        // Local file header: version 2.0, no flags, stored, no time, CRC, sizes, name.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        for field in [20u16, 0, 0, 0, 0x21] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size, size] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // Its central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        for field in [20u16, 20, 0, 0, 0, 0x21] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size, size] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        for field in [name_len, 0, 0, 0, 0] {
            central.extend_from_slice(&field.to_le_bytes());
        }
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    let central_len = central.len() as u32;
    let count = entries.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for field in [0u16, 0, count, count] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// CRC-32 (IEEE), bit by bit: the archives are a few hundred bytes.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn each_module_has_every_proxy_file() {
        let files = module_files();
        for module in GO_MODULES {
            for suffix in ["list", "v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip"] {
                assert!(files.contains_key(&format!("{module}/@v/{suffix}")), "{module} {suffix}");
            }
        }
        let zip = &files["mayfly.example/greeting/@v/v1.0.0.zip"].body;
        assert!(zip.starts_with(b"PK\x03\x04") && zip.ends_with(&[0, 0]));
    }
}
