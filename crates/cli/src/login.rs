//! `mayfly login` and `mayfly logout`: a person signs in at the organisation's OpenID
//! provider and the login's ID token becomes the subject token of the `oidc` identity's
//! routes. The tokens stay in memory-backed storage ([`mayfly_core::login`]).

use std::process::ExitCode;

use anyhow::{Context, bail};
use mayfly_core::{Config, Env, IdentityConfig, sanitize_for_terminal};

use crate::status::{rfc3339, span};

/// Arguments of `mayfly login`.
#[derive(clap::Args)]
pub(crate) struct LoginArgs {
    /// The `oidc` identity to sign in (the only one when the config has one)
    identity: Option<String>,
    /// Sign in with the device authorization grant (RFC 8628): open a URL on any device
    /// and enter a code. For SSH sessions and machines without a browser
    #[arg(long, conflicts_with = "browser")]
    device: bool,
    /// Sign in in a browser on this machine (authorization code with PKCE, redirected to
    /// a loopback port), even where none can be started: the URL is printed to open by
    /// hand. The default when `$BROWSER` is set or a display exists
    #[arg(long)]
    browser: bool,
    /// How long a browser login waits for the sign-in
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_wait)]
    timeout: std::time::Duration,
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    mayfly_core::parse_duration(text)
        .and_then(|d| if d.is_zero() { Err("the timeout must be longer than zero".into()) } else { Ok(d) })
}

/// Arguments of `mayfly logout`.
#[derive(clap::Args)]
pub(crate) struct LogoutArgs {
    /// The `oidc` identity to sign out (the only one when the config has one)
    identity: Option<String>,
}

/// The named `oidc` identity, or the only one.
fn pick<'a>(config: &'a Config, name: Option<&str>) -> anyhow::Result<&'a IdentityConfig> {
    if let Some(name) = name {
        return config
            .identities
            .get(name)
            .with_context(|| format!("no identity named `{name}` in `{}`", config.path.display()));
    }
    let oidc: Vec<&IdentityConfig> = config.identities.values().filter(|i| i.kind() == "oidc").collect();
    match oidc.as_slice() {
        [one] => Ok(one),
        [] => bail!("no `oidc` identity in `{}`: add one to sign in with `mayfly login`", config.path.display()),
        many => {
            let names: Vec<&str> = many.iter().map(|i| i.name.as_str()).collect();
            bail!("several `oidc` identities ({}): name one, as in `mayfly login {}`", names.join(", "), names[0])
        }
    }
}

pub(crate) fn login(args: &LoginArgs) -> anyhow::Result<ExitCode> {
    use mayfly_core::login::Flow;
    let env = Env::from_os();
    let config = Config::load(&env)?;
    let identity = pick(&config, args.identity.as_deref())?;
    let flow = match (args.device, args.browser) {
        (true, _) => Flow::Device,
        (false, true) => Flow::Browser,
        (false, false) => Flow::Auto,
    };
    let login = mayfly_core::login::login(identity, &env, flow, args.timeout, &mut std::io::stderr())
        .map_err(anyhow::Error::msg)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    eprintln!(
        "mayfly: logged in to `{}` as {} until {} (ends after {} unused), kept in the {}",
        login.identity,
        who(&login),
        rfc3339(login.until),
        span(login.idle_until - now),
        login.store
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logout(args: &LogoutArgs) -> anyhow::Result<ExitCode> {
    let env = Env::from_os();
    let config = Config::load(&env)?;
    let identity = pick(&config, args.identity.as_deref())?;
    let logout = mayfly_core::login::logout(identity, &env).map_err(anyhow::Error::msg)?;
    let dropped = drop_cached(&config, &identity.name, &env);
    let Some(login) = logout.login else {
        eprintln!("mayfly: not logged in to `{}`", identity.name);
        return Ok(ExitCode::SUCCESS);
    };
    let failed = matches!(logout.revoked, Some(Err(_)));
    let revoked = match logout.revoked {
        Some(Ok(host)) => format!("; refresh token revoked at {host}"),
        Some(Err(why)) => format!("; revoking the refresh token failed ({why}): it lives until the provider ends it"),
        None => "; the provider offers no revocation: the refresh token lives until it ends it".into(),
    };
    let cached = if dropped > 0 { format!("; {dropped} cached token(s) dropped") } else { String::new() };
    eprintln!("mayfly: logged out of `{}` ({}){revoked}{cached}", login.identity, who(&login));
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Revokes (where the issuer can) and drops the cached tokens minted through the
/// identity's routes: they were minted for the login that just ended. Returns how many.
fn drop_cached(config: &Config, identity: &str, env: &Env) -> usize {
    let broker = mayfly_core::Broker::new(env.clone(), config.clone());
    let ended = broker.end_identity(identity, &mayfly_core::ancestry());
    for failure in &ended.failures {
        mayfly_core::protocol::warn(failure);
    }
    ended.revoked + ended.dropped
}

/// `sub` and, when present, the email, cleaned for the terminal.
pub(crate) fn who(login: &mayfly_core::login::Login) -> String {
    let sub = login.subject.as_deref().unwrap_or("-");
    match &login.email {
        Some(email) => sanitize_for_terminal(&format!("{sub} <{email}>")),
        None => sanitize_for_terminal(sub),
    }
}
