//! `mayfly-sts`: a reference RFC 8693 token exchange for organisations that have none.
//!
//! It verifies OIDC subject tokens against trusted issuers (discovery + JWKS, RS256 and
//! ES256), asks a [`Policy`] whether the workload may have the audience and scopes it
//! asks for, mints a short-lived ES256 JWT, publishes its own JWKS, and writes one audit
//! line per decision. It keeps no state, so replicas scale out behind a load balancer.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
mod config;
mod keys;
mod policy;
mod registry;
mod server;
mod verify;

pub use config::{Config, Error as ConfigError, TrustedIssuer};
pub use keys::{Algorithm, SigningKey};
pub use policy::{Denial, ExchangeAsk, Grant, Policy, Rule, Rules, glob_match};
pub use server::{Sts, serve};
pub use verify::{Rejection, VerifiedSubject, Verifier};
