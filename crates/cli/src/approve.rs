//! `mayfly approve ID` / `mayfly deny ID --reason ...`: a person decides on a request an
//! exchange holds for approval, proving who they are with their own mayfly identity.
//!
//! The approval id only names the request: collecting its token needs the secret the
//! requester alone holds, and deciding needs an approver's verified ID token. The exchange
//! refuses an approver outside the policy's group, and the requester approving itself.

use anyhow::{Context, bail};
use mayfly_core::{Config, Env, ExchangeConfig, ExchangeKind, HttpClient, IdentityConfig, sanitize_for_terminal};
use serde_json::Value;

/// Arguments of `mayfly approve` and `mayfly deny`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The approval id (the last part of the URL the waiting tool printed)
    id: String,
    /// The exchange holding the request (default: the config's only rfc8693 exchange)
    #[arg(long, value_name = "NAME")]
    exchange: Option<String>,
    /// Your identity, whose ID token proves who approves (default: the config's only one)
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// Why: shown to the requester (at most 300 characters)
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

/// Approves (`approve`) or denies the request.
pub(crate) fn run(args: &Args, approve: bool) -> anyhow::Result<std::process::ExitCode> {
    let env = Env::from_os();
    let config = Config::load(&env).map_err(|e| anyhow::anyhow!(mayfly_core::protocol::one_line(&e)))?;
    anyhow::ensure!(
        !args.id.is_empty() && args.id.len() <= 64 && args.id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "`{}` is not an approval id: it is the last part of the approval URL",
        sanitize_for_terminal(&args.id)
    );
    if let Some(reason) = &args.reason {
        anyhow::ensure!(reason.chars().count() <= 300, "--reason: at most 300 characters");
    }
    let exchange = pick_exchange(&config, args.exchange.as_deref())?;
    let identity = pick_identity(&config, args.identity.as_deref())?;
    let approver = mayfly_core::fetch_subject(identity, &env)
        .map_err(|e| anyhow::anyhow!("identity `{}`: {}", identity.name, mayfly_core::protocol::one_line(&e)))?;
    let http = HttpClient::new(exchange.timeout, exchange.ca_file.as_deref())?;
    let url = approval_url(exchange, &args.id)?;

    let request = http.get(&url)?.bearer_auth(approver.token.expose()).header("Accept", "application/json");
    let (status, body) = http.send(request, &url)?;
    let shown = answer(status, &body)?;
    eprintln!("{}", describe(&shown));

    let decision = if approve { "approve" } else { "deny" };
    let mut form = vec![("decision", decision.to_owned())];
    if let Some(reason) = &args.reason {
        form.push(("reason", reason.clone()));
    }
    let request = http.post(&url)?.bearer_auth(approver.token.expose()).form(&form);
    let (status, body) = http.send(request, &url)?;
    let decided = answer(status, &body)?;
    println!("{}", sanitize_for_terminal(decided["status"].as_str().unwrap_or(decision)));
    Ok(std::process::ExitCode::SUCCESS)
}

fn pick_exchange<'a>(config: &'a Config, name: Option<&str>) -> anyhow::Result<&'a ExchangeConfig> {
    if let Some(name) = name {
        return config.exchanges.get(name).with_context(|| format!("no exchange `{name}` in the config"));
    }
    let mut candidates = config.exchanges.values().filter(|e| e.kind == ExchangeKind::Rfc8693);
    match (candidates.next(), candidates.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => bail!("the config has no rfc8693 exchange to approve at"),
        (Some(_), Some(_)) => bail!("the config has several rfc8693 exchanges: name one with --exchange"),
    }
}

fn pick_identity<'a>(config: &'a Config, name: Option<&str>) -> anyhow::Result<&'a IdentityConfig> {
    if let Some(name) = name {
        return config.identities.get(name).with_context(|| format!("no identity `{name}` in the config"));
    }
    let mut identities = config.identities.values();
    match (identities.next(), identities.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => bail!("the config has no identity to approve with"),
        (Some(_), Some(_)) => bail!("the config has several identities: name yours with --identity"),
    }
}

/// `{issuer}/approve/{id}`, where mayfly-sts serves `/token` from its issuer URL.
fn approval_url(exchange: &ExchangeConfig, id: &str) -> anyhow::Result<url::Url> {
    let endpoint = exchange.token_endpoint.as_str();
    let base = endpoint.strip_suffix("/token").unwrap_or(endpoint);
    Ok(url::Url::parse(&format!("{base}/approve/{id}"))?)
}

/// The JSON of a 200 answer, or the exchange's refusal as one line.
fn answer(status: u16, body: &[u8]) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status == 200 && value.is_object() {
        return Ok(value);
    }
    let field = |name: &str| value[name].as_str().map(sanitize_for_terminal);
    match (field("error"), field("error_description")) {
        (Some(code), Some(description)) => bail!("the exchange answered {status}: {code}: {description}"),
        (Some(code), None) => bail!("the exchange answered {status}: {code}"),
        _ => bail!("the exchange answered {status} without a usable body"),
    }
}

/// What the approver is deciding on, in a few lines; the intent is the client's claim.
fn describe(request: &Value) -> String {
    let text = |v: &Value| sanitize_for_terminal(v.as_str().unwrap_or("?"));
    let scopes: Vec<String> = request["scopes"].as_array().map(|s| s.iter().map(text).collect()).unwrap_or_default();
    let mut lines = vec![
        format!("request {} ({})", text(&request["id"]), text(&request["status"])),
        format!("  who:      {} ({})", text(&request["requester"]["sub"]), text(&request["requester"]["iss"])),
    ];
    if let Some(actor) = request["actor"].as_object() {
        let declared = if actor.get("declared").and_then(Value::as_bool) == Some(true) { ", declared" } else { "" };
        lines.push(format!("  through:  {}{declared}", text(&request["actor"]["sub"])));
    }
    let ttl = request["ttl"].as_u64().map(|s| format!(", a token living {s}s")).unwrap_or_default();
    lines.push(format!("  wants:    {} for {}{ttl}", scopes.join(" "), text(&request["audience"])));
    if let Some(command) = request["intent"]["command"].as_str() {
        lines.push(format!("  command:  {} (claimed by the client)", sanitize_for_terminal(command)));
    }
    lines.push(format!("  policy:   {} (approvers: {})", text(&request["policy"]), text(&request["group"])));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_described_with_the_intent_marked_as_claimed_and_nothing_raw() {
        let request = serde_json::json!({
            "id": "ab12", "status": "pending",
            "requester": {"iss": "https://ci.example", "sub": "repo:org/app"},
            "actor": {"sub": "agent:claude", "declared": true},
            "audience": "https://git.example", "scopes": ["repo:org/release:write"],
            "intent": {"command": "git push origin main\u{1b}[2J"},
            "policy": "release", "group": "release-managers",
        });
        let text = describe(&request);
        assert!(text.contains("through:  agent:claude, declared"), "{text}");
        assert!(text.contains("git push origin main"), "{text}");
        assert!(text.contains("(claimed by the client)"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn refusals_are_one_line_with_the_exchanges_reason() {
        let error = answer(403, br#"{"error":"access_denied","error_description":"you asked for it yourself"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "the exchange answered 403: access_denied: you asked for it yourself");
        assert!(answer(502, b"<html>").unwrap_err().to_string().contains("without a usable body"));
        assert!(answer(200, br#"{"status":"approved"}"#).is_ok());
    }
}
