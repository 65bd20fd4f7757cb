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
            return bundle(Path::new(&file));
        } else if let Some(dirs) = var("SSL_CERT_DIR") {
            // Colon-separated, as OpenSSL reads it.
            let mut all = rustls_native_certs::CertificateResult::default();
            for dir in std::env::split_paths(&dirs) {
                let one = rustls_native_certs::load_certs_from_paths(None, Some(&dir));
                all.certs.extend(one.certs);
            }
            all
        } else if let Some(file) = BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
            return bundle(file);
        } else if let Some(dir) = DIRS.iter().map(Path::new).find(|p| p.is_dir()) {
            rustls_native_certs::load_certs_from_paths(None, Some(dir))
        } else {
            rustls_native_certs::CertificateResult::default()
        };
        loaded.certs.iter().filter_map(|der| reqwest::Certificate::from_der(der).ok()).collect()
    })
}

/// The certificates of a bundle file (none when it cannot be read).
fn bundle(file: &Path) -> Vec<reqwest::Certificate> {
    let pem = std::fs::read(file).unwrap_or_default();
    pem_certificates(&pem).iter().filter_map(|der| reqwest::Certificate::from_der(der).ok()).collect()
}

/// The DER of each `CERTIFICATE` block of a PEM bundle, in order; blocks that do not
/// decode are skipped, as is everything outside blocks (comments, other kinds). Not
/// constant time, unlike rustls's reader: certificates are public, and that reader took a
/// third of a cold `get`'s time on a system bundle of 140 of them.
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let begin = memchr::memmem::Finder::new(b"-----BEGIN CERTIFICATE-----");
    let end = memchr::memmem::Finder::new(b"-----END CERTIFICATE-----");
    // As rustls and OpenSSL read them, a marker starts a line: one inside a comment is text.
    let at_line_start = |text: &[u8], at: usize| at == 0 || text[at - 1] == b'\n';
    let find =
        |finder: &memchr::memmem::Finder<'_>, text: &[u8]| finder.find_iter(text).find(|&at| at_line_start(text, at));
    let (mut out, mut text) = (Vec::new(), Vec::new());
    let mut rest = pem;
    while let Some(start) = find(&begin, rest) {
        rest = &rest[start + begin.needle().len()..];
        let Some(stop) = find(&end, rest) else { break };
        text.clear();
        let mut from = 0;
        for to in memchr::memchr_iter(b'\n', &rest[..stop]).chain([stop]) {
            text.extend_from_slice(rest[from..to].trim_ascii());
            from = to + 1;
        }
        out.extend(base64::engine::general_purpose::STANDARD.decode(&text).ok());
        rest = &rest[stop + end.needle().len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_reads_as_rustls_reads_it() {
        let Some(file) = BUNDLES.iter().map(Path::new).find(|p| p.is_file()) else {
            assert!(std::env::var_os("CI").is_none(), "no system CA bundle: install ca-certificates");
            eprintln!("SKIPPED: no system CA bundle on this machine");
            return;
        };
        let theirs: Vec<Vec<u8>> = rustls_native_certs::load_certs_from_paths(Some(file), None)
            .certs
            .into_iter()
            .map(|der| der.to_vec())
            .collect();
        let mut ours = pem_certificates(&std::fs::read(file).unwrap());
        // rustls-native-certs sorts and drops repeats: the same set of roots.
        ours.sort_unstable();
        ours.dedup();
        let mut theirs = theirs;
        theirs.sort_unstable();
        assert!(theirs.len() > 10, "{}", theirs.len());
        assert!(ours == theirs, "{} certificates read, rustls reads {}", ours.len(), theirs.len());
    }

    #[test]
    fn comments_other_kinds_and_crlf_are_read_past_and_broken_blocks_skipped() {
        let pem = "# a comment -----BEGIN CERTIFICATE----- CQo= -----END CERTIFICATE-----\n\
                   # -----BEGIN CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\r\nAAEC\r\nAw==\r\n-----END CERTIFICATE-----\r\n\
                   -----BEGIN TRUSTED CERTIFICATE-----\nBAU=\n-----END TRUSTED CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBgc=\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nCAk=\n";
        assert_eq!(pem_certificates(pem.as_bytes()), [vec![0, 1, 2, 3], vec![6, 7]]);
    }
}
