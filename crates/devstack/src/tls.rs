//! A throwaway certificate authority and a loopback server certificate.

use std::path::{Path, PathBuf};

/// A CA and a certificate for `127.0.0.1` and `localhost` signed by it, as PEM files.
pub struct DevCa {
    /// CA certificate (what clients trust).
    pub ca_cert: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
}

impl DevCa {
    /// Generates the CA and the server certificate into `dir`.
    pub fn create(dir: &Path) -> Result<Self, String> {
        let err = |e: rcgen::Error| e.to_string();
        let ca_key = rcgen::KeyPair::generate().map_err(err)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "mayfly development CA (loopback only)");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(err)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        let write = |name: &str, pem: String| -> Result<PathBuf, String> {
            let path = dir.join(name);
            std::fs::write(&path, pem).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
            Ok(path)
        };
        Ok(Self {
            ca_cert: write("ca.pem", ca_cert.pem())?,
            cert: write("server.pem", cert.pem())?,
            key: write("server-key.pem", key.serialize_pem())?,
        })
    }

    /// The TLS config for a server using this certificate.
    pub async fn rustls(&self) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&self.cert, &self.key).await
    }
}

impl DevCa {
    /// The exchange's `[tls]` section: serve with the server certificate.
    pub fn sts_tls(&self) -> mayfly_sts::Tls {
        mayfly_sts::Tls { cert: self.cert.clone(), key: self.key.clone() }
    }
}
