//! `mayfly status`: what is cached, which identity sources are configured and what their
//! current tokens claim, and where mayfly keeps its files.
//!
//! It never prints a token: cache entries show their fingerprint, identity sources the
//! unverified claims of the token they would hand over. Everything is read as the helpers
//! read it, so what this shows is what the next credential request will find.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mayfly_core::{
    AuditLog, Cache, CacheEntry, Config, Env, EnvVars, IdentityConfig, IdentityPresence, UnverifiedClaims, peek_claims,
    sanitize_for_terminal,
};
use serde_json::{Value, json};

/// Arguments of `mayfly status`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Print one JSON document instead of tables
    #[arg(long)]
    json: bool,
    /// List the cached tokens of every session, not only those outside any session and
    /// of the current one (`$MAYFLY_SESSION`)
    #[arg(long)]
    all: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let env = Env::from_os();
    let status = Status::gather(&env, now(), args.all);
    if args.json {
        println!("{}", json_for_terminal(&status.to_json()));
    } else {
        print!("{}", status.render());
    }
    // A config that does not load means no tokens at all: worth a failing status.
    Ok(if status.config.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Everything `mayfly status` shows, gathered once.
struct Status {
    now: i64,
    config_path: Option<PathBuf>,
    config: Result<Config, String>,
    cache_dir: Option<PathBuf>,
    key_dir: Option<PathBuf>,
    key_place: Option<String>,
    entries: Result<Vec<Entry>, String>,
    /// Entries of other sessions, counted from their file names, not decrypted (those
    /// expired since the last sweep, under five minutes ago, included): (entries, sessions).
    elsewhere: (usize, usize),
    audit_log: Option<PathBuf>,
    identities: Vec<Identity>,
}

/// A cache entry as shown: everything but the token.
struct Entry {
    /// The identity source's own token, cached because fetching it cost a round trip.
    subject_token: bool,
    tool: String,
    operation: String,
    target: String,
    label: String,
    scope: Option<String>,
    expires_at: i64,
    refresh_at: i64,
    fingerprint: String,
    token_id: Option<String>,
    session: Option<String>,
    route: Option<String>,
    exchange: Option<String>,
    issuer: Option<String>,
    subject: Option<String>,
}

/// An identity source and, for the ones that read a token locally, what it claims.
struct Identity {
    name: String,
    kind: &'static str,
    audience: Option<String>,
    /// Where its token comes from (a path, `$VARIABLE`, a command's shape, a host).
    source: String,
    /// `None` when the token is fetched only when needed (GitHub Actions, commands).
    token: Option<Result<UnverifiedClaims, String>>,
    /// Why the source cannot work in this environment, when that is known without asking.
    problem: Option<String>,
    /// An `oidc` identity's login: who, since and until when.
    login: Option<Result<Option<mayfly_core::login::Login>, String>>,
}

impl Status {
    fn gather(env: &Env, now: i64, all: bool) -> Self {
        let config = Config::load(env).map_err(|e| mayfly_core::protocol::one_line(&e));
        let mut elsewhere = (0, 0);
        let (entries, key_dir, key_place) = match Cache::open(env) {
            Ok(cache) => {
                // What can never be served again goes (at most once per expiry bucket:
                // a sweep `stat`s every entry); then only what is shown is decrypted,
                // and other sessions' entries are counted by name.
                let session = env.get(EnvVars::MAYFLY_SESSION).filter(|s| !s.is_empty());
                let mut entries: Vec<Entry> = if all {
                    let (_, live) = cache.sweep(now);
                    live.iter().filter_map(|listed| cache.read(listed)).map(|e| Entry::from(&e)).collect()
                } else {
                    let shown = [Cache::session_tag(None), Cache::session_tag(session)];
                    let (listed, others) = if cache.sweep_due(now) {
                        let (_, live) = cache.sweep(now);
                        let (listed, others): (Vec<_>, Vec<_>) =
                            live.into_iter().partition(|l| shown.contains(&l.session_tag));
                        (listed, others.into_iter().map(|l| l.session_tag).collect())
                    } else {
                        cache.list_sessions(&shown)
                    };
                    let sessions: std::collections::HashSet<_> = others.iter().collect();
                    elsewhere = (others.len(), sessions.len());
                    let mut entries = cache.session_entries_of(&listed, None, now);
                    if session.is_some() {
                        entries.extend(cache.session_entries_of(&listed, session, now));
                    }
                    entries.into_iter().map(|(_, e)| Entry::from(&e)).collect()
                };
                entries.sort_by(|a, b| {
                    (a.subject_token, &a.target, &a.operation, &a.session, a.expires_at).cmp(&(
                        b.subject_token,
                        &b.target,
                        &b.operation,
                        &b.session,
                        b.expires_at,
                    ))
                });
                (Ok(entries), Some(cache.key_dir().to_owned()), Some(cache.key_place()))
            }
            Err(e) => (Err(mayfly_core::protocol::one_line(&e)), None, None),
        };
        let identities = match &config {
            Ok(config) => config.identities.values().map(|i| Identity::inspect(i, env, now)).collect(),
            Err(_) => Vec::new(),
        };
        Self {
            now,
            config_path: config.as_ref().ok().map(|c| c.path.clone()).or_else(|| Config::default_path(env)),
            config,
            cache_dir: Cache::dir_for(env),
            key_dir,
            key_place,
            entries,
            elsewhere,
            audit_log: AuditLog::from_env(env).path().map(Path::to_owned),
            identities,
        }
    }

    fn to_json(&self) -> Value {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        json!({
            "config": {
                "path": path(&self.config_path),
                "routes": self.config.as_ref().ok().map(|c| c.routes.len()),
                "error": self.config.as_ref().err(),
            },
            "cache": {
                "dir": path(&self.cache_dir),
                "key_dir": path(&self.key_dir),
                "key_store": self.key_place,
                "error": self.entries.as_ref().err(),
                "entries": self.entries.as_ref().map(|e| e.iter().map(|e| e.to_json(self.now)).collect::<Vec<_>>())
                    .unwrap_or_default(),
                "other_sessions": { "entries": self.elsewhere.0, "sessions": self.elsewhere.1 },
            },
            "audit_log": path(&self.audit_log),
            "identities": self.identities.iter().map(|i| i.to_json(self.now)).collect::<Vec<_>>(),
        })
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let shown = |p: &Option<PathBuf>| p.as_ref().map_or_else(|| "-".to_owned(), |p| p.display().to_string());
        let config = match &self.config {
            Ok(c) if c.path.as_os_str().is_empty() || !c.path.exists() => {
                format!("{} (missing: no routes, so no tokens)", shown(&self.config_path))
            }
            Ok(c) => format!("{} ({} route(s))", shown(&self.config_path), c.routes.len()),
            Err(e) => format!("{} (cannot be used: {e})", shown(&self.config_path)),
        };
        // Without a key the cache is off; the cache line below says why.
        let key = self.key_place.clone().unwrap_or_else(|| "-".to_owned());
        let places = [
            vec!["config".into(), config],
            vec!["cache".into(), shown(&self.cache_dir)],
            vec!["key".into(), key],
            vec!["audit log".into(), shown(&self.audit_log)],
        ];
        out.push_str(&table(&places));
        out.push('\n');
        match &self.entries {
            Err(e) => out.push_str(&format!("cached tokens: unknown, the cache cannot be opened: {e}\n")),
            Ok(entries) if entries.is_empty() => out.push_str("cached tokens: none\n"),
            Ok(entries) => {
                out.push_str(&format!("cached tokens: {}\n", entries.len()));
                let header = [
                    "TOOL",
                    "OPERATION",
                    "TARGET",
                    "SCOPE",
                    "EXPIRES",
                    "LEFT",
                    "FINGERPRINT",
                    "TOKEN ID",
                    "ROUTE",
                    "EXCHANGE",
                    "SESSION",
                ];
                let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
                rows.extend(entries.iter().map(|e| e.row(self.now)));
                out.push_str(&indent(&table(&rows)));
            }
        }
        if self.elsewhere.0 > 0 {
            out.push_str(&format!(
                "  and {} in {} other session(s), not listed: `mayfly status --all` lists them\n",
                self.elsewhere.0, self.elsewhere.1
            ));
        }
        out.push('\n');
        match (&self.config, self.identities.is_empty()) {
            (Err(_), _) => out.push_str("identity sources: unknown (the config cannot be used)\n"),
            (Ok(_), true) => out.push_str("identity sources: none\n"),
            (Ok(_), false) => {
                out.push_str(&format!("identity sources: {}\n", self.identities.len()));
                let rows: Vec<Vec<String>> = self.identities.iter().map(|i| i.row(self.now)).collect();
                out.push_str(&indent(&table(&rows)));
            }
        }
        out
    }
}

impl From<&CacheEntry> for Entry {
    fn from(entry: &CacheEntry) -> Self {
        // Helpers label their entries `TOOL TARGET OPERATION`; subject tokens have no origin.
        let subject_token = entry.origin.is_none() && entry.label.starts_with("subject token");
        let mut words = entry.label.split(' ');
        let (tool, operation) = if subject_token {
            (String::new(), String::new())
        } else {
            (words.next().unwrap_or_default().to_owned(), entry.label.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        let target = match &entry.origin {
            Some(origin) => origin.target.clone(),
            None if subject_token => String::new(),
            None => entry.label.split(' ').nth(1).unwrap_or_default().to_owned(),
        };
        Self {
            subject_token,
            tool,
            operation,
            target,
            label: entry.label.clone(),
            scope: entry.scope.clone(),
            expires_at: entry.expires_at,
            refresh_at: entry.refresh_at,
            fingerprint: entry.token.fingerprint().to_string(),
            token_id: entry.token_id.clone(),
            session: entry.session.clone(),
            route: entry.origin.as_ref().map(|o| o.route.clone()),
            exchange: entry.origin.as_ref().map(|o| o.exchange.clone()),
            issuer: entry.issuer.clone(),
            subject: entry.subject.clone(),
        }
    }
}

impl Entry {
    /// The identity source a subject-token entry belongs to (its label names it).
    fn identity(&self) -> Option<&str> {
        self.subject_token.then(|| self.label.split('`').nth(1)).flatten()
    }

    fn to_json(&self, now: i64) -> Value {
        let mut value = json!({
            "kind": if self.subject_token { "subject-token" } else { "token" },
            "tool": self.tool,
            "operation": self.operation,
            "target": self.target,
            "label": self.label,
            "scope": self.scope,
            "expires": rfc3339(self.expires_at),
            "expires_at": self.expires_at,
            "seconds_left": (self.expires_at - now).max(0),
            "served": now < self.refresh_at,
            "fingerprint": self.fingerprint,
            "token_id": self.token_id,
            "session": self.session,
            "route": self.route,
            "exchange": self.exchange,
            "issuer": self.issuer,
            "subject": self.subject,
        });
        if let Some(identity) = self.identity() {
            value["identity"] = json!(identity);
        }
        value
    }

    fn row(&self, now: i64) -> Vec<String> {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let left = if now >= self.expires_at {
            "expired".to_owned()
        } else if now >= self.refresh_at {
            // Inside the refresh margin: the next request mints a new one.
            format!("{}, refresh due", span(self.expires_at - now))
        } else {
            span(self.expires_at - now)
        };
        let (tool, operation, target) = if self.subject_token {
            let identity = self.identity().unwrap_or("?");
            ("-".into(), "-".into(), format!("subject token of identity `{identity}`"))
        } else {
            (self.tool.clone(), self.operation.clone(), self.target.clone())
        };
        vec![
            tool,
            operation,
            target,
            or_dash(&self.scope),
            rfc3339(self.expires_at),
            left,
            self.fingerprint.clone(),
            or_dash(&self.token_id),
            or_dash(&self.route),
            or_dash(&self.exchange),
            or_dash(&self.session),
        ]
    }
}

impl Identity {
    fn inspect(config: &IdentityConfig, env: &Env, now: i64) -> Self {
        let (token, problem) = match config.look(env) {
            IdentityPresence::Token(token) => (Some(claims_of(token.expose())), None),
            IdentityPresence::Ready => (None, None),
            IdentityPresence::Absent(why) => (None, Some(why)),
        };
        Self {
            name: config.name.clone(),
            kind: config.kind(),
            audience: config.audience.clone(),
            source: config.origin(env),
            token,
            problem,
            login: (config.kind() == "oidc").then(|| mayfly_core::login::status(config, env, now)),
        }
    }

    /// The login of an `oidc` identity in one line.
    fn login_line(&self, now: i64) -> Option<String> {
        Some(match self.login.as_ref()? {
            Err(e) => e.clone(),
            Ok(None) => format!("not logged in: run `mayfly login {}`", self.name),
            Ok(Some(login)) => format!(
                "logged in as {} since {} until {} (or {} unused; ID token {} {}), in the {}",
                crate::login::who(login),
                rfc3339(login.since),
                rfc3339(login.until),
                rfc3339(login.idle_until),
                if login.id_token_expires <= now { "expired" } else { "expires" },
                rfc3339(login.id_token_expires),
                login.store
            ),
        })
    }

    fn to_json(&self, now: i64) -> Value {
        let (token, error) = match &self.token {
            None => (Value::Null, self.problem.clone()),
            Some(Ok(claims)) => (
                json!({
                    "iss": claims.iss,
                    "sub": claims.sub,
                    "aud": claims.aud,
                    "exp": claims.exp,
                    "expires": claims.exp.map(rfc3339),
                    "seconds_left": claims.exp.map(|e| (e - now).max(0)),
                }),
                None,
            ),
            Some(Err(e)) => (Value::Null, Some(e.clone())),
        };
        let login = match &self.login {
            Some(Ok(Some(login))) => json!({
                "sub": login.subject,
                "email": login.email,
                "since": rfc3339(login.since),
                "until": rfc3339(login.until),
                "idle_until": rfc3339(login.idle_until),
                "id_token_expires": rfc3339(login.id_token_expires),
                "refreshable": login.refreshable,
                "store": login.store,
            }),
            Some(Ok(None)) => json!({"logged_in": false}),
            Some(Err(e)) => json!({"error": e}),
            None => Value::Null,
        };
        json!({
            "name": self.name,
            "kind": self.kind,
            "audience": self.audience,
            "source": self.source,
            "token": token,
            "error": error,
            "login": login,
        })
    }

    fn row(&self, now: i64) -> Vec<String> {
        let token = match (self.login_line(now), &self.token) {
            (Some(line), _) => line,
            (None, token) => match token {
                None => self.problem.clone().unwrap_or_else(|| "fetched when a route needs it".into()),
                Some(Err(e)) => e.clone(),
                Some(Ok(claims)) => {
                    let mut parts = Vec::new();
                    for (name, value) in [("iss", &claims.iss), ("sub", &claims.sub)] {
                        parts.push(format!("{name} {}", value.as_deref().unwrap_or("-")));
                    }
                    parts
                        .push(format!("aud {}", if claims.aud.is_empty() { "-".into() } else { claims.aud.join(",") }));
                    parts.push(match claims.exp {
                        Some(exp) if exp <= now => format!("exp {} (expired)", rfc3339(exp)),
                        Some(exp) => format!("exp {} (in {})", rfc3339(exp), span(exp - now)),
                        None => "exp -".into(),
                    });
                    parts.join("  ")
                }
            },
        };
        let audience = self.audience.as_deref().map_or_else(|| "-".to_owned(), |a| format!("audience {a}"));
        vec![self.name.clone(), self.kind.into(), audience, self.source.clone(), token]
    }
}

/// The unverified claims of a subject token; the token itself goes no further.
fn claims_of(token: &str) -> Result<UnverifiedClaims, String> {
    if token.is_empty() {
        return Err("empty token".into());
    }
    peek_claims(token).ok_or_else(|| "not a JWT (no claims to show)".into())
}

/// Rows as left-aligned columns two spaces apart, every cell sanitised for the terminal.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| sanitize_for_terminal(c)).collect()).collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Pretty JSON with every line sanitised: serde escapes C0 controls but not DEL or C1,
/// which some terminals act on.
pub(crate) fn json_for_terminal(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.lines().map(sanitize_for_terminal).collect::<Vec<_>>().join("\n")
}

/// A unix time in RFC 3339 (UTC), as audit lines write it.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// A span of seconds as people read it: `41s`, `9m 41s`, `2h 05m`, `3d 4h`.
pub(crate) fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_core::{Origin, Secret};

    fn entry(label: &str, origin: Option<Origin>) -> CacheEntry {
        CacheEntry {
            token: Secret::new("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"), // mayfly-guard: allow
            expires_at: 1_000,
            refresh_at: 940,
            token_id: Some("jti-1".into()),
            scope: Some("repo:org/app:write".into()),
            issuer: None,
            subject: None,
            label: label.into(),
            session: Some("s-1".into()),
            origin,
            issuing_chain: Vec::new(),
        }
    }

    #[test]
    fn entries_show_their_parts_and_never_the_token() {
        let origin = Origin {
            route: "app".into(),
            exchange: "sts".into(),
            target: "https://h/org/app".into(),
            ..Origin::default()
        };
        let shown = Entry::from(&entry("git https://h/org/app write", Some(origin)));
        assert!(!shown.subject_token);
        assert_eq!((shown.tool.as_str(), shown.operation.as_str()), ("git", "write"));
        assert_eq!(shown.target, "https://h/org/app");
        let json = shown.to_json(950).to_string();
        assert!(!mayfly_core::contains_jwt(json.as_bytes()), "{json}");
        assert!(json.contains(r#""served":false"#), "inside the margin: {json}");
        assert_eq!(shown.row(950)[5], "50s, refresh due");
        assert_eq!(shown.row(1_001)[5], "expired");
        assert_eq!(shown.fingerprint, Secret::new("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln").fingerprint().as_str()); // mayfly-guard: allow
    }

    #[test]
    fn subject_tokens_are_marked() {
        let shown = Entry::from(&entry("subject token of identity `ci`", None));
        assert!(shown.subject_token);
        assert_eq!(shown.identity(), Some("ci"));
        let json = shown.to_json(0);
        assert_eq!(json["kind"], "subject-token");
        assert_eq!(json["identity"], "ci");
        assert_eq!(shown.row(0)[2], "subject token of identity `ci`");
    }

    #[test]
    fn spans_and_tables_read_well() {
        assert_eq!(span(41), "41s");
        assert_eq!(span(581), "9m 41s");
        assert_eq!(span(7_500), "2h 05m");
        assert_eq!(span(-5), "0s");
        let text = table(&[vec!["a".into(), "bb".into()], vec!["ccc\u{1b}[2J".into(), "d".into()]]);
        assert_eq!(text, "a        bb\nccc\u{fffd}[2J  d\n");
    }

    #[test]
    fn identity_files_show_claims_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let payload = "eyJpc3MiOiJodHRwczovL2kiLCJzdWIiOiJzIiwiYXVkIjpbImEiXSwiZXhwIjoyMDAwfQ";
        std::fs::write(&path, format!("eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln\n")).unwrap();
        let text = format!(
            "[identities.k8s]\nkind = \"file\"\npath = \"{}\"\n[identities.e]\nkind = \"env\"\nvar = \"NOPE\"\n",
            path.display()
        );
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        let identity = Identity::inspect(&config.identities["k8s"], &Env::default(), 0);
        let json = identity.to_json(1_000);
        assert_eq!(json["token"]["iss"], "https://i");
        assert_eq!(json["token"]["aud"], json!(["a"]));
        assert_eq!(json["token"]["seconds_left"], 1_000);
        assert!(!mayfly_core::contains_jwt(json.to_string().as_bytes()));
        let unset = Identity::inspect(&config.identities["e"], &Env::default(), 0).to_json(0);
        assert_eq!((&unset["source"], &unset["error"]), (&json!("$NOPE"), &json!("`NOPE` is not set")));
    }
}
