//! OCI registries: the proxy answers the registry's token challenge itself.
//!
//! Each request of the distribution API names a repository and an operation
//! ([`super::operation::oci`]). The proxy gets the mayfly token for exactly that
//! repository and operation through the broker (a cross-repository mount also needs a
//! pull of its source, checked the same way), presents it at the realm of the registry's
//! `WWW-Authenticate: Bearer` challenge as the docker credential helper's answer would be
//! (Basic, the route's user name and the token), keeps the registry token it gets in
//! memory per (registry, repository, actions) until it expires, and sends the request with
//! it. The client never holds either token: its own `Authorization` is dropped, the API's
//! version check is answered `200` for it, and a routed repository never answers it `401`.
//! The challenge is the one `GET /v2/` answers with, or, for a registry whose `/v2/`
//! answers anonymously, the one a repository's `401` carries (that request is then sent
//! again with the registry token).
//!
//! A realm is only trusted on `https`, on the registry's own host or the host of the
//! route's exchange: a registry cannot have the credential sent elsewhere (not even to a
//! host another route names, whose upstream would then hold this route's credential).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use mayfly_core::{Operation, Outcome, Resolution, Route, Target, Tool};

use super::operation::{self, Family, OciRequest};
use super::replay::{MAX_REPLAY, Replay, not_sent_again};
use super::upstream::{Pool, fetch, send};
use super::{Body, State, mint, refusal};

/// What a registry's `WWW-Authenticate` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    /// The distribution token protocol.
    Bearer { realm: String, service: Option<String> },
    /// Basic: the minted credential goes to the registry itself.
    Basic,
    /// The registry asks for nothing.
    None,
}

/// Registry tokens and challenges, in memory for the proxy's lifetime.
#[derive(Default)]
pub(super) struct Tokens {
    challenges: Mutex<HashMap<String, Challenge>>,
    /// By (registry, scopes asked): the token and when to stop using it.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

/// How long before its expiry a registry token is no longer used.
const MARGIN: Duration = Duration::from_secs(10);
/// The lifetime the token protocol assumes when the realm names none.
const DEFAULT_LIFETIME: u64 = 60;
/// The longest a registry token is kept, whatever the realm says.
const MAX_LIFETIME: u64 = 300;

/// How long a registry token is used: the realm's `expires_in` (or the protocol's
/// default), never past the minted token it was got with (`minted_expires_at`, unix
/// seconds) nor `MAX_LIFETIME`, less `MARGIN`.
fn registry_token_life(expires_in: Option<u64>, minted_expires_at: Option<i64>, now: i64) -> Duration {
    let mut seconds = expires_in.unwrap_or(DEFAULT_LIFETIME).min(MAX_LIFETIME);
    if let Some(at) = minted_expires_at {
        seconds = seconds.min(u64::try_from(at.saturating_sub(now)).unwrap_or(0));
    }
    Duration::from_secs(seconds).saturating_sub(MARGIN)
}

/// The parameters of one `WWW-Authenticate` challenge; `None` when it is not one.
pub(super) fn parse_challenge(value: &str) -> Option<(String, HashMap<String, String>)> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        let after = after.trim_start();
        if after.is_empty() {
            break;
        }
        rest = after.strip_prefix(',')?.trim_start();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

fn challenge_of<B>(response: &Response<B>) -> Challenge {
    let values = response.headers().get_all(header::WWW_AUTHENTICATE);
    let mut basic = false;
    for value in values {
        let Some((scheme, params)) = value.to_str().ok().and_then(parse_challenge) else { continue };
        match scheme.as_str() {
            "bearer" => {
                if let Some(realm) = params.get("realm") {
                    return Challenge::Bearer { realm: realm.clone(), service: params.get("service").cloned() };
                }
            }
            "basic" => basic = true,
            _ => {}
        }
    }
    if basic { Challenge::Basic } else { Challenge::None }
}

/// The realm as a URL, when it may receive the credential of a route to `registry`.
pub(super) fn trusted_realm(
    realm: &str,
    registry: &str,
    route: &Route,
    config: &mayfly_core::Config,
) -> Result<url::Url, String> {
    let shown = mayfly_core::sanitize_for_terminal(&realm.chars().take(200).collect::<String>());
    let url = url::Url::parse(realm).map_err(|_| format!("the registry's token realm `{shown}` is not a URL"))?;
    if url.scheme() != "https" || !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(format!("the registry's token realm `{shown}` is not a plain https URL"));
    }
    let host = host_port(&url)
        .and_then(|h| mayfly_core::normalize_host("https", &h).ok())
        .ok_or_else(|| format!("the registry's token realm `{shown}` names no host"))?;
    let exchange_host = config
        .exchanges
        .get(&route.exchange)
        .and_then(|e| host_port(&e.token_endpoint))
        .and_then(|h| mayfly_core::normalize_host("https", &h).ok());
    let trusted = host == registry || exchange_host.as_deref() == Some(host.as_str());
    if trusted {
        Ok(url)
    } else {
        Err(format!(
            "the registry `{registry}` sent its token realm to `{host}`, which is neither the registry nor the route's exchange: refused"
        ))
    }
}

/// `host[:port]` of a URL, as routes name hosts.
fn host_port(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

fn empty_body() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

fn sensitive(value: &str) -> Option<header::HeaderValue> {
    let mut value = header::HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// One request to a host an OCI route names.
pub(super) async fn forward(
    req: Request<Incoming>,
    state: &Arc<State>,
    host: &str,
    protocol: &str,
    pool: &Pool,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // The client holds no registry credential; whatever it sends is not passed on.
    parts.headers.remove(header::AUTHORIZATION);
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let line = |outcome,
                operation: Option<Operation>,
                target: Option<&Target>,
                route: &str,
                fill: &dyn Fn(&mut mayfly_core::AuditEvent)| {
        state.line(outcome, method.as_str(), host, &path, target, |e| {
            e.operation = operation.map(|o| o.as_str().into()).unwrap_or_default();
            e.route = route.to_owned();
            fill(e);
        });
    };
    let refuse = |status: StatusCode, reason: String, operation, target: Option<&Target>, route: &str| {
        line(Outcome::Denied, operation, target, route, &|e| e.reason = Some(reason.clone()));
        refusal(Family::Oci, status, &format!("mayfly: {reason}"))
    };
    let request = match operation::oci(&method, &path, parts.uri.query()) {
        Ok(request) => request,
        Err(reason) => return refuse(StatusCode::FORBIDDEN, reason, None, None, ""),
    };
    let Some(host_route) =
        state.settings.broker.config().routes.iter().find(|r| r.tool == Tool::Oci && r.host == host).cloned()
    else {
        return refuse(StatusCode::BAD_GATEWAY, "no route names this registry".into(), None, None, "");
    };
    let (name, operation, mount_from) = match request {
        OciRequest::Base => {
            // The version check: answered for the client when the registry challenges, so
            // the client never starts a token dance of its own.
            let req = Request::from_parts(parts, body.boxed());
            let response = match send(req, state, host, protocol, Some(&host_route), pool).await {
                Ok(response) => response,
                Err(e) => {
                    return refuse(StatusCode::BAD_GATEWAY, e.reason, Some(Operation::Read), None, &host_route.name);
                }
            };
            if response.status() != StatusCode::UNAUTHORIZED {
                line(Outcome::Proxied, Some(Operation::Read), None, &host_route.name, &|e| {
                    e.reason = Some(format!("upstream answered {}", response.status().as_u16()));
                });
                return response;
            }
            let challenge = challenge_of(&response);
            state.oci.learn(host, challenge);
            line(Outcome::Proxied, Some(Operation::Read), None, &host_route.name, &|e| {
                e.reason = Some("upstream answered 401: the proxy answers its challenges".into());
            });
            let mut answer =
                Response::new(Full::new(Bytes::from_static(b"{}")).map_err(|never| match never {}).boxed());
            answer.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            answer
                .headers_mut()
                .insert("docker-distribution-api-version", header::HeaderValue::from_static("registry/2.0"));
            return answer;
        }
        OciRequest::Repository { name, operation, mount_from } => (name, operation, mount_from),
    };
    let target = match Target::new(Tool::Oci, protocol, host, Some(&name)) {
        Ok(target) => target,
        Err(e) => return refuse(StatusCode::FORBIDDEN, e.to_string(), Some(operation), None, ""),
    };
    let route = match state.settings.broker.resolve(&target) {
        Resolution::Route(route) => route.clone(),
        _ => {
            let reason = format!("no route grants {} of `{name}` on `{host}`", pull_or_push(operation));
            return refuse(StatusCode::FORBIDDEN, reason, Some(operation), Some(&target), "");
        }
    };
    let mut issued = match mint(state, &route, &target, operation).await {
        Ok(issued) => issued,
        Err(reason) => return refuse(StatusCode::FORBIDDEN, reason, Some(operation), Some(&target), &route.name),
    };
    // A mount pulls from its source: refused unless a route would grant that pull too.
    if let Some(from) = &mount_from {
        let source = Target::new(Tool::Oci, protocol, host, Some(from)).map_err(|e| e.to_string());
        let checked = match source {
            Ok(source) => match state.settings.broker.resolve(&source) {
                Resolution::Route(source_route) => {
                    mint(state, &source_route.clone(), &source, Operation::Read).await.map(|_| ())
                }
                _ => Err(format!("no route grants pull of `{from}` on `{host}`, which the mount reads")),
            },
            Err(e) => Err(e),
        };
        if let Err(reason) = checked {
            return refuse(StatusCode::FORBIDDEN, reason, Some(operation), Some(&target), &route.name);
        }
    }
    let mut fingerprint = issued.token.fingerprint();
    let mut basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", issued.username, issued.token.expose())));
    let actions = if operation == Operation::Write { "pull,push" } else { "pull" };
    let mut scopes = vec![format!("repository:{name}:{actions}")];
    scopes.extend(mount_from.iter().map(|from| format!("repository:{from}:pull")));

    // A request is sent once more after a `401`: to a cached registry token (expired at
    // the registry, or revoked), to a mount the registry token does not cover, and to a
    // repository that challenges where `/v2/` did not. Its body is kept for that, within
    // its cap and the proxy's budget, when the first attempt could meet one (a cached
    // token, or none).
    let mut body = Replay::new(body.boxed(), &parts.headers);
    let mut attempt = 0;
    let mut reprobe = false;
    let mut reminted = false;
    // The cached mayfly token the realm refused, once it has.
    let mut realm_refused: Option<mayfly_core::Fingerprint> = None;
    let mut first = Carried::Nothing;
    // What the latest attempt carried: a refusal's hint names it.
    let mut last;
    let response = loop {
        attempt += 1;
        let sent = loop {
            let sent =
                authorization(state, host, protocol, &route, pool, &scopes, &basic, issued.expires_at, reprobe).await;
            // The realm refused a cached mayfly token (revoked, say): that token is dropped
            // and the realm asked once more with a fresh one.
            let Err(Failed::Refused(reason)) = sent else { break sent };
            if reminted {
                break Err(Failed::Refused(format!(
                    "the registry's token service refused the cached token, then a fresh one ({reason}): the route's exchange may not grant {} of `{name}`",
                    pull_or_push(operation)
                )));
            }
            if !issued.from_cache {
                break Err(Failed::Refused(reason));
            }
            reminted = true;
            super::erase(state, &route, &target, &fingerprint).await;
            issued = match mint(state, &route, &target, operation).await {
                Ok(issued) => issued,
                Err(reason) => break Err(Failed::Other(reason)),
            };
            if issued.token.fingerprint() == fingerprint {
                break Err(Failed::Refused(format!(
                    "{reason}, and the broker handed back the same token, not a fresh one: run the command again"
                )));
            }
            realm_refused = Some(fingerprint.clone());
            fingerprint = issued.token.fingerprint();
            basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", issued.username, issued.token.expose())));
        };
        let (authorization, carried) = match sent {
            Ok(sent) => sent,
            Err(Failed::Refused(reason) | Failed::Other(reason)) => {
                return refuse(StatusCode::FORBIDDEN, reason, Some(operation), Some(&target), &route.name);
            }
        };
        last = carried;
        if attempt == 1 {
            first = carried;
            if matches!(carried, Carried::Cached | Carried::Nothing) {
                body = match body.keep(&parts.headers, MAX_REPLAY, &state.replay).await {
                    Ok(read) => read,
                    Err(e) => {
                        let reason = format!("cannot read the request's body: {e}");
                        line(Outcome::Failed, Some(operation), Some(&target), &route.name, &|ev| {
                            ev.reason = Some(reason.clone());
                        });
                        return refusal(Family::Oci, StatusCode::BAD_REQUEST, &format!("mayfly: {reason}"));
                    }
                };
            }
        }
        let mut upstream = Request::from_parts(parts.clone(), body.body());
        if attempt > 1 && mount_from.is_some() && matches!(first, Carried::Cached | Carried::Fresh) {
            // The registry token does not cover the source: a plain upload instead, which
            // the registry answers as it answers a mount it does not make.
            let query: Vec<(String, String)> =
                url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                    .into_owned()
                    .filter(|(k, _)| k != "mount" && k != "from")
                    .collect();
            let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
            let uri = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            if let Ok(uri) = uri.parse() {
                *upstream.uri_mut() = uri;
            }
        }
        if let Some(value) = authorization.as_deref().and_then(sensitive) {
            upstream.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let response = match send(upstream, state, host, protocol, Some(&route), pool).await {
            Ok(response) => response,
            Err(e) => {
                let e = e.reason;
                line(Outcome::Failed, Some(operation), Some(&target), &route.name, &|ev| ev.reason = Some(e.clone()));
                return refusal(Family::Oci, StatusCode::BAD_GATEWAY, &format!("mayfly: {e}"));
            }
        };
        if response.status() != StatusCode::UNAUTHORIZED || attempt > 1 {
            break response;
        }
        state.oci.forget(host, &scopes);
        // The repository's own challenge, when it sends one, is the registry's from now
        // on (a registry whose `/v2/` answers anonymously); without one, a Bearer challenge
        // already known stays, and otherwise `/v2/` is asked again.
        let challenge = challenge_of(&response);
        if challenge == Challenge::None {
            reprobe = !matches!(state.oci.challenge(host), Some(Challenge::Bearer { .. }));
        } else {
            reprobe = false;
            state.oci.learn(host, challenge);
        }
        if !body.replayable() {
            if !body.over() {
                // Never read: the first attempt carried a fresh registry token or the
                // credential itself, which the registry refused.
                break response;
            }
            let reason = not_sent_again(&format!(
                "the registry refused the registry token for {} of `{name}`, which is now dropped",
                pull_or_push(operation)
            ));
            mayfly_core::protocol::warn(&format!("proxy: {reason}"));
            line(Outcome::Failed, Some(operation), Some(&target), &route.name, &|e| {
                e.fingerprint = Some(fingerprint.clone());
                e.reason = Some(reason.clone());
            });
            return refusal(Family::Oci, StatusCode::SERVICE_UNAVAILABLE, &format!("mayfly: {reason}"));
        }
        let _ = http_body_util::Limited::new(response.into_body(), 64 << 10).collect().await;
    };
    if response.status() == StatusCode::UNAUTHORIZED {
        let reason = refused(last, attempt > 1, operation, &name);
        line(Outcome::Denied, Some(operation), Some(&target), &route.name, &|e| {
            e.fingerprint = Some(fingerprint.clone());
            e.reason = Some(reason.clone());
        });
        return refusal(Family::Oci, StatusCode::FORBIDDEN, &format!("mayfly: {reason}"));
    }
    let mut how = String::new();
    if let Some(refused) = &realm_refused {
        how.push_str(&format!(
            "; the token service refused the cached token {refused}, which is now dropped, and took a fresh one"
        ));
    }
    if attempt > 1 {
        how.push_str("; sent again after a 401 to the first attempt, with a fresh registry token");
    }
    line(Outcome::Proxied, Some(operation), Some(&target), &route.name, &|e| {
        e.fingerprint = Some(fingerprint.clone());
        e.reason = Some(format!("upstream answered {}{how}", response.status().as_u16()));
    });
    response
}

/// Why a final `401` was refused, from what the last attempt carried (and whether it was
/// the second): only a token points at the token service.
fn refused(carried: Carried, again: bool, operation: Operation, name: &str) -> String {
    let what = pull_or_push(operation);
    match carried {
        Carried::Basic => format!(
            "the registry refused the route's credential for {what} of `{name}`: the route's exchange may not grant it"
        ),
        Carried::Nothing => format!("the registry refused {what} of `{name}` without asking for a credential"),
        Carried::Cached | Carried::Fresh => format!(
            "the registry refused the token for {what} of `{name}`{}: the registry may not trust its token service",
            if again { ", sent again with a fresh one" } else { "" }
        ),
    }
}

fn pull_or_push(operation: Operation) -> &'static str {
    if operation == Operation::Write { "push" } else { "pull" }
}

/// What the `Authorization` of an attempt carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carried {
    /// A registry token from the proxy's memory.
    Cached,
    /// A registry token the realm just gave.
    Fresh,
    /// The minted credential itself (a Basic registry).
    Basic,
    /// Nothing (the registry asks for nothing).
    Nothing,
}

/// Why no `Authorization` was got.
enum Failed {
    /// The realm answered `401` to the minted credential.
    Refused(String),
    Other(String),
}

impl From<String> for Failed {
    fn from(reason: String) -> Self {
        Self::Other(reason)
    }
}

/// The `Authorization` for a request asking `scopes`: a registry token from the realm
/// (cached), the minted credential itself for a Basic registry, or nothing; and what it
/// carried. `reprobe` asks `/v2/` for the challenge again.
#[allow(clippy::too_many_arguments)]
async fn authorization(
    state: &Arc<State>,
    host: &str,
    protocol: &str,
    route: &Route,
    pool: &Pool,
    scopes: &[String],
    basic: &str,
    minted_expires_at: Option<i64>,
    reprobe: bool,
) -> Result<(Option<String>, Carried), Failed> {
    let known = state.oci.challenges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(host).cloned();
    let challenge = match known {
        Some(challenge) if !reprobe => challenge,
        _ => {
            let probe = Request::get("/v2/").body(empty_body()).map_err(|e| e.to_string())?;
            let response = send(probe, state, host, protocol, Some(route), pool).await.map_err(String::from)?;
            let challenge =
                if response.status() == StatusCode::UNAUTHORIZED { challenge_of(&response) } else { Challenge::None };
            let _ = response.into_body().collect().await;
            match (challenge, known) {
                // An anonymous `/v2/` does not undo a Bearer challenge a repository sent.
                (Challenge::None, Some(known @ Challenge::Bearer { .. })) => known,
                (challenge, _) => {
                    state.oci.learn(host, challenge.clone());
                    challenge
                }
            }
        }
    };
    let (realm, service) = match challenge {
        Challenge::None => return Ok((None, Carried::Nothing)),
        Challenge::Basic => return Ok((Some(basic.to_owned()), Carried::Basic)),
        Challenge::Bearer { realm, service } => (realm, service),
    };
    let key = (host.to_owned(), scopes.join(" "));
    if let Some((token, until)) = state.oci.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key)
        && Instant::now() < *until
    {
        return Ok((Some(format!("Bearer {token}")), Carried::Cached));
    }
    let mut url = trusted_realm(&realm, host, route, state.settings.broker.config())?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &service {
            query.append_pair("service", service);
        }
        for scope in scopes {
            query.append_pair("scope", scope);
        }
    }
    let (status, body) = fetch(state, &url, route, basic).await?;
    let realm_host = url.host_str().unwrap_or_default().to_owned();
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
            .map(|m| format!(": {}", mayfly_core::sanitize_for_terminal(&m.chars().take(200).collect::<String>())))
            .unwrap_or_default();
        let reason = format!("the registry's token service `{realm_host}` answered {}{message}", status.as_u16());
        return Err(if status == StatusCode::UNAUTHORIZED { Failed::Refused(reason) } else { Failed::Other(reason) });
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| format!("the registry's token service `{realm_host}` answered no JSON"))?;
    let token = answer["token"]
        .as_str()
        .or_else(|| answer["access_token"].as_str())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| format!("the registry's token service `{realm_host}` answered no token"))?
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let life = registry_token_life(answer["expires_in"].as_u64(), minted_expires_at, now);
    let until = Instant::now().checked_add(life).unwrap_or_else(Instant::now);
    state.oci.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, (token.clone(), until));
    Ok((Some(format!("Bearer {token}")), Carried::Fresh))
}

impl Tokens {
    /// The registry's challenge from now on.
    fn learn(&self, host: &str, challenge: Challenge) {
        self.challenges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(host.to_owned(), challenge);
    }

    /// The registry's challenge as known.
    fn challenge(&self, host: &str) -> Option<Challenge> {
        self.challenges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(host).cloned()
    }

    fn forget(&self, host: &str, scopes: &[String]) {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(host.to_owned(), scopes.join(" ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_token_service_only_when_a_token_was_sent() {
        let basic = refused(Carried::Basic, false, Operation::Write, "a/b");
        assert!(basic.contains("route's credential for push of `a/b`") && !basic.contains("token service"), "{basic}");
        let fresh = refused(Carried::Fresh, false, Operation::Read, "a/b");
        assert!(fresh.ends_with("pull of `a/b`: the registry may not trust its token service"), "{fresh}");
        let again = refused(Carried::Cached, true, Operation::Read, "a/b");
        assert!(again.contains("sent again with a fresh one: the registry may not trust"), "{again}");
        assert!(!refused(Carried::Nothing, false, Operation::Read, "a/b").contains("token service"));
    }

    #[test]
    fn a_registry_token_lives_no_longer_than_five_minutes_nor_its_minted_token() {
        let now = 1_800_000_000;
        // A huge `expires_in` neither overflows nor keeps the token past five minutes.
        assert_eq!(registry_token_life(Some(u64::MAX), None, now), Duration::from_secs(290));
        assert_eq!(registry_token_life(Some(u64::MAX), Some(i64::MAX), now), Duration::from_secs(290));
        assert_eq!(registry_token_life(Some(120), None, now), Duration::from_secs(110));
        assert_eq!(registry_token_life(None, None, now), Duration::from_secs(50));
        // The minted token's remaining life bounds it.
        assert_eq!(registry_token_life(Some(3600), Some(now + 100), now), Duration::from_secs(90));
        assert_eq!(registry_token_life(Some(3600), Some(now - 5), now), Duration::ZERO);
        assert_eq!(registry_token_life(Some(3600), Some(i64::MIN), now), Duration::ZERO);
        assert_eq!(registry_token_life(Some(3600), Some(now + 5), i64::MIN), Duration::from_secs(290));
    }

    #[test]
    fn challenges_are_read_with_quoted_commas() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        let (scheme, params) = parse_challenge(r#"Basic realm="a \"b\"""#).unwrap();
        assert_eq!((scheme.as_str(), params["realm"].as_str()), ("basic", "a \"b\""));
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
        assert!(parse_challenge(r#"Bearer realm="a" junk"#).is_none());
    }

    #[test]
    fn a_repositorys_401_carries_the_challenge_an_anonymous_version_check_did_not() {
        let answer = |values: &[&str]| {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            for value in values {
                response.headers_mut().append(header::WWW_AUTHENTICATE, header::HeaderValue::from_str(value).unwrap());
            }
            response
        };
        let bearer = answer(&[
            r#"Basic realm="registry""#,
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull""#,
        ]);
        assert_eq!(
            challenge_of(&bearer),
            Challenge::Bearer { realm: "https://auth.example/token".into(), service: Some("registry.example".into()) }
        );
        assert_eq!(challenge_of(&answer(&[r#"Basic realm="registry""#])), Challenge::Basic);
        // A Bearer challenge without a realm, or none at all, teaches nothing: `/v2/` is
        // asked again.
        assert_eq!(challenge_of(&answer(&[r#"Bearer service="registry.example""#])), Challenge::None);
        assert_eq!(challenge_of(&answer(&[])), Challenge::None);
    }

    fn config(routes: &str) -> mayfly_core::Config {
        let text = format!(
            "[identities.ci]\nkind = \"env\"\nvar = \"ID\"\n\n[exchanges.sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example/token\"\n\n{routes}"
        );
        mayfly_core::Config::parse(&text, std::path::Path::new("config.toml")).unwrap()
    }

    #[test]
    fn a_realm_must_be_https_on_the_registry_or_the_routes_exchange() {
        let config = config(
            "[[routes]]\ntool = \"oci\"\nhost = \"registry.example\"\nidentity = \"ci\"\nexchange = \"sts\"\n\n[[routes]]\ntool = \"git\"\nhost = \"git.example\"\nidentity = \"ci\"\nexchange = \"sts\"\n",
        );
        let route = &config.routes[0];
        for good in [
            "https://registry.example/token",
            "https://REGISTRY.example:443/token",
            "https://sts.example/registry/token",
        ] {
            assert!(trusted_realm(good, "registry.example", route, &config).is_ok(), "{good}");
        }
        for bad in [
            "http://registry.example/token",
            "https://evil.example/token",
            // Another route's host: its upstream would get this route's credential.
            "https://git.example/auth",
            "https://registry.example.evil.example/token",
            "https://user:pw@registry.example/token",
            "https://registry.example:8443/token",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(trusted_realm(bad, "registry.example", route, &config).is_err(), "{bad}");
        }
    }
}
