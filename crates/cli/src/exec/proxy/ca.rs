//! The session's certificate authority and the bundle clients trust inside the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::PrivateKeyDer;

use super::host_name;

/// The session's certificate authority: its key never leaves this process's memory.
pub(super) struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub(super) pem: String,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl Ca {
    pub(super) fn new() -> Result<Self, rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.distinguished_name.push(rcgen::DnType::CommonName, "mayfly exec --proxy session CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key), leaves: Mutex::new(HashMap::new()) })
    }

    /// The TLS config that serves `host` (`name[:port]`) with a leaf signed by this CA.
    pub(super) fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let name = host_name(host);
        let mut leaves = self.leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(config) = leaves.get(&name) {
            return Ok(config.clone());
        }
        let err = |e: rcgen::Error| e.to_string();
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let mut params = rcgen::CertificateParams::new(vec![name.clone()]).map_err(err)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name.as_str());
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(str::to_owned)?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], der)
                .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        leaves.insert(name, config.clone());
        Ok(config)
    }
}

/// The bundle clients trust inside the session: the system roots (as this process finds
/// them, `SSL_CERT_FILE` included) and the session CA.
pub(crate) fn ca_bundle(ca_pem: &str) -> String {
    let mut bundle = String::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        bundle.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = STANDARD.encode(cert.as_ref());
        for chunk in encoded.as_bytes().chunks(64) {
            bundle.push_str(&String::from_utf8_lossy(chunk));
            bundle.push('\n');
        }
        bundle.push_str("-----END CERTIFICATE-----\n");
    }
    bundle.push_str(ca_pem);
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_ca_signs_leaves_for_names_and_addresses() {
        let ca = Ca::new().unwrap();
        assert!(ca.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.server_config("git.example:8443").is_ok());
        assert!(ca.server_config("127.0.0.1:8443").is_ok());
        assert_eq!(ca.leaves.lock().unwrap().len(), 2);
    }
}
