//! Splitting URLs found in credential files and git config, so a credential in the
//! userinfo can be fingerprinted and the rest shown without it.

/// The parts of `scheme://[user[:password]@]host[/path]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Url<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
}

impl<'a> Url<'a> {
    /// Splits a URL; `None` when it has no `scheme://`.
    pub(crate) fn split(text: &'a str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let valid = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
        if scheme.is_empty() || !scheme.chars().all(valid) {
            return None;
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').map_or((u, None), |(u, p)| (u, Some(p)))) {
            Some((user, password)) => (Some(user), password),
            None => (None, None),
        };
        Some(Self { scheme, user, password, host, path })
    }

    /// The URL without its userinfo: safe to show.
    pub(crate) fn display(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    /// The secret in the userinfo, percent-decoded as the tool would send it: the
    /// password, or a token-shaped user name (GitHub takes a token as the user alone).
    pub(crate) fn secret(&self) -> Option<String> {
        match (self.user, self.password) {
            (_, Some(password)) if !password.is_empty() => Some(percent_decode(password)),
            (Some(user), _) if looks_like_token(&percent_decode(user)) => Some(percent_decode(user)),
            _ => None,
        }
    }
}

/// True for a value shaped like a JWT or a well-known token format.
pub(crate) fn looks_like_token(value: &str) -> bool {
    !value.is_empty() && mayfly_core::redact_tokens(value, &[]) != value
}

/// `%XX` escapes decoded; a malformed escape is kept as it is.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_userinfo_from_what_is_shown() {
        let url = Url::split("https://me:p%40ss@git.example:8443/org/app.git").unwrap();
        assert_eq!(url.host, "git.example:8443");
        assert_eq!(url.path, "/org/app.git");
        assert_eq!(url.secret().as_deref(), Some("p@ss"));
        assert_eq!(url.display(), "https://git.example:8443/org/app.git");
        assert_eq!(Url::split("https://git.example").unwrap().secret(), None);
        assert_eq!(Url::split("https://someone@git.example/").unwrap().secret(), None);
        let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz"; // mayfly-guard: allow
        assert_eq!(Url::split(&format!("https://{token}@github.com")).unwrap().secret().as_deref(), Some(token));
        assert!(Url::split("git.example/path").is_none());
        assert!(Url::split("a b://x").is_none());
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
