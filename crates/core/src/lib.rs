//! The core of mayfly, shared by every helper binary, the `mayfly` command and the
//! reference exchange.
//!
//! A request flows through it in one direction:
//!
//! ```text
//! hook protocol (protocol::git ...) -> route (config + target)
//!   -> cache (age-encrypted, single-flight) -> identity source (subject token)
//!   -> exchange (RFC 8693 ...) -> audit (one JSON line per decision)
//! ```
//!
//! [`Broker`] is the one protocol-agnostic entry point: a helper parses its tool's
//! request into a [`Target`], asks the broker for a token, and writes the answer back in
//! its tool's own format.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ancestry;
mod audit;
mod broker;
mod cache;
mod config;
pub mod deferred;
mod duration;
mod env;
mod exchange;
pub mod files;
pub mod guard;
mod http;
mod identity;
pub mod ini;
mod jwt;
mod keyring;
pub mod login;
pub mod pattern;
pub mod protocol;
mod redact;
pub mod scope;
mod seal;
mod secret;
pub mod shape;
mod target;
mod trust;

pub use ancestry::{Process, ancestry, command_of, infer_git_operation, infer_oci_operation};
pub use audit::{AuditEvent, AuditLog, Outcome, ProcessRef, rfc3339_now};
pub use broker::{Broker, Ended, Error as BrokerError, Issued, Resolution};
pub use cache::{Cache, CacheEntry, Error as CacheError, Listed, Origin};
pub use config::{
    Config, ConfigFile, Error as ConfigError, ExchangeConfig, ExchangeEntry, ExchangeKind, IdentityConfig,
    IdentityEntry, Route, RouteEntry, Scheme, SettingsEntry,
};
pub use duration::parse_duration;
pub use env::{Env, EnvVars};
pub use exchange::{
    ACCESS_TOKEN_TYPE, Error as ExchangeError, ExchangeResponse, ID_TOKEN_TYPE, Intent, TOKEN_EXCHANGE_GRANT,
};
pub use http::{Error as HttpError, HttpClient, is_loopback_url};
pub use identity::{
    Detected as IdentityDetected, Error as IdentityError, Presence as IdentityPresence, SubjectToken, fetch_subject,
};
pub use jwt::{Claims as UnverifiedClaims, peek_claims};
pub use redact::{
    REDACTED, clip, contains_jwt, redact_tokens, sanitize_for_terminal, sanitize_keeping_lines, scan_for_jwts,
    token_kind,
};
pub use scope::{Scope, ScopeTemplate};
pub use secret::{Fingerprint, Secret};
pub use shape::command_shape;
pub use target::{Error as TargetError, Operation, Target, Tool, normalize_host, normalize_repo_path};
