//! Policy as code: Cedar policies, validated against mayfly's schema, decided per scope.
//!
//! Each requested scope becomes one Cedar request: the principal is the verified subject
//! (its claims as tags), the action the scope's operation, the resource what the scope
//! names (typed per tool, in its organisation and host), and the context the audience,
//! lifetime, time, approval state and the intent the client *claims*. Cedar evaluates
//! every policy it is handed, so an [`Index`] on action, resource type and host hands it
//! only those whose scope constraints can match. Requests are built as Cedar values, not
//! JSON, and their shapes are checked against the schema once, at load ([`Direct`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy as CedarPolicy, PolicyId, PolicySet, Request, ResourceConstraint, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::{Value, json};

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
    /// Builds requests without JSON or per-request schema checks, for the shapes the
    /// schema was shown to accept at load.
    direct: Direct,
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
    /// The operation alone, for announcements: `write`.
    pub operation: String,
    /// What it is on, for announcements: `h/org/app`.
    pub target: String,
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
        let direct = Direct::new(&schema);
        Ok(Self { schema, all, index, direct, origins, stamp })
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
        self.scopes(ask, principal_type).decide(scope, indexed)
    }

    /// Decides whether the subject may open a session: action `session` on the
    /// exchange's own `Host` (the audience), with the declared agent as `context.actor`.
    pub fn decide_session(&self, ask: &ExchangeAsk<'_>, principal_type: &str) -> Result<ScopeDecision, String> {
        self.scopes(ask, principal_type).decide_target("session", &Target::session(ask.audience), true)
    }

    /// Decides the scopes of one request one by one, building what they share (the
    /// principal) once.
    pub fn scopes<'l, 'a>(&'l self, ask: &'l ExchangeAsk<'a>, principal_type: &'l str) -> Scopes<'l, 'a> {
        let direct = self.direct.principal(ask, principal_type);
        Scopes { loaded: self, ask, principal_type, principal: std::cell::OnceCell::new(), direct }
    }

    /// The request and entities through Cedar's JSON forms, each checked against the
    /// schema: for shapes the schema was not shown at load to accept (a custom schema's),
    /// so any error is the one Cedar gives for this request.
    fn build_validated(&self, principal: &Ent, parts: &Parts) -> Result<(Request, Entities), String> {
        let entities = Value::Array(std::iter::once(principal).chain(&parts.entities).map(Ent::to_json).collect());
        let entities = Entities::from_json_value(entities, Some(&self.schema)).map_err(|e| e.to_string())?;
        let uid = |ty: &str, id: &str| EntityUid::from_json(json!({"type": ty, "id": id})).map_err(|e| e.to_string());
        let principal = uid(&principal.ty, &principal.id)?;
        let action = uid("Action", parts.action)?;
        let resource = uid(parts.resource.0, &parts.resource.1)?;
        let context = record_json(&parts.context);
        let context = Context::from_json_value(context, Some((&self.schema, &action))).map_err(|e| e.to_string())?;
        let request =
            Request::new(principal, action, resource, context, Some(&self.schema)).map_err(|e| e.to_string())?;
        Ok((request, entities))
    }

    fn evaluate(
        &self,
        ask: &ExchangeAsk<'_>,
        scope: &str,
        target: &Target,
        built: Result<(Request, Entities), String>,
        indexed: bool,
    ) -> Result<ScopeDecision, String> {
        let (request, entities) = built.map_err(|e| format!("cannot evaluate policies for `{scope}`: {e}"))?;
        let described = format!("`{}` on {} `{}`", target.action, target.kind_type, target.entity_id());
        let asked = format!("{} on {}", target.action, target.entity_id());
        let subset;
        let policies = if indexed {
            subset = self.index.candidates(target.action, target.kind_type, &target.host);
            &*subset
        } else {
            &self.all
        };
        let response = Authorizer::new().is_authorized(&request, policies, &entities);
        let mut decision = ScopeDecision {
            described,
            asked,
            operation: target.action.to_string(),
            target: target.entity_id().to_string(),
            ..ScopeDecision::default()
        };
        // Cedar reports the policies in no set order; sorted, a decision reads the same each time.
        let mut reasons: Vec<String> = response.diagnostics().reason().map(ToString::to_string).collect();
        reasons.sort();
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
        let mut errors: Vec<_> = response.diagnostics().errors().collect();
        errors.sort_by_key(|cedar_policy::AuthorizationError::PolicyEvaluationError(error)| error.policy_id());
        for cedar_policy::AuthorizationError::PolicyEvaluationError(error) in errors {
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

/// The scopes of one request, decided one by one against one set of policies.
pub struct Scopes<'l, 'a> {
    loaded: &'l Loaded,
    ask: &'l ExchangeAsk<'a>,
    principal_type: &'l str,
    /// The principal, as the validated path renders it: built when a scope takes that path.
    principal: std::cell::OnceCell<Ent>,
    /// Its uid, and the schema's actions with the principal, for requests built directly;
    /// `None` when the schema was not shown at load to accept this principal.
    direct: Option<(EntityUid, Entities)>,
}

impl Scopes<'_, '_> {
    /// Decides one scope (see [`Loaded::decide_scope`]).
    pub fn decide(&self, scope: &str, indexed: bool) -> Result<ScopeDecision, String> {
        let target = Target::of(scope, self.ask.audience)?;
        self.decide_target(scope, &target, indexed)
    }

    fn decide_target(&self, scope: &str, target: &Target, indexed: bool) -> Result<ScopeDecision, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let built = self.build(&Parts::of(self.ask, scope, target, now), target);
        self.loaded.evaluate(self.ask, scope, target, built, indexed)
    }

    fn build(&self, parts: &Parts, target: &Target) -> Result<(Request, Entities), String> {
        match &self.direct {
            Some((principal, base)) if self.loaded.direct.conforms(self.principal_type, target) => {
                self.loaded.direct.build(principal, base, parts)
            }
            _ => {
                let principal = self.principal.get_or_init(|| Ent::principal(self.ask, self.principal_type));
                self.loaded.build_validated(principal, parts)
            }
        }
    }
}

/// Each policy file (and the schema) with its modification time.
type Stamp = Vec<(PathBuf, Option<SystemTime>)>;

/// Policies in force, replaced as a whole on reload; a reload that fails keeps them.
#[derive(Debug)]
pub struct Handle {
    sources: Sources,
    current: RwLock<Arc<Loaded>>,
    /// The files as they were when a reload last failed: not tried again until they change.
    failed: Mutex<Option<Stamp>>,
}

impl Handle {
    /// Loads the sources; an error stops the start.
    pub fn load(sources: Sources) -> Result<Self, String> {
        let loaded = Loaded::load(&sources)?;
        Ok(Self { sources, current: RwLock::new(Arc::new(loaded)), failed: Mutex::new(None) })
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

    /// Reloads when a policy file changed since the last load (a stat per file), unless
    /// the files are as they were when a reload last failed; `None` when nothing was tried.
    /// Returns the one line to log.
    pub fn poll(&self) -> Option<Result<String, String>> {
        let stamp = self.current_stamp();
        let mut failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if stamp == self.current().stamp || failed.as_ref() == Some(&stamp) {
            return None;
        }
        let result = self.reload();
        *failed = result.is_err().then_some(stamp);
        Some(result)
    }

    fn current_stamp(&self) -> Stamp {
        let mut files = Vec::new();
        for path in &self.sources.policies {
            let _ = collect_files(path, &mut files);
        }
        self.sources.schema.iter().cloned().chain(files).map(|f| (f.clone(), mtime(&f))).collect()
    }
}

/// A value mayfly hands Cedar: rendered as JSON for the validated path, or directly as a
/// Cedar expression.
#[derive(Clone, Debug)]
enum Val {
    Str(String),
    Long(i64),
    Bool(bool),
    Record(Vec<(&'static str, Self)>),
}

impl Val {
    fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => Value::String(s.clone()),
            Self::Long(n) => Value::from(*n),
            Self::Bool(b) => Value::Bool(*b),
            Self::Record(fields) => record_json(fields),
        }
    }

    fn to_cedar(&self) -> Result<RestrictedExpression, String> {
        Ok(match self {
            Self::Str(s) => RestrictedExpression::new_string(s.clone()),
            Self::Long(n) => RestrictedExpression::new_long(*n),
            Self::Bool(b) => RestrictedExpression::new_bool(*b),
            Self::Record(fields) => {
                RestrictedExpression::new_record(record_cedar(fields)?).map_err(|e| e.to_string())?
            }
        })
    }
}

fn record_json(fields: &[(&'static str, Val)]) -> Value {
    Value::Object(fields.iter().map(|(k, v)| ((*k).to_owned(), v.to_json())).collect())
}

fn record_cedar(fields: &[(&'static str, Val)]) -> Result<Vec<(String, RestrictedExpression)>, String> {
    fields.iter().map(|(k, v)| Ok(((*k).to_owned(), v.to_cedar()?))).collect()
}

/// One entity of a request.
#[derive(Clone, Debug)]
struct Ent {
    ty: String,
    id: String,
    attrs: Vec<(&'static str, Val)>,
    parents: Vec<(&'static str, String)>,
    /// The principal's claims; `None` for entities without tags.
    tags: Option<Vec<(String, String)>>,
}

impl Ent {
    /// The verified subject: its claims (strings, numbers, booleans) as tags.
    fn principal(ask: &ExchangeAsk<'_>, principal_type: &str) -> Self {
        let tags = claim_tags(ask).map(|(k, v)| (k.clone(), v)).collect();
        Self {
            ty: principal_type.to_owned(),
            id: principal_id(ask),
            attrs: vec![
                ("issuer", Val::Str(ask.subject.issuer.clone())),
                ("subject", Val::Str(ask.subject.subject.clone())),
            ],
            parents: Vec::new(),
            tags: Some(tags),
        }
    }

    fn to_json(&self) -> Value {
        let mut out = json!({
            "uid": {"type": self.ty, "id": self.id},
            "attrs": record_json(&self.attrs),
            "parents": self.parents.iter().map(|(ty, id)| json!({"type": ty, "id": id})).collect::<Vec<_>>(),
        });
        if let Some(tags) = &self.tags {
            out["tags"] = Value::Object(tags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
        }
        out
    }
}

/// The principal's id: its issuer and subject.
fn principal_id(ask: &ExchangeAsk<'_>) -> String {
    format!("{}#{}", ask.subject.issuer, ask.subject.subject)
}

/// The subject's claims a principal carries as tags: strings, numbers and booleans, as strings.
fn claim_tags<'a>(ask: &'a ExchangeAsk<'_>) -> impl Iterator<Item = (&'a String, String)> {
    ask.subject.claims.iter().filter_map(|(k, v)| {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return None,
        };
        Some((k, v))
    })
}

/// One scope's Cedar request as mayfly builds it, before it is handed to Cedar either
/// way: the entities besides the principal, the action, the resource and the context.
#[derive(Clone, Debug)]
struct Parts {
    entities: Vec<Ent>,
    action: &'static str,
    resource: (&'static str, String),
    context: Vec<(&'static str, Val)>,
}

impl Parts {
    fn of(ask: &ExchangeAsk<'_>, scope: &str, target: &Target, now: i64) -> Self {
        let mut entities = vec![Ent {
            ty: "Host".into(),
            id: target.host.clone(),
            attrs: Vec::new(),
            parents: Vec::new(),
            tags: None,
        }];
        let mut parents = vec![("Host", target.host.clone())];
        if let Some(org) = target.organisation() {
            let org_id = format!("{}/{org}", target.host);
            parents.push(("Organisation", org_id.clone()));
            entities.push(Ent {
                ty: "Organisation".into(),
                id: org_id,
                attrs: vec![("host", Val::Str(target.host.clone())), ("name", Val::Str(org.to_owned()))],
                parents: vec![("Host", target.host.clone())],
                tags: None,
            });
        }
        // A session's resource is the host itself, already there.
        if target.kind_type != "Host" {
            entities.push(Ent {
                ty: target.kind_type.into(),
                id: target.entity_id(),
                attrs: vec![
                    ("host", Val::Str(target.host.clone())),
                    ("path", Val::Str(target.path.clone())),
                    ("kind", Val::Str(target.kind.clone())),
                ],
                parents,
                tags: None,
            });
        }
        let ttl = ask.ttl.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        let state = if matches!(ask.approval, ApprovalState::None) { "none" } else { "approved" };
        let mut approval = vec![("state", Val::Str(state.into()))];
        if let ApprovalState::Approved { approver: Some(approver) } = ask.approval {
            approval.push(("approver", Val::Str(approver.to_owned())));
        }
        let mut context = vec![
            ("scope", Val::Str(scope.to_owned())),
            ("audience", Val::Str(ask.audience.to_owned())),
            ("ttl", Val::Long(ttl)),
            ("now", Val::Long(now)),
            ("claimed_intent", claimed_intent(ask.intent)),
            ("approval", Val::Record(approval)),
        ];
        if let Some(actor) = &ask.actor {
            context.push(("actor", actor_context(actor)));
        }
        Self { entities, action: target.action, resource: (target.kind_type, target.entity_id()), context }
    }
}

/// The current actor (the outermost `act` entry) as the schema's `Actor` record.
fn actor_context(actor: &Acting<'_>) -> Val {
    let entry = actor.act;
    let mut out = vec![
        ("issuer", Val::Str(actor.issuer.to_owned())),
        ("subject", Val::Str(entry.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned())),
        ("declared", Val::Bool(entry.get("declared").and_then(Value::as_bool).unwrap_or(false))),
    ];
    for key in ["session", "host"] {
        if let Some(Value::String(v)) = entry.get(key) {
            out.push((key, Val::Str(v.clone())));
        }
    }
    Val::Record(out)
}

/// The claimed intent as the schema's record: only known keys, only strings.
fn claimed_intent(intent: Option<&Value>) -> Val {
    let mut out = Vec::new();
    let Some(Value::Object(intent)) = intent else {
        return Val::Record(out);
    };
    for key in ["tool", "operation", "target", "session", "agent"] {
        if let Some(Value::String(v)) = intent.get(key) {
            out.push((key, Val::Str(v.clone())));
        }
    }
    match intent.get("command") {
        Some(Value::Array(words)) => {
            let words: Vec<&str> = words.iter().filter_map(Value::as_str).collect();
            out.push(("command", Val::Str(words.join(" "))));
        }
        Some(Value::String(command)) => out.push(("command", Val::Str(command.clone()))),
        _ => {}
    }
    Val::Record(out)
}

/// The principal types mayfly names.
const PRINCIPALS: [&str; 2] = ["Workload", "Person"];

/// The resources a scope can name for each operation ([`Target::of`]), and a session's.
const OPERATION_RESOURCES: [&str; 5] = ["GitRepository", "Crate", "Package", "ImageRepository", "Scope"];
const ACTION_RESOURCES: [(&str, &[&str]); 7] = [
    ("read", &OPERATION_RESOURCES),
    ("write", &OPERATION_RESOURCES),
    ("publish", &OPERATION_RESOURCES),
    ("yank", &OPERATION_RESOURCES),
    ("owners", &OPERATION_RESOURCES),
    ("access", &["Cluster", "Registry", "Scope"]),
    ("session", &["Host"]),
];

/// Builds requests and entities directly, without JSON and without checking each one
/// against the schema. Sound because what mayfly builds has a fixed shape: which entity
/// types, attributes (strings, numbers, booleans), parents, tags and context attributes
/// appear depends only on the principal type, the action, the resource type and whether
/// there is an organisation, and whether a schema accepts a request depends only on that
/// shape, not on its strings. At load every shape goes once through Cedar's validated
/// path; only those it accepts are built here, the others keep the validated path (and
/// its error) for every request.
struct Direct {
    /// (principal type, action, resource type, with an organisation) the schema accepts.
    conforming: HashSet<(&'static str, &'static str, &'static str, bool)>,
    /// The principal types it accepts in some shape.
    principals: HashSet<&'static str>,
    /// The schema's action entities, which the validated path adds itself.
    actions: Entities,
    /// Entity type names, parsed once.
    types: HashMap<&'static str, EntityTypeName>,
    /// `Action::"..."` for each action, parsed once.
    action_uids: HashMap<&'static str, EntityUid>,
}

impl Direct {
    /// Finds the shapes `schema` accepts. The samples' ids and strings are none a schema
    /// would enumerate or parse as an extension value, so a schema that narrows a type so
    /// keeps the validated path for it.
    fn new(schema: &Schema) -> Self {
        let types: HashMap<&'static str, EntityTypeName> = PRINCIPALS
            .into_iter()
            .chain(ACTION_RESOURCES.iter().flat_map(|(_, types)| types.iter().copied()))
            .chain(["Host", "Organisation"])
            .filter_map(|ty| Some((ty, EntityTypeName::from_str(ty).ok()?)))
            .collect();
        let uid = |ty: &str, id: &str| EntityUid::from_json(json!({"type": ty, "id": id})).ok();
        let action_uids = ACTIONS.into_iter().filter_map(|a| Some((a, uid("Action", a)?))).collect();
        let actions = schema.action_entities().unwrap_or_else(|_| Entities::empty());
        let mut direct = Self { conforming: HashSet::new(), principals: HashSet::new(), actions, types, action_uids };

        let s = || Val::Str("mayfly sample".into());
        let host = "sample.invalid";
        let entity_ok = |ty: &str, attrs: Vec<(&'static str, Val)>, parents: Vec<(&'static str, String)>, tags| {
            let ent = Ent { ty: ty.to_owned(), id: format!("{host}/mayfly sample/0"), attrs, parents, tags };
            Entities::from_json_value(Value::Array(vec![ent.to_json()]), Some(schema)).is_ok()
        };
        let host_ok = entity_ok("Host", Vec::new(), Vec::new(), None);
        let org_ok = entity_ok("Organisation", vec![("host", s()), ("name", s())], vec![("Host", host.into())], None);
        let resource_ok = |ty: &str, with_org: bool| {
            let mut parents = vec![("Host", host.to_owned())];
            if with_org {
                parents.push(("Organisation", format!("{host}/mayfly sample")));
            }
            entity_ok(ty, vec![("host", s()), ("path", s()), ("kind", s())], parents, None)
        };
        // Every optional context attribute present, none, and an actor without its own
        // optional ones: a record conforms attribute by attribute, so these cover every mix.
        let actor = |full: bool| {
            let mut actor = vec![("issuer", s()), ("subject", s()), ("declared", Val::Bool(full))];
            if full {
                actor.extend([("session", s()), ("host", s())]);
            }
            Val::Record(actor)
        };
        let context = |full: bool, actor: Option<Val>| {
            let intent = ["tool", "operation", "target", "session", "agent", "command"];
            let mut approval = vec![("state", Val::Str("approved".into()))];
            if full {
                approval.push(("approver", s()));
            }
            let mut context = vec![
                ("scope", s()),
                ("audience", s()),
                ("ttl", Val::Long(600)),
                ("now", Val::Long(1_700_000_000)),
                ("claimed_intent", Val::Record(if full { intent.map(|k| (k, s())).to_vec() } else { Vec::new() })),
                ("approval", Val::Record(approval)),
            ];
            context.extend(actor.map(|a| ("actor", a)));
            record_json(&context)
        };
        let contexts = [context(true, Some(actor(true))), context(false, None), context(false, Some(actor(false)))];
        for principal_type in PRINCIPALS {
            let tags = Some(vec![("mayfly sample".to_owned(), "mayfly sample".to_owned())]);
            if !host_ok || !entity_ok(principal_type, vec![("issuer", s()), ("subject", s())], Vec::new(), tags) {
                continue;
            }
            for (action, resources) in ACTION_RESOURCES {
                for resource_type in resources.iter().copied() {
                    let request_ok = contexts.iter().all(|context| {
                        let (Some(principal), Some(action), Some(resource)) = (
                            uid(principal_type, "sample.invalid#mayfly sample"),
                            uid("Action", action),
                            uid(resource_type, "sample.invalid/mayfly sample/0"),
                        ) else {
                            return false;
                        };
                        Context::from_json_value(context.clone(), Some((schema, &action))).is_ok_and(|context| {
                            Request::new(principal, action.clone(), resource, context, Some(schema)).is_ok()
                        })
                    });
                    for with_org in [false, true] {
                        let entities_ok = if resource_type == "Host" {
                            !with_org
                        } else {
                            resource_ok(resource_type, with_org) && (!with_org || org_ok)
                        };
                        if request_ok && entities_ok {
                            direct.conforming.insert((principal_type, action, resource_type, with_org));
                            direct.principals.insert(principal_type);
                        }
                    }
                }
            }
        }
        direct
    }

    /// Whether requests of this shape are built here.
    fn conforms(&self, principal_type: &str, target: &Target) -> bool {
        self.conforming.contains(&(principal_type, target.action, target.kind_type, target.organisation().is_some()))
    }

    fn uid(&self, ty: &str, id: &str) -> Result<EntityUid, String> {
        let name = self.types.get(ty).ok_or_else(|| format!("unknown entity type `{ty}`"))?;
        Ok(EntityUid::from_type_name_and_id(name.clone(), EntityId::new(id)))
    }

    fn entity(&self, ent: &Ent) -> Result<Entity, String> {
        let parents = ent.parents.iter().map(|(ty, id)| self.uid(ty, id)).collect::<Result<Vec<_>, String>>()?;
        let tags = ent.tags.iter().flatten().map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
        Entity::new_with_tags(self.uid(&ent.ty, &ent.id)?, record_cedar(&ent.attrs)?, parents, tags)
            .map_err(|e| e.to_string())
    }

    /// The principal's uid, and the schema's actions with the principal: what every scope
    /// of a request shares. `None` sends the request through the validated path.
    /// Built straight from the verified subject, as [`Ent::principal`] renders it.
    fn principal(&self, ask: &ExchangeAsk<'_>, principal_type: &str) -> Option<(EntityUid, Entities)> {
        if !self.principals.contains(principal_type) {
            return None;
        }
        let uid = self.uid(principal_type, &principal_id(ask)).ok()?;
        let attrs = [
            ("issuer".to_owned(), RestrictedExpression::new_string(ask.subject.issuer.clone())),
            ("subject".to_owned(), RestrictedExpression::new_string(ask.subject.subject.clone())),
        ];
        let tags = claim_tags(ask).map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v)));
        let entity = Entity::new_with_tags(uid.clone(), attrs, [], tags).ok()?;
        let base = self.actions.clone().add_entities([entity], None).ok()?;
        Some((uid, base))
    }

    /// One scope's request, and its entities: `base` with this scope's.
    fn build(&self, principal: &EntityUid, base: &Entities, parts: &Parts) -> Result<(Request, Entities), String> {
        let entities = parts.entities.iter().map(|ent| self.entity(ent)).collect::<Result<Vec<_>, String>>()?;
        let entities = base.clone().add_entities(entities, None).map_err(|e| e.to_string())?;
        let action =
            self.action_uids.get(parts.action).cloned().ok_or_else(|| format!("unknown action `{}`", parts.action))?;
        let resource = self.uid(parts.resource.0, &parts.resource.1)?;
        let context = Context::from_pairs(record_cedar(&parts.context)?).map_err(|e| e.to_string())?;
        let request = Request::new(principal.clone(), action, resource, context, None).map_err(|e| e.to_string())?;
        Ok((request, entities))
    }
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

    /// Opening a session: action `session` on the exchange's own `Host` (the audience).
    fn session(audience: &str) -> Self {
        Self {
            action: "session",
            kind_type: "Host",
            kind: "session".into(),
            host: audience_host(audience),
            path: String::new(),
        }
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
///
/// The set handed to Cedar for one action, resource type and host is put together once
/// and kept: a host no policy names gets the set of policies that name no host, so what
/// is kept is bounded by the policies, not by the hosts requests name.
#[derive(Default)]
struct Index {
    buckets: HashMap<Key, Vec<CedarPolicy>>,
    /// The hosts some policy names.
    hosts: HashSet<String>,
    /// The candidate sets put together so far.
    sets: RwLock<HashMap<SetKey, Arc<PolicySet>>>,
}

/// Action, resource type, host; `None` matches any.
type Key = (Option<String>, Option<String>, Option<String>);

/// Action, resource type, and the host when some policy names it.
type SetKey = (&'static str, &'static str, Option<String>);

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
            index.hosts.extend(host.clone());
            for action in actions {
                index.buckets.entry((action, kind_type.clone(), host.clone())).or_default().push(policy.clone());
            }
        }
        index
    }

    /// The policies that can apply to this action, resource type and host.
    fn candidates(&self, action: &'static str, kind_type: &'static str, host: &str) -> Arc<PolicySet> {
        let key = (action, kind_type, self.hosts.contains(host).then(|| host.to_owned()));
        if let Some(set) = self.sets.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return set.clone();
        }
        let set = Arc::new(self.collect(action, kind_type, key.2.as_deref()));
        self.sets.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, set.clone());
        set
    }

    /// The policies filed under this action, resource type and host (`None`: a host no
    /// policy names), or under "any" for any of them.
    fn collect(&self, action: &str, kind_type: &str, host: Option<&str>) -> PolicySet {
        let mut set = PolicySet::new();
        for a in [Some(action), None] {
            for t in [Some(kind_type), None] {
                for h in host.into_iter().map(Some).chain([None]) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::VerifiedSubject;

    const POLICIES: &str = r#"
@id("main-writes")
permit(principal, action == Action::"write", resource is GitRepository in Organisation::"git.example/org")
when { principal.hasTag("ref") && principal.getTag("ref") == "refs/heads/main" };

@id("reads")
permit(principal, action == Action::"read", resource in Host::"git.example");

@id("long-lived")
@reason("at most an hour")
forbid(principal, action, resource) when { context.ttl > 3600 };

@id("force-push")
forbid(principal, action == Action::"write", resource)
when { context.claimed_intent has command && context.claimed_intent.command like "*--force*" };

@id("agents-publish")
@approval("release")
forbid(principal, action == Action::"publish", resource)
when { context has actor && context.actor has declared && context.actor.declared }
unless { context.approval.state == "approved" };

@id("crates-by-approver")
permit(principal, action == Action::"publish", resource is Crate)
when { context.approval has approver && context.approval.approver like "https://idp#*" };

@id("people-clusters")
permit(principal is Person, action == Action::"access", resource is Cluster);

@id("yank-errs")
forbid(principal, action == Action::"yank", resource) when { context.ttl + 9223372036854775000 > 0 };

@id("acme-packages")
permit(principal, action in [Action::"read", Action::"write"], resource is Package in Host::"npm.example")
when { resource in Organisation::"npm.example/@acme" && resource.kind == "npm" && resource.path like "@acme/*" };

@id("numbered-runs")
permit(principal is Workload, action, resource is Scope)
when { principal.hasTag("run") && principal.getTag("run") == "42" && principal.subject like "repo:*" };

@id("images")
permit(principal, action == Action::"read", resource is ImageRepository in Host::"oci.example")
when { context.audience like "*oci.example*" && context.now > 0 && resource.host == "oci.example" };

@id("registries")
permit(principal, action == Action::"access", resource is Registry)
when { principal.hasTag("admin") && principal.getTag("admin") == "true" && principal.issuer == "https://idp" };

@id("bad-sessions")
forbid(principal, action == Action::"session", resource)
when { context has actor && context.actor has session && context.actor.session == "bad" };

@id("sessions")
permit(principal, action == Action::"session", resource == Host::"sts.example")
when { context has actor && context.actor.subject like "agent:*" };

@id("intent-tool")
permit(principal, action == Action::"write", resource is Scope)
when { context.claimed_intent has tool && context.claimed_intent.tool == "terraform" && context.scope like "*:write" };
"#;

    fn load(schema: Option<&str>, policies: &str) -> Loaded {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("p.cedar"), policies).expect("write");
        let schema = schema.map(|text| {
            let path = dir.path().join("custom.cedarschema");
            std::fs::write(&path, text).expect("write");
            path
        });
        Loaded::load(&Sources { policies: vec![dir.path().join("p.cedar")], schema, approval_groups: None })
            .expect("valid policies")
    }

    /// Decides through both paths, with the same `now`.
    fn both(
        loaded: &Loaded,
        ask: &ExchangeAsk<'_>,
        scope: &str,
        principal_type: &str,
        indexed: bool,
    ) -> [Result<ScopeDecision, String>; 2] {
        let target =
            if scope == "session" { Target::session(ask.audience) } else { Target::of(scope, ask.audience).unwrap() };
        let parts = Parts::of(ask, scope, &target, 1_800_000_000);
        let scopes = loaded.scopes(ask, principal_type);
        assert!(loaded.direct.conforms(principal_type, &target), "{principal_type} {target:?}");
        let (principal, base) = scopes.direct.as_ref().expect("a principal built directly");
        [
            loaded.direct.build(principal, base, &parts),
            loaded.build_validated(&Ent::principal(ask, principal_type), &parts),
        ]
        .map(|built| loaded.evaluate(ask, scope, &target, built, indexed))
    }

    #[test]
    fn direct_requests_decide_as_validated_ones() {
        let loaded = load(None, POLICIES);
        // Every shape of the built-in schema is built directly.
        assert_eq!(loaded.direct.conforming.len(), 2 * (5 * 5 + 3) * 2 + 2);
        let subjects = [
            json!({"ref": "refs/heads/main", "run": 42, "admin": true, "nested": {"a": 1}, "list": [1]}),
            json!({"ref": "refs/heads/dev", "run": "42", "admin": "false"}),
            json!({}),
        ]
        .map(|claims| VerifiedSubject {
            issuer: "https://idp".into(),
            subject: "repo:org/app:ref:refs/heads/main".into(),
            claims: claims.as_object().unwrap().clone(),
        });
        let asks = [
            ("git.example", "repo:org/app:write"),
            ("https://git.example", "repo:app:read"),
            ("git.example/org", "repo:org/deep/app:read"),
            ("https://crates.example", "crate:foo:publish"),
            ("crates.example", "crate:foo:yank"),
            ("https://npm.example", "npm:@acme/pkg:write"),
            ("npm.example", "pypi:acme:read"),
            ("https://oci.example", "oci:oci.example/team/img:read"),
            ("https://other.example", "oci:oci.example/img:read"),
            ("https://k8s.example:6443", "cluster:k8s.example:6443"),
            ("oci.example", "registry:oci.example"),
            ("tf.example", "custom:thing/x:write"),
            ("tf.example", "custom:thing"),
            ("https://sts.example", "session"),
            ("sts.example", "session"),
        ];
        let intents = [
            None,
            Some(json!({"command": ["git", "push", "--force"], "tool": "git"})),
            Some(
                json!({"tool": "terraform", "operation": "apply", "target": "t", "session": "s", "agent": "a", "command": "terraform apply"}),
            ),
            Some(json!({"command": 3, "tool": ["x"]})),
        ];
        let actors = [
            None,
            Some((
                json!({"sub": "agent:claude", "declared": true, "session": "s1", "host": "laptop"}),
                "https://sts.example",
            )),
            Some((json!({"sub": "agent:x", "declared": true, "session": "bad"}), "https://sts.example")),
            Some((json!({"sub": "ci-bot"}), "https://idp")),
        ];
        let approvals = [
            ApprovalState::None,
            ApprovalState::Approved { approver: None },
            ApprovalState::Approved { approver: Some("https://idp#alice") },
        ];
        let ttls = [None, Some(Duration::from_secs(600)), Some(Duration::from_secs(7200))];
        let mut seen = BTreeSet::new();
        let mut cases = 0;
        for (i, (audience, scope)) in asks.iter().enumerate() {
            for j in 0..12 {
                let k = i + j;
                let (act, issuer) = actors[k % actors.len()].clone().unzip();
                let ask = ExchangeAsk {
                    subject: &subjects[k % subjects.len()],
                    audience,
                    scopes: &[],
                    ttl: ttls[(k / 2) % ttls.len()],
                    intent: intents[(k / 3) % intents.len()].as_ref(),
                    actor: act.as_ref().zip(issuer).map(|(act, issuer)| Acting { act, issuer }),
                    approval: approvals[(k / 4) % approvals.len()],
                };
                for principal_type in PRINCIPALS {
                    let [direct, validated] = both(&loaded, &ask, scope, principal_type, j % 2 == 0);
                    assert_eq!(direct, validated, "{scope} for {principal_type}: {ask:?}");
                    let d = direct.expect("decides");
                    seen.extend(d.permits.iter().chain(&d.forbids).cloned());
                    seen.extend(d.approvals.iter().map(|(id, _)| id.clone()));
                    cases += 1;
                }
            }
        }
        assert!(cases > 300);
        // One request's scopes share the principal built once, and decide as each alone.
        let scopes: Vec<String> =
            asks.iter().map(|(_, scope)| (*scope).to_owned()).filter(|s| s != "session").collect();
        for subject in &subjects {
            let ask = ExchangeAsk {
                subject,
                audience: "git.example",
                scopes: &scopes,
                ttl: None,
                intent: None,
                actor: None,
                approval: ApprovalState::None,
            };
            let shared = loaded.scopes(&ask, "Workload");
            for scope in &scopes {
                let [_, alone] = both(&loaded, &ask, scope, "Workload", true);
                assert_eq!(shared.decide(scope, true), alone, "{scope}");
            }
        }
        // Every policy decided something somewhere: the requests are varied enough.
        let ids: BTreeSet<String> = loaded.origins.keys().cloned().collect();
        assert_eq!(seen, ids);
    }

    #[test]
    fn shapes_a_custom_schema_refuses_keep_the_validated_path() {
        // Resources only in hosts: those with an organisation do not conform.
        let schema = SCHEMA.replace("Scope in [Organisation, Host]", "Scope in [Host]");
        let loaded =
            load(Some(&schema), r#"permit(principal, action == Action::"read", resource in Host::"git.example");"#);
        let subject =
            VerifiedSubject { issuer: "https://idp".into(), subject: "s".into(), claims: serde_json::Map::new() };
        let ask = ExchangeAsk {
            subject: &subject,
            audience: "git.example",
            scopes: &[],
            ttl: None,
            intent: None,
            actor: None,
            approval: ApprovalState::None,
        };
        let flat = Target::of("repo:app:read", "git.example").unwrap();
        let nested = Target::of("repo:org/app:read", "git.example").unwrap();
        assert!(loaded.direct.conforms("Workload", &flat));
        assert!(!loaded.direct.conforms("Workload", &nested));
        assert_eq!(loaded.decide_scope(&ask, "repo:app:read", "Workload", true).unwrap().permits.len(), 1);
        let refused = loaded.decide_scope(&ask, "repo:org/app:read", "Workload", true).unwrap_err();
        assert!(refused.starts_with("cannot evaluate policies for `repo:org/app:read`"), "{refused}");

        // A context without `actor`: no shape conforms, every request is validated.
        let schema = SCHEMA.replace("  actor?: Actor,\n", "");
        let loaded =
            load(Some(&schema), r#"permit(principal, action == Action::"read", resource in Host::"git.example");"#);
        assert!(loaded.direct.conforming.is_empty());
        assert_eq!(loaded.decide_scope(&ask, "repo:org/app:read", "Workload", true).unwrap().permits.len(), 1);
        let act = json!({"sub": "agent:a", "declared": true});
        let with_actor = ExchangeAsk { actor: Some(Acting { act: &act, issuer: "https://sts" }), ..ask };
        assert!(loaded.decide_scope(&with_actor, "repo:org/app:read", "Workload", true).is_err());
    }
}
