//! `auto`: the first identity source this environment offers, in a documented order,
//! found on each use from environment variables and files; only when none of those is
//! there are the cloud metadata servers probed (GCE/GKE, then Azure IMDS; 300 ms to
//! connect, once per process), unless `metadata_servers = false` or this is a CI job. The source found is
//! one of the other kinds, and answers in `auto`'s place: its `Debug` form is the cache
//! key, so a token from one source is never served for another.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::spiffe::SOCKET_VAR as SPIFFE_SOCKET;
use super::{
    Ask, AzureImds, AzurePipelines, Command, Error, File, GceMetadata, GitHubActions, Presence, Source, Spiffe,
    SubjectToken, Variable,
};
use crate::{Env, EnvVars};

/// The `id_tokens` variable GitLab jobs name when the config does not (the CI template's).
pub(crate) const GITLAB_VARIABLE: &str = "MAYFLY_ID_TOKEN";
/// Where a pod's projected service account token is looked for when the config does not say.
pub(crate) const TOKEN_FILE: &str = "/var/run/secrets/tokens/mayfly";
/// CircleCI's job token, for the project's own audience.
const CIRCLECI_TOKEN: &str = "CIRCLE_OIDC_TOKEN_V2";
/// Bitbucket Pipelines' step token (steps with `oidc: true`).
const BITBUCKET_TOKEN: &str = "BITBUCKET_STEP_OIDC_TOKEN";
/// Variables a CI system sets in its jobs. With any of them set, the metadata servers are
/// never asked: a job whose own token is missing (GitHub Actions without `id-token: write`)
/// must fail, not run as the service account of the VM a self-hosted runner is on.
const CI_MARKERS: [&str; 8] = [
    "GITHUB_ACTIONS",
    EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL,
    "GITLAB_CI",
    "CIRCLECI",
    "BUILDKITE",
    "BITBUCKET_BUILD_NUMBER",
    "TF_BUILD",
    "JENKINS_URL",
];

/// The CI marker set here, if any.
fn ci_marker(env: &Env) -> Option<&'static str> {
    CI_MARKERS.into_iter().find(|name| env.get(name).is_some())
}

/// `kind = "auto"`.
#[derive(Debug)]
pub(crate) struct Auto {
    /// The GitLab `id_tokens` variable.
    pub(crate) gitlab_variable: String,
    /// The Azure Pipelines service connection id.
    pub(crate) azure_service_connection: Option<String>,
    /// The Kubernetes projected token file.
    pub(crate) token_file: PathBuf,
    /// The identity's audience, for showing what a use would run.
    pub(crate) audience: Option<String>,
    /// Whether the cloud metadata servers are probed when nothing else is found.
    pub(crate) metadata_servers: bool,
    /// A user-assigned managed identity's client id, for Azure IMDS.
    pub(crate) azure_client_id: Option<String>,
    /// The SPIFFE ID whose JWT-SVID is taken from a SPIFFE Workload API.
    pub(crate) spiffe_id: Option<String>,
    /// What the metadata probes found, so each is made once per process.
    pub(crate) probes: Probes,
}

/// The metadata probes made so far: (server, its host here, whether it answered).
#[derive(Default)]
pub(crate) struct Probes(Mutex<Vec<(&'static str, String, bool)>>);

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probes")
    }
}

impl Probes {
    /// Whether `server` answered at `host`, probing it the first time.
    fn answered(&self, server: &'static str, host: String, probe: impl FnOnce() -> bool) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, answered)) = seen.iter().find(|(s, h, _)| *s == server && *h == host) {
            return *answered;
        }
        let answered = probe();
        seen.push((server, host, answered));
        answered
    }
}

/// A source found here.
pub(crate) struct Found {
    /// What was found ("Buildkite") and what showed it ("`BUILDKITE=true`").
    pub(crate) what: String,
    /// The source that gives its token.
    pub(crate) source: Arc<dyn Source>,
    /// The likely fix when its source is found but gives nothing.
    hint: Option<&'static str>,
}

/// What `auto` found here, for `mayfly doctor` and `explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// The source used and what showed it; `None` when nothing was found.
    pub chosen: Option<String>,
    /// Sources also present that the order puts after it.
    pub outranked: Vec<String>,
    /// What was looked for, in order: the line said when nothing is found.
    pub looked_for: String,
}

impl std::fmt::Display for Detected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.chosen {
            None => write!(f, "nothing: {}", self.looked_for),
            Some(chosen) if self.outranked.is_empty() => write!(f, "{chosen}"),
            Some(chosen) => {
                write!(f, "{chosen}, first in the order before {}, also present", self.outranked.join("; "))
            }
        }
    }
}

/// The one line said when nothing is found.
fn nothing_found(token_file: &std::path::Path, metadata_servers: bool) -> String {
    let servers = if metadata_servers {
        ", a SPIFFE socket (`{SPIFFE_SOCKET}`) and the GCE and Azure metadata servers (no answer within 300 ms)"
    } else {
        " and a SPIFFE socket (`{SPIFFE_SOCKET}`)"
    }
    .replace("{SPIFFE_SOCKET}", SPIFFE_SOCKET);
    format!(
        "no identity source found: looked for GitHub Actions (`{}`), GitLab CI (`GITLAB_CI=true`), CircleCI (`CIRCLECI=true`), Buildkite (`BUILDKITE=true`), Bitbucket Pipelines (`{BITBUCKET_TOKEN}`), Azure Pipelines (`{}`), a Kubernetes token file (`{}`){servers}",
        EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL,
        super::azure::REQUEST_URI,
        token_file.display()
    )
}

impl Auto {
    /// Every source present here, in the documented order: the first one is used.
    pub(crate) fn found(&self, env: &Env, audience: Option<&str>) -> Vec<Found> {
        const GITLAB: &str = "GitLab CI (`GITLAB_CI=true`)";
        let set = |name: &str| env.get(name).is_some();
        let is_true = |name: &str| env.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut found = Vec::new();
        let mut push = |what: String, source: Arc<dyn Source>| {
            found.push(Found { what, source, hint: None });
        };
        let (url, token) = (EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN);
        if set(url) && set(token) {
            push(
                format!("GitHub Actions (`{url}` and `{token}` are set)"),
                Arc::new(GitHubActions { request_url: None }),
            );
        }
        if is_true("GITLAB_CI") {
            let var = self.gitlab_variable.clone();
            push(GITLAB.into(), Arc::new(Variable { var }));
        }
        if is_true("CIRCLECI") {
            let source: Arc<dyn Source> = match audience {
                // The job's variable carries the project's audience; another is asked for.
                Some(audience) if super::command::on_path("circleci", env) => {
                    let claims = serde_json::json!({ "aud": audience }).to_string();
                    let argv = ["circleci", "run", "oidc", "get", "--claims", &claims];
                    Arc::new(Command { argv: argv.map(str::to_owned).to_vec() })
                }
                _ => Arc::new(Variable { var: CIRCLECI_TOKEN.into() }),
            };
            push("CircleCI (`CIRCLECI=true`)".into(), source);
        }
        if is_true("BUILDKITE") {
            let mut argv: Vec<String> = ["buildkite-agent", "oidc", "request-token"].map(str::to_owned).to_vec();
            if let Some(audience) = audience {
                argv.extend(["--audience".to_owned(), audience.to_owned()]);
            }
            push("Buildkite (`BUILDKITE=true`)".into(), Arc::new(Command { argv }));
        }
        if set(BITBUCKET_TOKEN) {
            let source = Arc::new(Variable { var: BITBUCKET_TOKEN.into() });
            push(format!("Bitbucket Pipelines (`{BITBUCKET_TOKEN}` is set)"), source);
        }
        if set(super::azure::REQUEST_URI) {
            let source = Arc::new(AzurePipelines { service_connection: self.azure_service_connection.clone() });
            push(format!("Azure Pipelines (`{}` is set)", super::azure::REQUEST_URI), source);
        }
        if self.token_file.is_file() {
            let source = Arc::new(File { path: self.token_file.clone() });
            push(format!("a Kubernetes token file (`{}` exists)", self.token_file.display()), source);
        }
        if set(SPIFFE_SOCKET) {
            let source = Arc::new(Spiffe { socket: None, spiffe_id: self.spiffe_id.clone() });
            push(format!("a SPIFFE Workload API (`{SPIFFE_SOCKET}` is set)"), source);
        }
        if found.is_empty() && self.metadata_servers && ci_marker(env).is_none() {
            let gce = GceMetadata.origin(env);
            if self.probes.answered("gce", gce.clone(), || GceMetadata::probe(env)) {
                let what = format!("the GCE metadata server (`{gce}` answered)");
                found.push(Found { what, source: Arc::new(GceMetadata), hint: None });
            } else {
                let imds = AzureImds { client_id: self.azure_client_id.clone() };
                let host = imds.origin(env);
                if self.probes.answered("azure", host.clone(), || AzureImds::probe(env)) {
                    let what = format!("Azure's instance metadata service (`{host}` answered)");
                    found.push(Found { what, source: Arc::new(imds), hint: None });
                }
            }
        }
        if let Some(gitlab) = found.iter_mut().find(|f| f.what == GITLAB) {
            gitlab.hint = Some("name it in the job's `id_tokens`, or set `gitlab_variable` to the name used");
        }
        found
    }

    /// The source used here, if any.
    fn chosen(&self, env: &Env, audience: Option<&str>) -> Option<Found> {
        self.found(env, audience).into_iter().next()
    }

    /// What was found here and which one is used.
    pub(crate) fn detection(&self, env: &Env) -> Detected {
        let mut found = self.found(env, self.audience.as_deref()).into_iter().map(|f| f.what);
        Detected { chosen: found.next(), outranked: found.collect(), looked_for: self.nothing_found(env) }
    }

    /// Why nothing can be used: nothing found, or GitHub Actions without its permission.
    fn nothing(&self, env: &Env) -> String {
        if env.get("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
            return format!(
                "a GitHub Actions job without `{}`: the job needs `permissions: id-token: write`",
                EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL
            );
        }
        self.nothing_found(env)
    }

    /// The one line said when nothing is found here.
    fn nothing_found(&self, env: &Env) -> String {
        match ci_marker(env) {
            Some(marker) if self.metadata_servers => format!(
                "{}; the metadata servers are not asked in a CI job (`{marker}` is set)",
                nothing_found(&self.token_file, false)
            ),
            _ => nothing_found(&self.token_file, self.metadata_servers),
        }
    }
}

impl Source for Auto {
    fn kind(&self) -> &'static str {
        "auto"
    }

    fn variables(&self) -> Vec<String> {
        // Every source it might pick, whichever this environment offers now.
        let mut vars: Vec<String> = GitHubActions { request_url: None }.variables();
        vars.extend([
            self.gitlab_variable.clone(),
            CIRCLECI_TOKEN.into(),
            BITBUCKET_TOKEN.into(),
            SPIFFE_SOCKET.into(),
        ]);
        vars.extend(AzurePipelines { service_connection: None }.variables());
        vars
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.token_file.clone()]
    }

    fn origin(&self, env: &Env) -> String {
        match self.chosen(env, self.audience.as_deref()) {
            Some(Found { source, .. }) => format!("{} {}", source.kind(), source.origin(env)),
            None => "nothing detected".into(),
        }
    }

    fn look(&self, env: &Env) -> Presence {
        match self.chosen(env, self.audience.as_deref()) {
            Some(Found { what, source, hint }) => match source.look(env) {
                Presence::Absent(why) => match hint {
                    Some(hint) => Presence::Absent(format!("{what}: {why}: {hint}")),
                    None => Presence::Absent(format!("{what}: {why}")),
                },
                present => present,
            },
            None => Presence::Absent(self.nothing(env)),
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        match self.chosen(ask.env, ask.audience) {
            Some(Found { source, .. }) => source.fetch(ask),
            None => Ok(None),
        }
    }

    fn answering(&self, env: &Env, audience: Option<&str>) -> Option<Arc<dyn Source>> {
        Some(self.chosen(env, audience)?.source)
    }

    fn detected(&self, env: &Env) -> Option<Detected> {
        Some(self.detection(env))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn auto(token_file: PathBuf) -> Auto {
        Auto {
            gitlab_variable: GITLAB_VARIABLE.into(),
            azure_service_connection: None,
            token_file,
            audience: None,
            metadata_servers: false,
            azure_client_id: None,
            spiffe_id: None,
            probes: Probes::default(),
        }
    }

    /// (what was found, the kind and `Debug` form of the source used) in order.
    fn found(auto: &Auto, env: &Env, audience: Option<&str>) -> Vec<(String, String)> {
        auto.found(env, audience).into_iter().map(|f| (f.what, format!("{:?}", f.source))).collect()
    }

    #[test]
    fn each_source_is_found_by_its_variables_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let a = auto(file.clone());
        let alone = |pairs: &[(&str, &str)]| found(&a, &Env::from_pairs(pairs.iter().copied()), None);
        assert!(alone(&[]).is_empty());
        assert!(alone(&[(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, "u")]).is_empty(), "the request token is needed too");
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case<'_>; 7] = [
            (
                &[(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, "u"), (EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN, "t")],
                "GitHub Actions (`ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` are set)",
                "GitHubActions { request_url: None }",
            ),
            (&[("GITLAB_CI", "true")], "GitLab CI (`GITLAB_CI=true`)", r#"Variable { var: "MAYFLY_ID_TOKEN" }"#),
            (&[("CIRCLECI", "true")], "CircleCI (`CIRCLECI=true`)", r#"Variable { var: "CIRCLE_OIDC_TOKEN_V2" }"#),
            (
                &[("BUILDKITE", "true")],
                "Buildkite (`BUILDKITE=true`)",
                r#"Command { argv: ["buildkite-agent", "oidc", "request-token"] }"#,
            ),
            (
                &[("BITBUCKET_STEP_OIDC_TOKEN", "t")],
                "Bitbucket Pipelines (`BITBUCKET_STEP_OIDC_TOKEN` is set)",
                r#"Variable { var: "BITBUCKET_STEP_OIDC_TOKEN" }"#,
            ),
            (
                &[("SYSTEM_OIDCREQUESTURI", "https://dev.azure.com/o")],
                "Azure Pipelines (`SYSTEM_OIDCREQUESTURI` is set)",
                "AzurePipelines { service_connection: None }",
            ),
            (
                &[("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock")],
                "a SPIFFE Workload API (`SPIFFE_ENDPOINT_SOCKET` is set)",
                "Spiffe { socket: None, spiffe_id: None }",
            ),
        ];
        for (pairs, what, source) in cases {
            assert_eq!(alone(pairs), [(what.to_owned(), source.to_owned())]);
        }
        assert!(alone(&[("GITLAB_CI", "false"), ("BUILDKITE", "")]).is_empty());
        std::fs::write(&file, "tok").unwrap();
        assert_eq!(
            alone(&[]),
            [(format!("a Kubernetes token file (`{}` exists)", file.display()), format!("File {{ path: {file:?} }}"))]
        );
    }

    #[test]
    fn the_order_decides_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "tok").unwrap();
        let a = auto(file);
        let all = Env::from_pairs([
            ("SPIFFE_ENDPOINT_SOCKET", "unix:///s"),
            ("SYSTEM_OIDCREQUESTURI", "https://dev.azure.com/o"),
            ("BITBUCKET_STEP_OIDC_TOKEN", "t"),
            ("BUILDKITE", "true"),
            ("CIRCLECI", "true"),
            ("GITLAB_CI", "true"),
            (EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, "https://t.example/x"),
            (EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN, "r"),
        ]);
        let order: Vec<String> =
            a.found(&all, None).into_iter().map(|f| f.what.split(" (").next().unwrap().to_owned()).collect();
        assert_eq!(
            order,
            [
                "GitHub Actions",
                "GitLab CI",
                "CircleCI",
                "Buildkite",
                "Bitbucket Pipelines",
                "Azure Pipelines",
                "a Kubernetes token file",
                "a SPIFFE Workload API"
            ]
        );
        assert_eq!(a.origin(&all), "github-actions t.example");
        assert_eq!(
            format!("{:?}", a.answering(&all, None).unwrap()),
            "GitHubActions { request_url: None }",
            "the cache key is the chosen source's own"
        );
        let two = Env::from_pairs([("BUILDKITE", "true"), ("GITLAB_CI", "true"), ("MAYFLY_ID_TOKEN", "t")]);
        let detected = a.detection(&two);
        assert_eq!(detected.chosen.as_deref(), Some("GitLab CI (`GITLAB_CI=true`)"));
        assert_eq!(detected.outranked[0], "Buildkite (`BUILDKITE=true`)");
        assert!(
            detected.to_string().starts_with(
                "GitLab CI (`GITLAB_CI=true`), first in the order before Buildkite (`BUILDKITE=true`); a Kubernetes token file"
            ),
            "{detected}"
        );
    }

    #[test]
    fn a_custom_audience_is_asked_of_the_tools() {
        let dir = tempfile::tempdir().unwrap();
        let circleci = dir.path().join("circleci");
        std::fs::write(&circleci, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&circleci, std::fs::Permissions::from_mode(0o755)).unwrap();
        let a = auto(dir.path().join("none"));
        let path = dir.path().display().to_string();
        let env = Env::from_pairs([("CIRCLECI", "true"), ("BUILDKITE", "true"), ("PATH", path.as_str())]);
        let sources = found(&a, &env, Some("sts \"x\""));
        assert_eq!(
            sources[0].1,
            r#"Command { argv: ["circleci", "run", "oidc", "get", "--claims", "{\"aud\":\"sts \\\"x\\\"\"}"] }"#
        );
        assert_eq!(
            sources[1].1,
            r#"Command { argv: ["buildkite-agent", "oidc", "request-token", "--audience", "sts \"x\""] }"#
        );
        // Without the CLI, the job's own variable (the project's audience) is what there is.
        let env = Env::from_pairs([("CIRCLECI", "true"), ("PATH", "/nonexistent")]);
        assert_eq!(found(&a, &env, Some("sts"))[0].1, r#"Variable { var: "CIRCLE_OIDC_TOKEN_V2" }"#);
    }

    #[test]
    fn nothing_found_is_one_line_naming_what_was_looked_for() {
        let a = auto(PathBuf::from("/nonexistent/token"));
        let Presence::Absent(why) = a.look(&Env::default()) else { panic!("nothing here, yet present") };
        assert!(why.starts_with("no identity source found: looked for GitHub Actions"), "{why}");
        assert!(why.contains("a Kubernetes token file (`/nonexistent/token`)"), "{why}");
        assert!(!why.contains('\n'));
        let Presence::Absent(why) = a.look(&Env::from_pairs([("GITHUB_ACTIONS", "true")])) else { panic!() };
        assert!(why.ends_with("the job needs `permissions: id-token: write`"), "{why}");
        let env = Env::from_pairs([("BUILDKITE", "true"), ("PATH", "/nonexistent")]);
        let Presence::Absent(why) = a.look(&env) else { panic!("no agent, yet present") };
        assert_eq!(why, "Buildkite (`BUILDKITE=true`): `buildkite-agent` is not on PATH");
        let Presence::Absent(why) = a.look(&Env::from_pairs([("GITLAB_CI", "true")])) else { panic!() };
        assert_eq!(
            why,
            "GitLab CI (`GITLAB_CI=true`): `MAYFLY_ID_TOKEN` is not set: name it in the job's `id_tokens`, or set `gitlab_variable` to the name used"
        );
        let spiffe = Env::from_pairs([("SPIFFE_ENDPOINT_SOCKET", "unix:///s")]);
        let no_http = || -> Result<crate::HttpClient, crate::http::Error> { panic!("no network expected") };
        let ask = Ask { name: "t", audience: None, env: &spiffe, http: &no_http, now: 0 };
        let err = a.fetch(&ask).unwrap_err().to_string();
        assert_eq!(err, "identity `t`: the SPIFFE Workload API needs an audience: set `audience`");
    }

    #[test]
    fn a_ci_job_never_asks_the_metadata_servers() {
        let a = Auto { metadata_servers: true, ..auto(PathBuf::from("/nonexistent/token")) };
        // A GCE metadata server that answered here: outside CI it is what `auto` uses.
        let gce = GceMetadata.origin(&Env::default());
        *a.probes.0.lock().unwrap() = vec![("gce", gce, true)];
        assert_eq!(
            a.detection(&Env::default()).chosen.as_deref().map(|c| c.starts_with("the GCE metadata server")),
            Some(true)
        );
        for marker in CI_MARKERS {
            let env = Env::from_pairs([(marker, "true")]);
            let found: Vec<String> = a.found(&env, None).into_iter().map(|f| f.what).collect();
            assert!(!found.iter().any(|f| f.contains("metadata")), "{marker}: {found:?}");
        }
        for (marker, ends) in [
            ("GITHUB_ACTIONS", "the job needs `permissions: id-token: write`".to_owned()),
            ("JENKINS_URL", "the metadata servers are not asked in a CI job (`JENKINS_URL` is set)".to_owned()),
            ("TF_BUILD", "the metadata servers are not asked in a CI job (`TF_BUILD` is set)".to_owned()),
        ] {
            let env = Env::from_pairs([(marker, "true")]);
            let Presence::Absent(why) = a.look(&env) else { panic!("{marker}: nothing usable, yet present") };
            assert!(why.ends_with(&ends), "{why}");
            assert_eq!(a.detection(&env).chosen, None, "{marker}");
        }
    }
}
