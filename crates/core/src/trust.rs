//! The trust roots for HTTPS exchanges. An exchange's own CA file (`ca_file`) is tried
//! first; the system's roots are loaded once per process, and only when a server's chain
//! is not anchored by that file (or there is none): a private exchange never pays for
//! reading and parsing the system bundle. The system's: `SSL_CERT_FILE` if set, else
//! `SSL_CERT_DIR` if set, else the first system bundle file that exists, else the first
//! certificate directory. One bundle file is one read; a directory is a read per
//! certificate. Either set of roots is enough, as when both were one store.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

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
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
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
        loaded.certs
    })
}

/// The certificates of a bundle file (none when it cannot be read).
fn bundle(file: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(file).unwrap_or_default();
    pem_certificates(&pem).into_iter().map(CertificateDer::from).collect()
}

/// A server certificate verifier that tries the exchange's own roots, then (built on
/// first need) the system's beside them.
#[derive(Debug)]
pub(crate) struct Roots {
    provider: Arc<CryptoProvider>,
    own: Vec<CertificateDer<'static>>,
    own_verifier: Option<Arc<WebPkiServerVerifier>>,
    with_system: OnceLock<Result<Arc<WebPkiServerVerifier>, rustls::Error>>,
    /// Where the system's roots come from ([`system_roots`]; tests give their own).
    system: fn() -> &'static [CertificateDer<'static>],
}

impl Roots {
    /// Trusts `own` (an exchange's CA file; none is fine) and the system's roots.
    pub(crate) fn new(provider: Arc<CryptoProvider>, own: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let own_verifier = if own.is_empty() { None } else { Some(verifier(&provider, &own, &[])?) };
        Ok(Self { provider, own, own_verifier, with_system: OnceLock::new(), system: system_roots })
    }

    /// True once the system's roots were loaded (for tests).
    #[cfg(test)]
    fn system_loaded(&self) -> bool {
        self.with_system.get().is_some()
    }
}

/// A WebPKI verifier trusting `first` and `then`.
fn verifier(
    provider: &Arc<CryptoProvider>,
    first: &[CertificateDer<'static>],
    then: &[CertificateDer<'static>],
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(first.iter().chain(then).cloned());
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| format!("no usable trust roots: {e}"))
}

impl ServerCertVerifier for Roots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(own) = &self.own_verifier
            && let Ok(verified) = own.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            return Ok(verified);
        }
        // Any failure is tried again with every root, so what is accepted is exactly what
        // one store of both would accept (a chain may have another path to a system root).
        let with_system = self
            .with_system
            .get_or_init(|| verifier(&self.provider, &self.own, (self.system)()).map_err(rustls::Error::General));
        with_system.as_ref().map_err(Clone::clone)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
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

    /// A CA named `ca_name` and a `localhost` server certificate it signed, as DER.
    fn ca_and_server(ca_name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let server = server.signed_by(&rcgen::KeyPair::generate().unwrap(), &issuer).unwrap();
        (ca_cert.der().clone(), server.der().clone())
    }

    #[test]
    fn the_exchanges_own_roots_are_tried_first_and_the_systems_loaded_only_when_needed() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (ca, server) = ca_and_server("the exchange's CA");
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();

        // Anchored by the exchange's own CA: verified, the system bundle never read.
        let roots = Roots::new(provider.clone(), vec![ca.clone()]).unwrap();
        assert!(roots.verify_server_cert(&server, &[], &name, &[], now).is_ok());
        assert!(!roots.system_loaded());
        // The wrong name is refused, with every root tried.
        let other = ServerName::try_from("other.example").unwrap();
        assert!(roots.verify_server_cert(&server, &[], &other, &[], now).is_err());
        assert!(roots.system_loaded());

        // Not anchored by it (another CA signed the server): the system roots are loaded,
        // and they do not anchor it either.
        let (_, stranger) = ca_and_server("another CA");
        let roots = Roots::new(provider.clone(), vec![ca]).unwrap();
        let refused = roots.verify_server_cert(&stranger, &[], &name, &[], now).unwrap_err();
        assert!(roots.system_loaded());
        assert!(
            matches!(refused, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
            "{refused:?}"
        );

        // Anchored only by a system root, with a CA file of another CA: accepted, through
        // the system's roots.
        static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
        let (system_ca, public) = ca_and_server("a public CA");
        SYSTEM.set(vec![system_ca]).unwrap();
        let mut roots = Roots::new(provider.clone(), vec![ca_and_server("a private CA").0]).unwrap();
        roots.system = || SYSTEM.get().unwrap();
        assert!(roots.verify_server_cert(&public, &[], &name, &[], now).is_ok());
        assert!(roots.system_loaded());

        // No CA file: the system roots, at once.
        let roots = Roots::new(provider, Vec::new()).unwrap();
        assert!(roots.verify_server_cert(&server, &[], &name, &[], now).is_err());
        assert!(roots.system_loaded());
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
