//! The error codes of OAuth 2.0 (RFC 6749 section 5.2, RFC 7009, RFC 8693) that this
//! exchange answers with: one type, so a code is never misspelt on the wire.

use std::fmt;

/// An OAuth error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthError {
    /// The request is malformed or its subject token is refused.
    InvalidRequest,
    /// The client could not be authenticated (introspection).
    InvalidClient,
    /// The audience (RFC 8693's target) is not allowed.
    InvalidTarget,
    /// A requested scope is malformed or not allowed.
    InvalidScope,
    /// Not a token exchange.
    UnsupportedGrantType,
    /// Something failed here.
    ServerError,
    /// A dependency is down; try again later (RFC 7009 section 2.2.1).
    TemporarilyUnavailable,
    /// The request waits for a person's approval; poll again (RFC 8628 section 3.5).
    AuthorizationPending,
    /// Polled faster than the interval; wait longer (RFC 8628 section 3.5).
    SlowDown,
    /// A person denied the request.
    AccessDenied,
    /// The approval expired before the token was collected.
    ExpiredToken,
    /// The approval code is unknown, for another request, or used.
    InvalidGrant,
}

impl OAuthError {
    /// The code as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::AccessDenied => "access_denied",
            Self::ExpiredToken => "expired_token",
            Self::InvalidGrant => "invalid_grant",
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
