//! Policy as code: Cedar policies, validated against mayfly's schema, decided per scope.
//!
//! Each requested scope becomes one Cedar request: the principal is the verified subject
//! (its claims as tags), the action the scope's operation, the resource what the scope
//! names (typed per tool, in its organisation and host), and the context the audience,
//! lifetime, time, approval state and the intent the client *claims*. Cedar evaluates
//! every policy it is handed, so an [`Index`] on action, resource type and host hands it
//! only those whose scope constraints can match.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Effect, Entities, EntityUid, Policy as CedarPolicy, PolicyId,
    PolicySet, Request, ResourceConstraint, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::{Map, Value, json};

use crate::policy::{Acting, ApprovalState, ExchangeAsk};

/// The schema policies are validated against unless the config names another.
pub const SCHEMA: &str = include_str!("../schema/mayfly.cedarschema");

/// The operations a scope can name, each a Cedar action; `access` is for host-wide
/// scopes (`cluster:HOST`, `registry:HOST`), `session` for opening a session (whose
/// resource is the exchange's `Host`).
pub const ACTIONS: [&str; 7] = ["read", "write", "publish", "yank", "owners", "access", "session"];

/// Where a policy came from, for error messages and denials.
#[derive(Clone, Debug)]
struct Origin {
    file: PathBuf,
    line: usize,
    effect: Effect,
    /// The policy's `@reason("...")`: what a denied user should do, in the author's words.
    reason: Option<String>,
    /// A forbid's `@approval("GROUP")`: what it refuses, a person of GROUP may approve.
    approval: Option<String>,
}

/// A validated set of policies with its index.
pub struct Loaded {
    schema: Schema,
    all: PolicySet,
    index: Index,
    origins: HashMap<String, Origin>,
    /// The files read, with their modification times, to notice changes.
    stamp: Vec<(PathBuf, Option<SystemTime>)>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("policies", &self.origins.len()).finish_non_exhaustive()
    }
}

/// What Cedar said about one scope.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScopeDecision {
    /// Permit policies that apply.
    pub permits: Vec<String>,
    /// Forbid policies that apply (or failed to evaluate: a forbid that errs counts).
    pub forbids: Vec<String>,
    /// Why each forbid applies, in words for the user.
    pub forbid_reasons: Vec<String>,
    /// Forbids annotated `@approval("GROUP")` that apply: (policy, group). They hold the
    /// request until a person of the group approves it; they refuse nothing by themselves.
    pub approvals: Vec<(String, String)>,
    /// The request as Cedar saw it, for messages: `write on GitRepository "h/org/app"`.
    pub described: String,
    /// The operation and what it is on, for an approver: `write on h/org/app`.
    pub asked: String,
}

/// The schema and policy sources named in the config.
#[derive(Clone, Debug)]
pub struct Sources {
    /// Files and directories (every `*.cedar` below them).
    pub policies: Vec<PathBuf>,
    /// A schema file replacing the built-in one.
    pub schema: Option<PathBuf>,
    /// The approver groups configured: an `@approval` naming another is an error. `None`
    /// checks only the annotation's shape (a policy test without a config).
    pub approval_groups: Option<Vec<String>>,
}

impl Loaded {
    /// Reads, parses and validates every policy file. An error names the file, the line
    /// and the reason.
    pub fn load(sources: &Sources) -> Result<Self, String> {
        let mut stamp = Vec::new();
        let schema_text = match &sources.schema {
            Some(path) => {
                stamp.push((path.clone(), mtime(path)));
                std::fs::read_to_string(path).map_err(|e| format!("cannot read schema `{}`: {e}", path.display()))?
            }
            None => SCHEMA.to_owned(),
        };
        let schema_name = sources.schema.as_ref().map_or("built-in schema".to_owned(), |p| p.display().to_string());
        let schema = Schema::from_cedarschema_str(&schema_text)
            .map(|(schema, _warnings)| schema)
            .map_err(|e| located(&schema_name, &schema_text, &e, None))?;
        let validator = Validator::new(schema.clone());
        let mut files = Vec::new();
        for path in &sources.policies {
            collect_files(path, &mut files)?;
        }
        let mut all = PolicySet::new();
        let mut origins: HashMap<String, Origin> = HashMap::new();
        for file in files {
            stamp.push((file.clone(), mtime(&file)));
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read `{name}`: {e}"))?;
            let parsed: PolicySet = text.parse().map_err(|e| located(&name, &text, &e, None))?;
            if parsed.templates().next().is_some() {
                return Err(format!("`{name}`: templates are not supported; write static policies"));
            }
            // The parser numbers policies in source order (`policy0`, `policy1`...).
            let mut policies: Vec<&CedarPolicy> = parsed.policies().collect();
            policies.sort_by_key(|p| p.id().to_string().trim_start_matches("policy").parse::<usize>().unwrap_or(0));
            let mut cursor = 0;
            let mut renamed = PolicySet::new();
            let mut lines = HashMap::new();
            for policy in policies {
                let source = policy.to_string();
                let start = text[cursor..].find(&source).map_or(cursor, |at| cursor + at);
                cursor = start + source.len().min(text.len() - start);
                let line = line_of(&text, start);
                let id = match policy.annotation("id") {
                    Some(id) if !id.trim().is_empty() => id.to_owned(),
                    Some(_) => return Err(format!("`{name}` line {line}: `@id` is empty")),
                    None => format!("{name}:{line}"),
                };
                if let Some(other) = origins.get(&id) {
                    return Err(format!(
                        "`{name}` line {line}: policy id `{id}` is already used at `{}` line {}",
                        other.file.display(),
                        other.line
                    ));
                }
                let approval = match policy.annotation("approval") {
                    None => None,
                    Some(_) if policy.effect() != Effect::Forbid => {
                        return Err(format!(
                            "`{name}` line {line}: policy `{id}`: `@approval` goes on a forbid (what it refuses, a person may approve)"
                        ));
                    }
                    Some(group) if group.trim().is_empty() => {
                        return Err(format!("`{name}` line {line}: policy `{id}`: `@approval` names no group"));
                    }
                    Some(group) => {
                        if let Some(groups) = &sources.approval_groups
                            && !groups.iter().any(|g| g == group)
                        {
                            return Err(format!(
                                "`{name}` line {line}: policy `{id}`: approver group `{group}` is not in [[approvers]]"
                            ));
                        }
                        Some(group.to_owned())
                    }
                };
                let origin = Origin {
                    file: file.clone(),
                    line,
                    effect: policy.effect(),
                    reason: policy.annotation("reason").map(str::to_owned),
                    approval,
                };
                origins.insert(id.clone(), origin);
                lines.insert(id.clone(), line);
                renamed.add(policy.new_id(PolicyId::new(&id))).map_err(|e| format!("`{name}` line {line}: {e}"))?;
            }
            let result = validator.validate(&renamed, ValidationMode::Strict);
            if let Some(error) = result.validation_errors().next() {
                let id = error.policy_id().to_string();
                return Err(located(&name, &text, error, lines.get(&id).copied()));
            }
            for policy in renamed.policies() {
                all.add(policy.clone()).map_err(|e| format!("`{name}`: {e}"))?;
            }
        }
        let index = Index::build(&all, &schema);
        Ok(Self { schema, all, index, origins, stamp })
    }

    /// How many policies are in force.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// True when no policy is in force.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// Decides one scope, handing Cedar only the policies the index says can apply
    /// (`indexed = false` hands it every policy: for measurements and tests).
    /// `principal_type` is `Workload` or `Person`, from the trusted issuer's config.
    pub fn decide_scope(
        &self,
        ask: &ExchangeAsk<'_>,
        scope: &str,
        principal_type: &str,
        indexed: bool,
    ) -> Result<ScopeDecision, String> {
        let target = Target::of(scope, ask.audience)?;
        self.decide_target(ask, scope, &target, principal_type, indexed)
    }

    /// Decides whether the subject may open a session: action `session` on the
    /// exchange's own `Host` (the audience), with the declared agent as `context.actor`.
    pub fn decide_session(&self, ask: &ExchangeAsk<'_>, principal_type: &str) -> Result<ScopeDecision, String> {
        let target = Target {
            action: "session",
            kind_type: "Host",
            kind: "session".into(),
            host: audience_host(ask.audience),
            path: String::new(),
        };
        self.decide_target(ask, "session", &target, principal_type, true)
    }

    fn decide_target(
        &self,
        ask: &ExchangeAsk<'_>,
        scope: &str,
        target: &Target,
        principal_type: &str,
        indexed: bool,
    ) -> Result<ScopeDecision, String> {
        let described = format!("`{}` on {} `{}`", target.action, target.kind_type, target.entity_id());
        let asked = format!("{} on {}", target.action, target.entity_id());
        let principal_id = format!("{}#{}", ask.subject.issuer, ask.subject.subject);
        let tags: Map<String, Value> = ask
            .subject
            .claims
            .iter()
            .filter_map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((k.clone(), Value::String(v)))
            })
            .collect();
        let mut entities = vec![
            json!({
                "uid": {"type": principal_type, "id": principal_id},
                "attrs": {"issuer": ask.subject.issuer, "subject": ask.subject.subject},
                "parents": [],
                "tags": tags,
            }),
            json!({"uid": {"type": "Host", "id": target.host}, "attrs": {}, "parents": []}),
        ];
        let mut parents = vec![json!({"type": "Host", "id": target.host})];
        if let Some(org) = target.organisation() {
            let org_id = format!("{}/{org}", target.host);
            parents.push(json!({"type": "Organisation", "id": org_id}));
            entities.push(json!({
                "uid": {"type": "Organisation", "id": org_id},
                "attrs": {"host": target.host, "name": org},
                "parents": [{"type": "Host", "id": target.host}],
            }));
        }
        // A session's resource is the host itself, already there.
        if target.kind_type != "Host" {
            entities.push(json!({
                "uid": {"type": target.kind_type, "id": target.entity_id()},
                "attrs": {"host": target.host, "path": target.path, "kind": target.kind},
                "parents": parents,
            }));
        }
        let bad = |e: &dyn std::fmt::Display| format!("cannot evaluate policies for `{scope}`: {e}");
        let entities = Entities::from_json_value(Value::Array(entities), Some(&self.schema)).map_err(|e| bad(&e))?;
        let uid = |ty: &str, id: &str| -> Result<EntityUid, String> {
            EntityUid::from_json(json!({"type": ty, "id": id})).map_err(|e| bad(&e))
        };
        let principal = uid(principal_type, &principal_id)?;
        let action = uid("Action", target.action)?;
        let resource = uid(target.kind_type, &target.entity_id())?;
        let ttl = ask.ttl.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        let mut context = json!({
            "scope": scope,
            "audience": ask.audience,
            "ttl": ttl,
            "now": time::OffsetDateTime::now_utc().unix_timestamp(),
            "claimed_intent": claimed_intent(ask.intent),
            "approval": match ask.approval {
                ApprovalState::None => json!({"state": "none"}),
                ApprovalState::Approved { approver: None } => json!({"state": "approved"}),
                ApprovalState::Approved { approver: Some(approver) } => {
                    json!({"state": "approved", "approver": approver})
                }
            },
        });
        if let Some(actor) = &ask.actor {
            context["actor"] = actor_context(actor);
        }
        let context = Context::from_json_value(context, Some((&self.schema, &action))).map_err(|e| bad(&e))?;
        let request = Request::new(principal, action, resource, context, Some(&self.schema)).map_err(|e| bad(&e))?;
        let subset;
        let policies = if indexed {
            subset = self.index.candidates(target.action, target.kind_type, &target.host);
            &subset
        } else {
            &self.all
        };
        let response = Authorizer::new().is_authorized(&request, policies, &entities);
        let mut decision = ScopeDecision { described, asked, ..ScopeDecision::default() };
        let reasons = response.diagnostics().reason().map(ToString::to_string);
        match response.decision() {
            Decision::Allow => decision.permits.extend(reasons),
            Decision::Deny => {
                for id in reasons {
                    match self.origins.get(&id).and_then(|o| o.approval.clone()) {
                        Some(group) => decision.approvals.push((id, group)),
                        None => decision.forbids.push(id),
                    }
                }
            }
        }
        for id in &decision.forbids {
            decision.forbid_reasons.push(self.reason_of(id));
        }
        // Cedar skips a policy that fails to evaluate; for a forbid that would fail open.
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(error) = error;
            let id = error.policy_id().to_string();
            if self.origins.get(&id).is_some_and(|o| o.effect == Effect::Forbid) && !decision.forbids.contains(&id) {
                decision.forbid_reasons.push(format!("policy `{id}` could not be evaluated ({error})"));
                decision.forbids.push(id);
            }
        }
        if !decision.forbids.is_empty() {
            decision.permits.clear();
            // A refusal is a refusal: no one is asked to approve what is refused anyway.
            decision.approvals.clear();
        }
        // A permit reaches only the host the token is for: a token for one audience never
        // carries a scope for another host's resource on a policy's word.
        if !decision.permits.is_empty() && audience_host(ask.audience) != target.host {
            decision.permits.clear();
            decision.described.push_str(&format!(" (the audience `{}` is not that host)", ask.audience));
        }
        Ok(decision)
    }

    /// How many policies the index hands Cedar for this scope (for measurements).
    pub fn candidates_for(&self, ask: &ExchangeAsk<'_>, scope: &str) -> usize {
        Target::of(scope, ask.audience)
            .map_or(0, |t| self.index.candidates(t.action, t.kind_type, &t.host).policies().count())
    }

    /// The words a denied user reads for a forbid: its `@reason`, else where it is.
    fn reason_of(&self, id: &str) -> String {
        match self.origins.get(id) {
            Some(Origin { reason: Some(reason), .. }) => format!("policy `{id}`: {reason}"),
            Some(origin) => {
                format!("policy `{id}` ({} line {}) forbids it", origin.file.display(), origin.line)
            }
            None => format!("policy `{id}` forbids it"),
        }
    }
}

/// Policies in force, replaced as a whole on reload; a reload that fails keeps them.
#[derive(Debug)]
pub struct Handle {
    sources: Sources,
    current: RwLock<Arc<Loaded>>,
}

impl Handle {
    /// Loads the sources; an error stops the start.
    pub fn load(sources: Sources) -> Result<Self, String> {
        let loaded = Loaded::load(&sources)?;
        Ok(Self { sources, current: RwLock::new(Arc::new(loaded)) })
    }

    /// The policies in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Loads the sources again; on success they replace the policies in force, on failure
    /// the old ones stay. Returns the one line to log.
    pub fn reload(&self) -> Result<String, String> {
        match Loaded::load(&self.sources) {
            Ok(loaded) => {
                let line = format!("policies reloaded: {} in force", loaded.len());
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
                Ok(line)
            }
            Err(e) => Err(format!("policy reload failed, keeping the {} policies in force: {e}", self.current().len())),
        }
    }

    /// Reloads when a policy file changed since the last load.
    pub fn reload_if_changed(&self) -> Option<Result<String, String>> {
        (self.current_stamp() != self.current().stamp).then(|| self.reload())
    }

    /// Reloads on SIGHUP and whenever a file changes (polled every `poll`), logging one
    /// line to stderr per attempt. Runs until the process ends.
    pub async fn watch(self: Arc<Self>, poll: std::time::Duration) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Files whose reload failed are not tried again (nor logged again) until they change.
        let mut failed: Option<Vec<(PathBuf, Option<SystemTime>)>> = None;
        loop {
            let signalled = tokio::select! {
                _ = ticks.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let (this, tried) = (self.clone(), failed.clone());
            let attempt = tokio::task::spawn_blocking(move || {
                let stamp = this.current_stamp();
                let unchanged = stamp == this.current().stamp || tried.as_ref() == Some(&stamp);
                if !signalled && unchanged { None } else { Some((this.reload(), stamp)) }
            })
            .await
            .ok()
            .flatten();
            match attempt {
                Some((Ok(line), _)) => {
                    failed = None;
                    eprintln!("mayfly-sts: {line}");
                }
                Some((Err(line), stamp)) => {
                    failed = Some(stamp);
                    eprintln!("mayfly-sts: {line}");
                }
                None => {}
            }
        }
    }

    fn current_stamp(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        let mut files = Vec::new();
        for path in &self.sources.policies {
            let _ = collect_files(path, &mut files);
        }
        self.sources.schema.iter().cloned().chain(files).map(|f| (f.clone(), mtime(&f))).collect()
    }
}

/// The current actor (the outermost `act` entry) as the schema's `Actor` record.
fn actor_context(actor: &Acting<'_>) -> Value {
    let entry = actor.act;
    let mut out = json!({
        "issuer": actor.issuer,
        "subject": entry.get("sub").and_then(Value::as_str).unwrap_or_default(),
        "declared": entry.get("declared").and_then(Value::as_bool).unwrap_or(false),
    });
    for key in ["session", "host"] {
        if let Some(Value::String(v)) = entry.get(key) {
            out[key] = Value::String(v.clone());
        }
    }
    out
}

/// The claimed intent as the schema's record: only known keys, only strings.
fn claimed_intent(intent: Option<&Value>) -> Value {
    let mut out = Map::new();
    let Some(Value::Object(intent)) = intent else {
        return Value::Object(out);
    };
    for key in ["tool", "operation", "target", "session", "agent"] {
        if let Some(Value::String(v)) = intent.get(key) {
            out.insert(key.into(), Value::String(v.clone()));
        }
    }
    match intent.get("command") {
        Some(Value::Array(words)) => {
            let words: Vec<&str> = words.iter().filter_map(Value::as_str).collect();
            out.insert("command".into(), Value::String(words.join(" ")));
        }
        Some(Value::String(command)) => {
            out.insert("command".into(), Value::String(command.clone()));
        }
        _ => {}
    }
    Value::Object(out)
}

/// What a scope names, as Cedar sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The Cedar action.
    pub action: &'static str,
    /// The resource's entity type.
    pub kind_type: &'static str,
    /// The scope's kind (`repo`, `oci` ...).
    pub kind: String,
    /// The host: the scope's own, or the audience's.
    pub host: String,
    /// Repository, package or image name; empty for host-wide scopes.
    pub path: String,
}

impl Target {
    /// Maps a scope (already checked against the scope grammar) and its audience.
    pub fn of(scope: &str, audience: &str) -> Result<Self, String> {
        let parts: Vec<&str> = scope.split(':').collect();
        let kind = parts[0].to_owned();
        let operation = |part: &str| -> Result<&'static str, String> {
            ACTIONS[..5].iter().copied().find(|a| *a == part).ok_or_else(|| {
                format!("scope `{scope}` names no operation a policy can judge (read, write, publish, yank or owners)")
            })
        };
        let last = parts.last().copied().unwrap_or_default();
        let target = match (kind.as_str(), parts.len()) {
            ("cluster" | "registry", n) if n >= 2 => Self {
                action: "access",
                kind_type: if kind == "cluster" { "Cluster" } else { "Registry" },
                host: parts[1..].join(":"),
                path: String::new(),
                kind,
            },
            ("oci", n) if n >= 3 => {
                let middle = parts[1..n - 1].join(":");
                let (host, path) = middle.split_once('/').unwrap_or((&middle, ""));
                Self {
                    action: operation(last)?,
                    kind_type: "ImageRepository",
                    host: host.to_owned(),
                    path: path.to_owned(),
                    kind,
                }
            }
            ("repo" | "crate" | "npm" | "pypi", 3) => Self {
                action: operation(last)?,
                kind_type: match kind.as_str() {
                    "repo" => "GitRepository",
                    "crate" => "Crate",
                    _ => "Package",
                },
                host: audience_host(audience),
                path: parts[1].to_owned(),
                kind,
            },
            (_, n) => {
                let action = if n >= 2 { ACTIONS[..5].iter().copied().find(|a| *a == last) } else { None };
                let end = if action.is_some() { n - 1 } else { n };
                Self {
                    action: action.unwrap_or("access"),
                    kind_type: "Scope",
                    host: audience_host(audience),
                    path: parts[1..end].join(":"),
                    kind,
                }
            }
        };
        Ok(target)
    }

    /// `HOST/PATH`, or `HOST` for host-wide scopes.
    pub fn entity_id(&self) -> String {
        if self.path.is_empty() { self.host.clone() } else { format!("{}/{}", self.host, self.path) }
    }

    /// The first path segment when there are more.
    fn organisation(&self) -> Option<&str> {
        self.path.split_once('/').map(|(org, _)| org).filter(|org| !org.is_empty())
    }
}

/// The host (with a port when it names one) of an audience: a URL's authority, or a bare
/// `host[:port][/...]`.
pub fn audience_host(audience: &str) -> String {
    if audience.contains("://")
        && let Ok(url) = url::Url::parse(audience)
    {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        return match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
    }
    audience.split('/').next().unwrap_or_default().to_ascii_lowercase()
}

/// An index on the policies' scope constraints: action, resource type and host, each
/// either named by the policy or `None` (any). A policy is filed under every action its
/// action constraint can cover; anything the index does not understand files it under
/// "any", so the index only ever leaves out policies that cannot apply.
#[derive(Default)]
struct Index {
    buckets: HashMap<Key, Vec<CedarPolicy>>,
}

/// Action, resource type, host; `None` matches any.
type Key = (Option<String>, Option<String>, Option<String>);

impl Index {
    fn build(all: &PolicySet, schema: &Schema) -> Self {
        let action_entities = schema.action_entities().ok();
        // Which of the actions mayfly asks about a constraint's action covers: itself and,
        // in a schema with action groups, its members.
        let covered = |uid: &EntityUid| -> Vec<Option<String>> {
            let id = uid.id().unescaped();
            let mut out: BTreeSet<String> = BTreeSet::new();
            for action in ACTIONS {
                let Ok(euid) = EntityUid::from_json(json!({"type": "Action", "id": action})) else { continue };
                let member = action_entities
                    .as_ref()
                    .and_then(|e| e.ancestors(&euid))
                    .is_some_and(|mut ancestors| ancestors.any(|a| a == uid));
                if action == id || member {
                    out.insert(action.to_owned());
                }
            }
            out.into_iter().map(Some).collect()
        };
        let mut index = Self::default();
        for policy in all.policies() {
            let actions: Vec<Option<String>> = match policy.action_constraint() {
                ActionConstraint::Any => vec![None],
                ActionConstraint::Eq(uid) => covered(&uid),
                ActionConstraint::In(uids) => {
                    uids.iter().flat_map(&covered).collect::<BTreeSet<_>>().into_iter().collect()
                }
            };
            let (kind_type, host) = match policy.resource_constraint() {
                ResourceConstraint::Any => (None, None),
                ResourceConstraint::Eq(uid) => (Some(uid.type_name().to_string()), host_of(&uid)),
                ResourceConstraint::Is(ty) => (Some(ty.to_string()), None),
                ResourceConstraint::IsIn(ty, uid) => (Some(ty.to_string()), host_of(&uid)),
                ResourceConstraint::In(uid) => (None, host_of(&uid)),
            };
            for action in actions {
                index.buckets.entry((action, kind_type.clone(), host.clone())).or_default().push(policy.clone());
            }
        }
        index
    }

    /// The policies that can apply to this action, resource type and host.
    fn candidates(&self, action: &str, kind_type: &str, host: &str) -> PolicySet {
        let mut set = PolicySet::new();
        for a in [Some(action), None] {
            for t in [Some(kind_type), None] {
                for h in [Some(host), None] {
                    let key: Key = (a.map(str::to_owned), t.map(str::to_owned), h.map(str::to_owned));
                    for policy in self.buckets.get(&key).into_iter().flatten() {
                        // Ids are unique, and each key is visited once.
                        let _ = set.add(policy.clone());
                    }
                }
            }
        }
        set
    }
}

/// The host an entity in a resource constraint pins: `Host::"h"`, `Organisation::"h/org"`
/// or a resource `h/path`. `None` for other types (a custom schema's), which then match
/// any host.
fn host_of(uid: &EntityUid) -> Option<String> {
    let ty = uid.type_name().to_string();
    let known = [
        "Host",
        "Organisation",
        "GitRepository",
        "Crate",
        "Package",
        "ImageRepository",
        "Cluster",
        "Registry",
        "AwsRole",
        "Scope",
    ];
    known.contains(&ty.as_str()).then(|| uid.id().unescaped().split('/').next().unwrap_or_default().to_owned())
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if !meta.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if entry.extension().is_some_and(|e| e == "cedar") {
            out.push(entry);
        }
    }
    Ok(())
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// `NAME line N: message`, with the line of the diagnostic's first label (or `fallback`).
fn located(name: &str, text: &str, diagnostic: &dyn Diagnostic, fallback: Option<usize>) -> String {
    let offset = diagnostic.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
    let line = offset.map(|o| line_of(text, o)).or(fallback);
    let mut message = diagnostic.to_string();
    if let Some(help) = diagnostic.help() {
        message.push_str(&format!(" ({help})"));
    }
    match line {
        Some(line) => format!("`{name}` line {line}: {message}"),
        None => format!("`{name}`: {message}"),
    }
}
