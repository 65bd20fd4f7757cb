//! A private Python package index on loopback HTTPS, as PyPI-compatible private indexes
//! serve one: a PEP 503 simple index (`GET /simple/<project>/`, links to
//! `/packages/<file>#sha256=...`) whose pages and files each need a token minted by one
//! `mayfly-sts` for its audience (its URL) with the scope `pypi:<project>:read`, presented
//! as Basic `__token__:TOKEN` (or Bearer). No token: 401 with `Basic` and `Bearer`
//! challenges; a token for another project: 403.
//!
//! Each project in [`PYPI_INDEX_PROJECTS`] has one pure-Python wheel, version 1.0.0, whose
//! module (the project's name with `_`) holds `GREETING` ([`pypi_greeting`]).

use std::collections::BTreeMap;

use base64::Engine;
use sha2::Digest;

use crate::gate::{GatedFile, GatedFiles};
use crate::{DevCa, StsClient};

/// The projects served.
pub const PYPI_INDEX_PROJECTS: [&str; 2] = ["mayfly-demo", "mayfly-other"];

/// What project `project`'s module holds as `GREETING`.
pub fn pypi_greeting(project: &str) -> String {
    format!("hello from {project}, fetched with a mayfly token")
}

/// A running index.
pub struct PypiIndex {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// `https://127.0.0.1:PORT/simple/`, pip's `--index-url`.
    pub index_url: String,
    server: GatedFiles,
}

impl PypiIndex {
    /// Starts the index over HTTPS with `ca`'s certificate, trusting tokens from `sts`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, sts: &StsClient) -> Result<Self, String> {
        // pip asks for `simple/<project>` with or without the slash.
        let key = |path: &str| match path.starts_with("simple/") && !path.ends_with('/') {
            true => format!("{path}/"),
            false => path.to_owned(),
        };
        let server = GatedFiles::start(runtime, ca, sts, "mayfly-dev-pypi-index", index_files(), key)?;
        Ok(Self { index_url: format!("{}/simple/", server.base_url), base_url: server.base_url.clone(), server })
    }

    /// The paths served so far (pages and files), in order.
    pub fn served(&self) -> Vec<String> {
        self.server.served()
    }

    /// Requests answered 401 or 403 so far.
    pub fn refused(&self) -> usize {
        self.server.refused()
    }
}

/// A wheel's RECORD hash: `sha256=` and the unpadded URL-safe base64 digest.
fn record_hash(data: &[u8]) -> String {
    format!("sha256={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data)))
}

/// Each project's simple page and wheel.
fn index_files() -> BTreeMap<String, GatedFile> {
    let mut files = BTreeMap::new();
    for project in PYPI_INDEX_PROJECTS {
        let module = project.replace('-', "_");
        let wheel_name = format!("{module}-1.0.0-py3-none-any.whl");
        let info = format!("{module}-1.0.0.dist-info");
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            (format!("{module}/__init__.py"), format!("GREETING = {:?}\n", pypi_greeting(project)).into_bytes()),
            (
                format!("{info}/METADATA"),
                format!("Metadata-Version: 2.1\nName: {project}\nVersion: 1.0.0\n").into_bytes(),
            ),
            (
                format!("{info}/WHEEL"),
                b"Wheel-Version: 1.0\nGenerator: mayfly-devstack\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
            ),
        ];
        let mut record: String =
            entries.iter().map(|(name, data)| format!("{name},{},{}\n", record_hash(data), data.len())).collect();
        record.push_str(&format!("{info}/RECORD,,\n"));
        entries.push((format!("{info}/RECORD"), record.into_bytes()));
        let borrowed: Vec<(String, &[u8])> = entries.iter().map(|(n, d)| (n.clone(), d.as_slice())).collect();
        let wheel = crate::go_proxy::stored_zip(&borrowed);
        let digest = hex::encode(sha2::Sha256::digest(&wheel));
        let page = format!(
            "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Links for {project}</title></head>\n<body><h1>Links for {project}</h1>\n<a href=\"../../packages/{wheel_name}#sha256={digest}\">{wheel_name}</a><br/>\n</body></html>\n"
        );
        files.insert(
            format!("simple/{project}/"),
            GatedFile { content_type: "text/html; charset=utf-8", scope: read(project), body: page.into_bytes() },
        );
        let wheel = GatedFile { content_type: "application/zip", scope: read(project), body: wheel };
        files.insert(format!("packages/{wheel_name}"), wheel);
    }
    files
}

/// The scope reading `project`'s page or files needs.
fn read(project: &str) -> String {
    format!("pypi:{project}:read")
}
