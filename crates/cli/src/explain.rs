//! `mayfly explain`: what a helper would do with one request, on one screen.
//!
//! The target goes through the same normalisation and routing as a hook's request, so a
//! surprising answer here is the answer the tool gets. Nothing is fetched or minted
//! unless `--exchange` asks for it; then the request runs through [`Broker::token`] in a
//! private session that is ended at once, so the token it mints is revoked where the
//! exchange can revoke and leaves no cache entry behind.

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use mayfly_core::{
    Broker, BrokerError, Cache, Config, Env, EnvVars, ExchangeError, ExchangeKind, Operation, Process, Resolution,
    Route, Scheme, Target, Tool, protocol::one_line, sanitize_for_terminal,
};

use crate::status::{rfc3339, span, table};

/// Arguments of `mayfly explain`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  mayfly explain git https://git.example.com/org/app --operation write\n  \
    mayfly explain oci registry.example.com/team/app\n  mayfly explain aws deploy --exchange")]
pub(crate) struct Args {
    /// The tool whose request to explain
    #[arg(value_parser = ["git", "kubectl", "terraform", "cargo", "oci", "npm", "pypi", "gem", "nuget", "aws", "http", "vault", "hf"])]
    tool: String,
    /// `https://HOST/PATH` (git: the repository; hf: the Hub's resource, `NS/NAME`,
    /// `datasets/NS/NAME`, `spaces/NS/NAME`; cargo, npm, pypi: the package; gem: the gem; nuget:
    /// the gallery), `HOST/REPO` for oci, the route name for aws
    target: String,
    /// The operation to ask for
    #[arg(long, default_value = "read", value_parser = ["read", "write", "publish", "yank", "owners"])]
    operation: String,
    /// Really ask: fetch the subject token and call the exchange. This mints a real token
    /// (never printed), in a private session that is ended at once: the token is revoked
    /// where the exchange can revoke, and otherwise lives until it expires
    #[arg(long)]
    exchange: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let env = Env::from_os();
    let broker = Broker::from_env(env.clone()).map_err(|e| anyhow!(one_line(&e)))?;
    // hf's shim asks git's routes, with the Hub's resource as the repository path.
    let hf = args.tool == "hf";
    let tool: Tool = if hf { Tool::Git } else { args.tool.parse().map_err(|e: String| anyhow!(e))? };
    let operation: Operation = args.operation.parse().map_err(|e: String| anyhow!(e))?;
    let (target, note) = parse_target(tool, &args.target, operation)?;
    let mut rows = vec![row("target", format!("{} ({})", target.display(), args.tool))];
    if let Some(note) = note {
        rows.push(row("", note));
    }
    if hf {
        rows.push(row("", "the hf shim asks for write for `hf upload`, read for `hf download`"));
    }
    let route = match broker.resolve(&target) {
        Resolution::Route(route) => route,
        Resolution::NoRoute => {
            rows.extend(no_route(broker.config(), &target));
            print!("{}", table(&rows));
            return Ok(ExitCode::FAILURE);
        }
        Resolution::NeedsPath => {
            rows.push(row(
                "route",
                "none: the routes for this host bind tokens to a repository path, and this request has none",
            ));
            rows.push(row("", "git sends the path only with `credential.useHttpPath = true` for the host"));
            rows.extend(routes_for_host(broker.config(), &target));
            print!("{}", table(&rows));
            return Ok(ExitCode::FAILURE);
        }
    };
    let hugging_face =
        broker.config().exchanges.get(&route.exchange).is_some_and(|e| e.kind == ExchangeKind::HuggingFace);
    if hf && !hugging_face {
        rows.push(row("hf", "not served: the route's exchange is not of kind huggingface, so hf runs without a token"));
    }
    let allowed = route.operations.contains(&operation);
    rows.extend(describe(&env, broker.config(), route, &target, operation));
    rows.push(row("cached", cached(&env, route, &target, operation)));
    let mut ok = allowed;
    if args.exchange {
        if allowed {
            let (granted, lines) = exchange(&env, broker.config(), route, &target, operation)?;
            ok = granted;
            rows.extend(lines);
        } else {
            rows.push(row("result", format!("not asked: the route does not allow {operation}")));
        }
    }
    print!("{}", table(&rows));
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn row(label: &str, value: impl Into<String>) -> Vec<String> {
    vec![label.to_owned(), value.into()]
}

/// The target a hook would build for this request, and a note when part of the input
/// does not reach it.
fn parse_target(tool: Tool, text: &str, operation: Operation) -> anyhow::Result<(Target, Option<String>)> {
    let shown = sanitize_for_terminal(text);
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("invalid target `{shown}`");
    }
    if tool == Tool::Aws {
        let target = Target::aws(text).with_context(|| format!("invalid aws route name `{shown}`"))?;
        return Ok((target, None));
    }
    let text = if tool == Tool::Cargo { text.strip_prefix("sparse+").unwrap_or(text) } else { text };
    let (protocol, rest) = match text.split_once("://") {
        Some((protocol, rest)) => (protocol, rest),
        // Registries are named by host and repository, as `docker push` names them.
        None if tool == Tool::Oci => ("", text),
        None => bail!("the target of {} is a URL: https://HOST/PATH (got `{shown}`)", tool.as_str()),
    };
    let (host, path) = rest.split_once('/').map_or((rest, None), |(h, p)| (h, Some(p).filter(|p| !p.is_empty())));
    let (path, note) = match tool {
        Tool::Kubectl | Tool::Terraform | Tool::Vault if path.is_some() => {
            (None, Some(format!("the path is ignored: {} asks per host", tool.as_str())))
        }
        Tool::Oci if !protocol.is_empty() && path.is_some() => {
            (None, Some("the path is ignored: a registry URL names only the registry".into()))
        }
        Tool::Nuget if path.is_some() => {
            (None, Some("the package is ignored: a NuGet key is the gallery's (its policy names the packages)".into()))
        }
        Tool::Cargo | Tool::Npm | Tool::Gem if operation == Operation::Read && path.is_some() => {
            (None, Some("the package is ignored: reads are registry-wide".into()))
        }
        // `mayfly exec --proxy` binds a read to the project of the page or file it asks
        // for; the twine shim only uploads.
        Tool::Pypi if operation == Operation::Read => match path {
            Some(_) => (path, Some("a read is bound to this project (through `mayfly exec --proxy`)".into())),
            None => (None, Some("a read names a project: `mayfly exec --proxy` refuses one that names none".into())),
        },
        _ => (path, None),
    };
    let protocol = if protocol.is_empty() { "https" } else { protocol };
    let target = Target::new(tool, protocol, host, path).with_context(|| format!("invalid target `{shown}`"))?;
    Ok((target, note))
}

/// Why no route matched: the routes for the same host and what sets each apart, else
/// which hosts the tool has routes for.
fn no_route(config: &Config, target: &Target) -> Vec<Vec<String>> {
    let tool = target.tool.as_str();
    if target.tool == Tool::Aws {
        let names: Vec<&str> = config.routes.iter().filter(|r| r.tool == Tool::Aws).map(|r| r.name.as_str()).collect();
        let known = if names.is_empty() {
            "there are no aws routes".into()
        } else {
            format!("aws routes: {}", names.join(", "))
        };
        return vec![row("route", format!("none: no aws route named `{}` ({known})", target.host))];
    }
    let mut rows = vec![row("route", format!("none: no {tool} route matches {}", target.display()))];
    if let Some(note) = config.missing_note() {
        rows.push(row("config", note));
        return rows;
    }
    let same_host = routes_for_host(config, target);
    if !same_host.is_empty() {
        rows.extend(same_host);
        return rows;
    }
    let mut hosts: Vec<String> = config
        .routes
        .iter()
        .filter(|r| r.tool == target.tool)
        .map(|r| format!("{}://{}", r.protocol, r.host))
        .collect();
    hosts.dedup();
    rows.push(match hosts.len() {
        0 => row("", format!("there are no {tool} routes in {}", config.path.display())),
        _ => row("", format!("no route names host {}; {tool} routes are for {}", target.host, hosts.join(", "))),
    });
    rows
}

/// Every route for the target's host, with what keeps it from serving this request.
fn routes_for_host(config: &Config, target: &Target) -> Vec<Vec<String>> {
    config
        .routes
        .iter()
        .filter(|r| r.host == target.host)
        .map(|r| {
            let mut why = Vec::new();
            if r.tool != target.tool {
                why.push(format!("it is for {}", r.tool.as_str()));
            }
            if r.protocol != target.protocol {
                why.push(format!("it is for {}", r.protocol));
            }
            match (&r.path, &target.path) {
                (Some(prefix), None) => why.push(format!("it needs a path under {prefix}")),
                (Some(prefix), Some(path)) if !covers(prefix, path) => {
                    why.push(format!("its path {prefix} does not cover {path}"))
                }
                _ => {}
            }
            let path = r.path.as_deref().map(|p| format!(" path {p}")).unwrap_or_default();
            let why = if why.is_empty() { String::new() } else { format!(": {}", why.join(", ")) };
            row("", format!("- route `{}` ({} {}://{}{path}){why}", r.name, r.tool.as_str(), r.protocol, r.host))
        })
        .collect()
}

/// Whole-segment prefix, as routes match paths.
fn covers(prefix: &str, path: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The route, operation, scope, audience, identity and exchange a request would use.
fn describe(env: &Env, config: &Config, route: &Route, target: &Target, operation: Operation) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let place = match (&route.path, route.tool) {
        (_, Tool::Aws) => "chosen by name".to_owned(),
        (Some(path), _) => format!("{}://{} path {path}", route.protocol, route.host),
        (None, _) => format!("{}://{}", route.protocol, route.host),
    };
    rows.push(row("route", format!("`{}` ({} {place})", route.name, route.tool.as_str())));
    let allowed = route.operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ");
    rows.push(row(
        "operation",
        if route.operations.contains(&operation) {
            format!("{operation}: allowed (the route allows {allowed})")
        } else {
            format!("{operation}: not allowed by this route (allowed: {allowed}); refused before any exchange")
        },
    ));
    rows.push(row(
        "scope",
        route.scope_for(target, operation).map_or_else(|e| format!("refused: {e}"), |scope| scope.to_string()),
    ));
    let exchange = &config.exchanges[&route.exchange];
    rows.push(row(
        "audience",
        if route.audience.is_empty() {
            exchange.known_audience().unwrap_or_else(|| "the exchange's own, worked out at exchange time".into())
        } else {
            route.audience.clone()
        },
    ));
    if let Some(role) = &route.role_arn {
        rows.push(row("role", role.clone()));
    }
    rows.push(row("ttl", format!("{} asked (the exchange may grant less)", span(route.ttl.as_secs() as i64))));
    rows.push(row(
        "presented",
        match route.scheme {
            _ if route.tool == Tool::Nuget => {
                "as the whole X-NuGet-ApiKey value of a push (`mayfly exec --proxy`)".to_owned()
            }
            Scheme::Bearer => "as a Bearer token".to_owned(),
            Scheme::Basic => format!("as Basic, username `{}`", route.username),
            Scheme::Plain => "as the whole Authorization value".to_owned(),
        },
    ));
    let identity = &config.identities[&route.identity];
    let source = format!("{} {}", identity.kind(), identity.origin(env));
    let audience = if exchange.kind.wants_fresh_subject() {
        // The exchange checks the ID token's audience itself (a registry takes each once).
        match route.audience.as_str() {
            "" => "a fresh ID token per exchange, never cached, for the audience the exchange names".to_owned(),
            audience => format!("a fresh ID token per exchange, never cached, audience {audience}"),
        }
    } else {
        identity.audience.as_deref().map_or_else(|| "the source's own audience".into(), |a| format!("audience {a}"))
    };
    rows.push(row("identity", format!("`{}` ({source}; {audience})", identity.name)));
    if let Some(detected) = identity.detected(env) {
        rows.push(row("detected", detected.to_string()));
    }
    let revokes = match (&exchange.revocation_endpoint, exchange.revokes()) {
        (Some(endpoint), _) => format!("revokes at {endpoint}"),
        (None, true) => "can revoke its tokens (at erase and session end)".into(),
        (None, false) => "cannot revoke".into(),
    };
    rows.push(row(
        "exchange",
        format!("`{}` ({}, {}; {revokes})", exchange.name, exchange.kind.name(), exchange.token_endpoint),
    ));
    rows
}

/// Whether the next request would be served from the cache: this session's entry for
/// the route, target and operation.
fn cached(env: &Env, route: &Route, target: &Target, operation: Operation) -> String {
    let cache = match Cache::open(env) {
        Ok(cache) => cache,
        Err(e) => return format!("the cache is off ({}): every request mints", one_line(&e)),
    };
    let session = env.get(EnvVars::MAYFLY_SESSION);
    let display = target.display();
    let entry = cache
        .session_entries(session, crate::status::now())
        .into_iter()
        .map(|(_, entry)| entry)
        .filter(|e| {
            e.origin
                .as_ref()
                .is_some_and(|o| o.route == route.name && o.target == display && o.operation == operation.as_str())
        })
        .max_by_key(|e| e.expires_at);
    let now = crate::status::now();
    match entry {
        None => "none: the next request mints a token".into(),
        Some(e) if now >= e.expires_at => format!("{} expired at {}", e.token.fingerprint(), rfc3339(e.expires_at)),
        Some(e) if now >= e.refresh_at => format!(
            "{} expires {} (in {}): inside the refresh margin, the next request mints a new one",
            e.token.fingerprint(),
            rfc3339(e.expires_at),
            span(e.expires_at - now)
        ),
        Some(e) => format!(
            "{} expires {} (in {}); served to the next request",
            e.token.fingerprint(),
            rfc3339(e.expires_at),
            span(e.expires_at - now)
        ),
    }
}

/// Runs the request for real, in a private session so the exchange is asked (not the
/// cache) and the token is ended straight after. True when the exchange granted it.
fn exchange(
    env: &Env,
    config: &Config,
    route: &Route,
    target: &Target,
    operation: Operation,
) -> anyhow::Result<(bool, Vec<Vec<String>>)> {
    let session = private_session()?;
    let vars = env.vars().filter(|(k, _)| *k != EnvVars::MAYFLY_SESSION).map(|(k, v)| (k.to_owned(), v.to_owned()));
    let env = Env::from_pairs(vars.chain([(EnvVars::MAYFLY_SESSION.to_owned(), session.clone())]));
    let broker = Broker::new(env.clone(), config.clone());
    let argv: Vec<String> = std::env::args().collect();
    let me = Process { pid: std::process::id(), argv: argv.clone() };
    let chain = [vec![me], mayfly_core::ancestry()].concat();
    let mut rows = Vec::new();
    match broker.token(route, target, operation, &chain) {
        Ok(issued) => {
            let fingerprint = issued.token.fingerprint();
            let expiry =
                issued.expires_at.map_or_else(|| "unknown expiry".to_owned(), |e| format!("expires {}", rfc3339(e)));
            rows.push(row("result", format!("granted in session {session}: {fingerprint}, {expiry}")));
            if let Some(scope) = granted_scope(&env, &session, &fingerprint) {
                rows.push(row("granted", scope));
            }
            drop(issued);
            let outcome = broker.end_session(&session, &chain);
            let exchange = &config.exchanges[&route.exchange];
            let ended = match (outcome.revoked, outcome.dropped, outcome.failures.first()) {
                (_, _, Some(failure)) => format!("not revoked: {failure}"),
                (0, 0, None) => "not revoked (it was not cached): it lives until it expires".into(),
                (_, 0, None) => "revoked at once".into(),
                (_, _, None) => {
                    format!("dropped; {} tokens cannot be revoked: it lives until it expires", exchange.kind.name())
                }
            };
            rows.push(row("", ended));
            Ok((true, rows))
        }
        Err(error) => {
            let label = match &error {
                BrokerError::Exchange { source: ExchangeError::Denied { .. }, .. } => "denied by the exchange",
                BrokerError::Identity { .. } => "failed: no subject token",
                _ => "failed",
            };
            rows.push(row("result", format!("{label}: {}", one_line(&error))));
            Ok((false, rows))
        }
    }
}

/// The scope the exchange granted, as the broker recorded it: in the session's cache
/// entry, else in the audit line it wrote.
fn granted_scope(env: &Env, session: &str, fingerprint: &mayfly_core::Fingerprint) -> Option<String> {
    let from_cache = Cache::open(env).ok().and_then(|cache| {
        cache
            .session_entries(Some(session), crate::status::now())
            .into_iter()
            .find(|(_, e)| e.token.fingerprint() == *fingerprint)
            .and_then(|(_, e)| e.scope)
    });
    from_cache.or_else(|| {
        let log = mayfly_core::AuditLog::from_env(env);
        let text = std::fs::read_to_string(log.path()?).ok()?;
        text.lines().rev().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|event| {
            let mine = event["session"] == session && event["fingerprint"] == fingerprint.as_str();
            mine.then(|| event["scope"].as_str().map(str::to_owned)).flatten()
        })
    })
}

fn private_session() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no random source: {e}"))?;
    Ok(format!("explain-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(tool: Tool, text: &str, operation: Operation) -> (String, Option<String>) {
        let (target, note) = parse_target(tool, text, operation).unwrap();
        (target.display(), note)
    }

    #[test]
    fn targets_normalise_as_the_hooks_build_them() {
        assert_eq!(
            parsed(Tool::Git, "https://Git.Example.com:443/org/app.git", Operation::Write).0,
            "https://git.example.com/org/app"
        );
        assert_eq!(
            parsed(Tool::Oci, "registry.example.com/team/app", Operation::Read).0,
            "https://registry.example.com/team/app"
        );
        let (kube, note) = parsed(Tool::Kubectl, "https://k8s.example.com:6443/api", Operation::Read);
        assert_eq!(kube, "https://k8s.example.com:6443");
        assert!(note.unwrap().contains("ignored"));
        assert_eq!(
            parsed(Tool::Cargo, "sparse+https://crates.example.com/hello", Operation::Publish).0,
            "https://crates.example.com/hello"
        );
        assert_eq!(
            parsed(Tool::Cargo, "https://crates.example.com/hello", Operation::Read).0,
            "https://crates.example.com"
        );
        assert_eq!(parsed(Tool::Aws, "deploy", Operation::Read).0, "aws://deploy");
        // The proxy binds a PyPI read to its project; npm's reads are registry-wide.
        let (pypi, note) = parsed(Tool::Pypi, "https://pypi.example.com/internal-lib", Operation::Read);
        assert_eq!(pypi, "https://pypi.example.com/internal-lib");
        assert!(note.unwrap().contains("bound to this project"));
        let (pypi, note) = parsed(Tool::Pypi, "https://pypi.example.com", Operation::Read);
        assert_eq!(pypi, "https://pypi.example.com");
        assert!(note.unwrap().contains("refuses one that names none"));
        let (npm, note) = parsed(Tool::Npm, "https://npm.example.com/left-pad", Operation::Read);
        assert_eq!(
            (npm.as_str(), note.as_deref()),
            ("https://npm.example.com", Some("the package is ignored: reads are registry-wide"))
        );
        assert_eq!(
            parsed(Tool::Http, "https://files.example.com/dist/v1.zip", Operation::Read).0,
            "https://files.example.com/dist/v1.zip"
        );
    }

    #[test]
    fn hostile_targets_are_refused() {
        for text in [
            "https://good.example@evil.example/x",
            "git.example.com/org/app",
            "https://h/a\nb",
            "ftp://h/x",
            "https://h/a/../b",
        ] {
            assert!(parse_target(Tool::Git, text, Operation::Read).is_err(), "{text:?} accepted");
        }
        assert!(parse_target(Tool::Aws, "not a name", Operation::Read).is_err());
    }

    #[test]
    fn segment_prefixes_match_whole_segments() {
        assert!(covers("org/app", "org/app"));
        assert!(covers("org/app", "org/app/x"));
        assert!(!covers("org/app", "org/apps"));
    }
}
