//! Loopback development servers for `mayfly demo` and the end-to-end tests.
//!
//! Nothing here is for production: the [`DevIssuer`] signs ID tokens for anyone on this
//! machine who asks, which is exactly what a development issuer is for.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod aws_sts_gate;
mod azure;
mod cargo_registry;
mod crates_io;
mod gate;
mod gcp;
mod git_server;
mod github;
mod gitlab;
mod go_proxy;
mod issuer;
mod kube_api;
mod metadata;
mod module_registry;
mod nuget;
mod oci_front;
mod pypi;
mod pypi_index;
mod rubygems;
mod spiffe;
mod tls;

mod cloudsmith;
mod docker_hub;
mod hugging_face;
mod jfrog;
mod recording;

pub use aws_sts_gate::AwsStsGate;
pub use azure::{AZURE_TOKEN_EXCHANGE_AUDIENCE, AzureStandIn};
pub use cargo_registry::CargoRegistry;
pub use crates_io::{CRATES_IO_AUDIENCE, CratesIoExchange, TrustedTokens};
pub use gate::StsClient;
pub use gcp::GcpSts;
pub use git_server::{GitServer, GitServerStats};
pub use github::{GitHub, RecordedRequest, TrustPolicy};
pub use gitlab::{GITLAB_EXCHANGE_AUDIENCES, GitlabExchange};
pub use go_proxy::{GO_MODULES, GO_VERSION, GoProxy, go_greeting};
pub use issuer::{AZURE_AUDIENCE, AZURE_OIDC_PATH, AzureRequest, DevIssuer};
pub use kube_api::{KubeApiServer, Stored};
pub use metadata::{
    AZURE_IMDS_SUBJECT, AZURE_IMDS_TOKEN_PATH, GCE_IDENTITY_PATH, GCE_SUBJECT, MetadataRequest, MetadataServer,
};
pub use module_registry::{MODULE, ModuleRegistry};
pub use nuget::{NUGET_AUDIENCE, NUGET_KEY_REFUSED, NugetGallery, NugetPolicy};
pub use oci_front::OciFront;
pub use pypi::{PYPI_AUDIENCE, Pypi, pytp_key};
pub use pypi_index::{PYPI_INDEX_PROJECTS, PypiIndex, pypi_greeting};
pub use rubygems::{RUBYGEMS_AUDIENCE, RubygemsOrg};
pub use spiffe::{AgentMode, OTHER_SPIFFE_ID, SPIFFE_ID, SpiffeAgent, WorkloadRequest};
pub use tls::DevCa;

pub use cloudsmith::Cloudsmith;
pub use docker_hub::{DOCKER_HUB_AUDIENCE, DOCKER_HUB_REGISTRY_ISSUER, DockerHub};
pub use hugging_face::{HUGGING_FACE_AUDIENCE, HuggingFaceHub};
pub use jfrog::Artifactory;

/// A multi-threaded runtime that serves in the background while the caller blocks.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

/// Random bytes as hex, for ids and opaque tokens.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the OS random source is available");
    hex::encode(buffer)
}

/// Binds an ephemeral loopback port.
pub fn loopback_listener() -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves an app over HTTPS on a new loopback port, in the background: its base URL.
pub(crate) fn serve_on_loopback(
    runtime: &tokio::runtime::Runtime,
    ca: &DevCa,
    app: axum::Router,
) -> Result<String, String> {
    let listener = loopback_listener().map_err(|e| e.to_string())?;
    let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
    serve_tls(runtime, listener, ca, app)?;
    Ok(base_url)
}

/// Serves an app over HTTPS with the development CA's certificate, in the background.
pub(crate) fn serve_tls(
    runtime: &tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    ca: &DevCa,
    app: axum::Router,
) -> Result<(), String> {
    let tls = runtime.block_on(ca.rustls()).map_err(|e| e.to_string())?;
    let _guard = runtime.enter();
    let server = axum_server::from_tcp_rustls(listener, tls).map_err(|e| e.to_string())?;
    runtime.spawn(server.serve(app.into_make_service()));
    Ok(())
}
