//! A running exchange's lifecycle: the config in force, replaced whole on SIGHUP, and a
//! drain on SIGTERM.
//!
//! A reload reads the config file again, with its rules, Cedar policies and signing keys,
//! and builds a new exchange around the state that outlives it (the revocation store's
//! connection, the audit writer, approvals, sessions, the approval login, the webhook and
//! the GitHub App). A request is served by the exchange in force when it arrives. A config
//! that does not load, or that changes a setting only a restart can change, is refused with
//! one line on stderr and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::FromRef;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Config;
use crate::keys::KeySet;
use crate::server::{POLICY_POLL, Sts};

/// The exchange in force; each request takes it once, when it arrives.
#[derive(Clone)]
pub(crate) struct Live(Arc<RwLock<Arc<Sts>>>);

impl Live {
    pub(crate) fn new(sts: Arc<Sts>) -> Self {
        Self(Arc::new(RwLock::new(sts)))
    }

    /// The exchange in force now.
    pub(crate) fn current(&self) -> Arc<Sts> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn replace(&self, sts: Sts) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(sts);
    }
}

impl FromRef<Live> for Arc<Sts> {
    fn from_ref(live: &Live) -> Self {
        live.current()
    }
}

/// The first setting that differs between two configs among those a reload cannot change:
/// the public name, the listener and the state opened once and kept.
fn fixed_change(old: &Config, new: &Config) -> Option<&'static str> {
    [
        ("issuer", old.issuer == new.issuer),
        ("listen", old.listen == new.listen),
        ("tls", old.tls == new.tls),
        ("revocation_store", old.revocation_store == new.revocation_store),
        ("audit_log", old.audit_log == new.audit_log),
        ("audit_max_size", old.audit_max_size == new.audit_max_size),
        ("audit_keep", old.audit_keep == new.audit_keep),
        ("approval_ttl", old.approval_ttl == new.approval_ttl),
        ("approval_interval", old.approval_interval == new.approval_interval),
        ("session_idle", old.session_idle == new.session_idle),
        ("approval_login", old.approval_login == new.approval_login),
        ("approval_webhook", old.approval_webhook == new.approval_webhook),
        ("github_app", old.github_app == new.github_app),
        ("rate_limit", old.rate_limit == new.rate_limit),
        ("log_format", old.log_format == new.log_format),
    ]
    .into_iter()
    .find_map(|(name, same)| (!same).then_some(name))
}

impl Sts {
    /// The exchange `config` describes, keeping this one's lasting state and the keys it
    /// already holds; an error when the config changes what only a restart can.
    pub(crate) fn reloaded(&self, config: Config) -> Result<Self, String> {
        if let Some(name) = fixed_change(&self.config, &config) {
            return Err(format!("`{name}` cannot change without a restart"));
        }
        let keys = match (config.signing_keys.is_empty(), self.config.signing_keys.is_empty()) {
            // An ephemeral key lives as long as the process.
            (true, true) => self.keys.clone(),
            (true, false) => return Err("the signing keys cannot be removed without a restart".into()),
            (false, _) => Arc::new(KeySet::load(&config.signing_keys, Some(&self.keys))?),
        };
        Self::assemble(config, keys, self.lasting.clone())
    }
}

/// What a running exchange is told by its service manager.
enum Event {
    Hangup,
    Stop(&'static str),
}

/// The signals a served exchange acts on, installed before it says it is listening so
/// that none arrives unhandled.
pub(crate) struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.hangup.recv() => Event::Hangup,
            _ = self.terminate.recv() => Event::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Event::Stop("SIGINT"),
        }
    }
}

/// Serves on a bound listener, with TLS when the config has it, and acts on signals:
/// SIGHUP reloads the config file `config` (with its policies, keys and TLS certificate);
/// SIGTERM or SIGINT stops accepting connections, lets requests in flight finish within
/// `shutdown_timeout`, flushes the audit log and returns. Policy files are also reloaded
/// when they change.
pub async fn serve_until_stopped(sts: Sts, listener: std::net::TcpListener, config: PathBuf) -> std::io::Result<()> {
    let signals = Signals::install()?;
    crate::log::info(&format!("listening on {}", listener.local_addr()?));
    run(sts, listener, Some((signals, config))).await
}

/// Serves until stopped by a signal (when `signals` are given) or forever.
pub(crate) async fn run(
    sts: Sts,
    listener: std::net::TcpListener,
    signals: Option<(Signals, PathBuf)>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let tls = match &sts.config.tls {
        Some(tls) => Some(RustlsConfig::from_pem_file(&tls.cert, &tls.key).await?),
        None => None,
    };
    let live = Live::new(Arc::new(sts));
    let app = Sts::routes(live.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum_server::Handle::new();
    let watcher = tokio::spawn(watch(live.clone(), signals, tls.clone(), server.clone()));
    // TCP_NODELAY on every accepted connection: without it a small answer written in two
    // segments waits for the client's delayed ACK (about 40 ms on Linux), which a new TLS
    // connection per exchange meets at the end of its handshake.
    let listening = axum_server::from_tcp(listener)?.handle(server);
    let served = match tls {
        Some(tls) => listening.acceptor(RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor)).serve(app).await,
        None => listening.acceptor(NoDelayAcceptor).serve(app).await,
    };
    watcher.abort();
    // The lines of requests answered while draining are on disk before the process exits.
    if let Err(e) = live.current().lasting.audit.flush().await {
        crate::log::error(&format!("cannot write the audit log: {e}"));
    }
    served
}

/// Polls the policy files, and acts on signals until one says stop.
async fn watch(
    live: Live,
    mut signals: Option<(Signals, PathBuf)>,
    tls: Option<RustlsConfig>,
    server: axum_server::Handle<std::net::SocketAddr>,
) {
    let mut ticks = tokio::time::interval(POLICY_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = ticks.tick() => None,
            Some(event) = async {
                match signals.as_mut() {
                    Some((signals, _)) => Some(signals.next().await),
                    None => std::future::pending().await,
                }
            } => Some(event),
        };
        match (event, &signals) {
            (None, _) => {
                let Some(cedar) = live.current().cedar.clone() else { continue };
                match tokio::task::spawn_blocking(move || cedar.poll()).await {
                    Ok(Some(Ok(line))) => crate::log::info(&line),
                    Ok(Some(Err(line))) => crate::log::error(&line),
                    _ => {}
                }
            }
            (Some(Event::Hangup), Some((_, path))) => match reload(&live, path, tls.as_ref()).await {
                Ok(line) => crate::log::info(&line),
                Err(e) => crate::log::error(&format!("config reload failed, keeping the config in force: {e}")),
            },
            (Some(Event::Stop(name)), _) => {
                let grace = live.current().config.shutdown_timeout;
                crate::log::info(&format!(
                    "{name}: accepting no new connections; waiting up to {}s for requests in flight",
                    grace.as_secs()
                ));
                server.graceful_shutdown(Some(grace));
                return;
            }
            (Some(Event::Hangup), None) => {}
        }
    }
}

/// Reads the config file again and puts the exchange it describes in force (the TLS
/// certificate too); on any error nothing changes. Returns the line to log.
async fn reload(live: &Live, path: &Path, tls: Option<&RustlsConfig>) -> Result<String, String> {
    let (current, file) = (live.current(), path.to_owned());
    let next = tokio::task::spawn_blocking(move || {
        let config = Config::load(&file).map_err(|e| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        })?;
        current.reloaded(config)
    })
    .await
    .map_err(|e| e.to_string())??;
    if let (Some(tls), Some(files)) = (tls, &next.config.tls) {
        tls.reload_from_pem_file(&files.cert, &files.key)
            .await
            .map_err(|e| format!("cannot load the TLS certificate `{}`: {e}", files.cert.display()))?;
    }
    let policies = next.cedar.as_ref().map_or(0, |c| c.current().len());
    let line = format!(
        "config reloaded: {} rules, {policies} policies; signing keys: {}",
        next.config.rules.len(),
        next.keys.summary()
    );
    live.replace(next);
    Ok(line)
}
