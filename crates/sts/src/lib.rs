//! `mayfly-sts`: a reference RFC 8693 token exchange for organisations that have none.
//!
//! It verifies OIDC subject tokens against trusted issuers (discovery + JWKS, RS256 and
//! ES256), asks a [`Policy`] whether the workload may have the audience and scopes it
//! asks for, mints a short-lived ES256 JWT, publishes its own JWKS, and writes one audit
//! line per decision. Its one piece of lasting state is the set of revoked tokens (RFC 7009),
//! behind a [`RevocationStore`] that replicas can share; introspection (RFC 7662) lets
//! resource servers see revocations. A Cedar forbid annotated `@approval("GROUP")` holds a
//! request until a person of GROUP approves it (human approval, kept in memory, or with
//! the revocations in PostgreSQL, shared by replicas). Sessions
//! end when revoked, when an administrator ends them (`POST /admin/revoke`), or on their
//! next use after `session_idle` unused (last uses kept like approvals). An optional webhook
//! announces approvals as they open and are decided.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod approval;
mod approval_http;
mod approval_login;
mod approval_page;
mod audit;
pub mod cedar;
mod config;
mod delegation;
mod github_app;
mod health;
mod keys;
pub mod log;
mod metrics;
mod oauth;
mod own_tokens;
mod pg_shared;
mod policy;
pub mod policy_tool;
mod postgres;
mod rate_limit;
mod registry;
mod reload;
mod revocation;
mod server;
mod sessions;
mod verify;
mod webhook;

pub use config::{
    AdministratorEntry, ApprovalLogin, ApproverEntry, Config, ConfigFile, Error as ConfigError, GithubAppEntry,
    IntrospectionClient, IntrospectionClientEntry, RuleEntry, Tls, TrustedIssuer,
};
pub use keys::{Algorithm, KeySet, KeyState, SigningKey, SigningKeyEntry};
pub use oauth::OAuthError;
pub use policy::{Acting, ApprovalNeed, ApprovalState, Denial, ExchangeAsk, Grant, Policy, Rule, Rules, Staged};
pub use postgres::PgStore;
pub use rate_limit::{RateLimit, RateLimitEntry};
pub use reload::serve_until_stopped;
pub use revocation::{RedbStore, RevocationStore};
pub use server::{Sts, policy_handle, serve};
pub use verify::{Rejection, VerifiedSubject, Verifier};
pub use webhook::{ApprovalWebhook, ApprovalWebhookEntry};
