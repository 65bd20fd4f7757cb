//! The system's trust roots for HTTPS exchanges, loaded once per process and only when an
//! `https` endpoint is first asked: `SSL_CERT_FILE` if set, else `SSL_CERT_DIR` if set,
//! else the first system bundle file that exists, else the first certificate directory.
//! One bundle file is one read; a directory is a read per certificate.

use std::path::Path;
use std::sync::OnceLock;

/// Bundle files, in the order distributions put them (Debian/Ubuntu, RHEL/Fedora,
/// Alpine and the BSDs, SUSE).
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// Certificate directories, when no bundle file exists.
const DIRS: &[&str] = &["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// The system roots (none when no source has any: HTTPS then fails as untrusted, unless
/// the exchange names its own `ca_file`).
pub(crate) fn system_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let loaded = if let Some(file) = var("SSL_CERT_FILE") {
            rustls_native_certs::load_certs_from_paths(Some(Path::new(&file)), None)
        } else if let Some(dirs) = var("SSL_CERT_DIR") {
            // Colon-separated, as OpenSSL reads it.
            let mut all = rustls_native_certs::CertificateResult::default();
            for dir in std::env::split_paths(&dirs) {
                let one = rustls_native_certs::load_certs_from_paths(None, Some(&dir));
                all.certs.extend(one.certs);
            }
            all
        } else if let Some(file) = BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
            rustls_native_certs::load_certs_from_paths(Some(file), None)
        } else if let Some(dir) = DIRS.iter().map(Path::new).find(|p| p.is_dir()) {
            rustls_native_certs::load_certs_from_paths(None, Some(dir))
        } else {
            rustls_native_certs::CertificateResult::default()
        };
        loaded.certs.iter().filter_map(|der| reqwest::Certificate::from_der(der).ok()).collect()
    })
}
