//! What the command's environment gets inside a proxy session: the proxy's URL, the CA
//! bundle in every variable a common client reads it from, and npm's placeholder.

use mayfly_core::Tool;

use super::{PLACEHOLDER, host_name};

/// The variables that name the CA bundle, one per client family.
pub(crate) const CA_VARS: [&str; 9] = [
    "SSL_CERT_FILE",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "npm_config_cafile",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
];

/// Variables that let their holder get an ID token, whatever the config names: CI
/// systems' OIDC request variables and tokens (Buildkite's agent token asks
/// `buildkite-agent oidc request-token`; Azure Pipelines' access token asks its OIDC
/// request URI).
const IDENTITY_VARS: [&str; 8] = [
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "CIRCLE_OIDC_TOKEN",
    "CIRCLE_OIDC_TOKEN_V2",
    "BITBUCKET_STEP_OIDC_TOKEN",
    "BUILDKITE_AGENT_ACCESS_TOKEN",
    "SYSTEM_ACCESSTOKEN",
    "SYSTEM_OIDCREQUESTURI",
];

/// What the command must not inherit: the variables any identity source of the config
/// reads, and the CI systems' own. With them it could get an ID token and exchange it
/// itself, around the proxy.
pub(crate) fn identity_vars(config: &mayfly_core::Config) -> Vec<String> {
    let mut vars: Vec<String> = IDENTITY_VARS.map(str::to_owned).to_vec();
    for identity in config.identities.values() {
        vars.extend(identity.variables().into_iter().filter(|v| !vars.contains(v)).collect::<Vec<_>>());
    }
    vars
}

/// Programs whose requests would not pass through the proxy (or would not trust it), by
/// the name they are run as, with what the user should know.
const BYPASSING: [(&str, &str); 9] = [
    ("ssh", "speaks SSH, not HTTPS: git over SSH gets nothing from the proxy"),
    ("scp", "speaks SSH, not HTTPS"),
    ("sftp", "speaks SSH, not HTTPS"),
    ("docker", "pushes and pulls are made by the docker engine, which never sees this session's proxy"),
    ("java", "the JVM ignores HTTPS_PROXY (it reads -Dhttps.proxyHost) and trusts its own keystore, not SSL_CERT_FILE"),
    ("mvn", "the JVM ignores HTTPS_PROXY (it reads -Dhttps.proxyHost) and trusts its own keystore, not SSL_CERT_FILE"),
    (
        "gradle",
        "the JVM ignores HTTPS_PROXY (it reads -Dhttps.proxyHost) and trusts its own keystore, not SSL_CERT_FILE",
    ),
    ("sbt", "the JVM ignores HTTPS_PROXY (it reads -Dhttps.proxyHost) and trusts its own keystore, not SSL_CERT_FILE"),
    ("node", "Node's own https and fetch ignore HTTPS_PROXY unless NODE_USE_ENV_PROXY=1 (Node 24 and later)"),
];

/// Why the command's own requests would go around the proxy, when it is a program known
/// to; `None` for the rest (a shell's children cannot be known in advance).
pub(crate) fn bypasses(program: &std::ffi::OsStr) -> Option<String> {
    let name = std::path::Path::new(program).file_name()?.to_str()?;
    let (_, why) = BYPASSING.iter().find(|(known, _)| *known == name)?;
    Some(format!("`{name}` may go around the proxy: {why}"))
}

/// npm will not publish without a credential for the registry: the user's npm config
/// (`npm_config_userconfig`, or `~/.npmrc`) with a placeholder the proxy replaces for each
/// host an npm route names, for the session's `npm_config_userconfig`. A config file, not
/// `npm_config_//HOST/:_authToken`: `sh` (dash) drops variables whose names are not shell
/// names, so that variable would not reach npm behind a script. `None` without npm routes.
pub(crate) fn npm_userconfig(config: &mayfly_core::Config, env: &mayfly_core::Env) -> Option<String> {
    let hosts: Vec<&str> = config.routes.iter().filter(|r| r.tool == Tool::Npm).map(|r| r.host.as_str()).collect();
    if hosts.is_empty() {
        return None;
    }
    let user = env
        .path("npm_config_userconfig")
        .or_else(|| env.path("NPM_CONFIG_USERCONFIG"))
        .or_else(|| env.path("HOME").map(|h| h.join(".npmrc")));
    let mut text = user
        .and_then(|p| mayfly_core::files::read_regular_text(&p, mayfly_core::files::MAX_USER_CONFIG).ok())
        .unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("; mayfly exec --proxy: a placeholder the proxy replaces with each request's token\n");
    let mut seen = Vec::new();
    for host in hosts {
        if !seen.contains(&host) {
            text.push_str(&format!("//{host}/:_authToken={PLACEHOLDER}\n"));
            seen.push(host);
        }
    }
    Some(text)
}

/// The command's variables: the proxy URL, loopback names no route names in `NO_PROXY`,
/// and the CA bundle.
pub(crate) fn vars(url: &str, bundle: &std::path::Path, config: &mayfly_core::Config) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
        vars.push((name.to_owned(), url.to_owned()));
        vars.push((name.to_ascii_lowercase(), url.to_owned()));
    }
    let routed: Vec<String> = config.routes.iter().map(|r| host_name(&r.host)).collect();
    let loopback: Vec<&str> =
        ["localhost", "127.0.0.1", "::1"].into_iter().filter(|n| !routed.iter().any(|r| r == n)).collect();
    vars.push(("NO_PROXY".to_owned(), loopback.join(",")));
    vars.push(("no_proxy".to_owned(), loopback.join(",")));
    for name in CA_VARS {
        vars.push((name.to_owned(), bundle.display().to_string()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_that_go_around_the_proxy_are_named_by_their_base_name() {
        let why = bypasses(std::ffi::OsStr::new("/usr/bin/ssh")).unwrap();
        assert!(why.starts_with("`ssh` may go around the proxy: speaks SSH"), "{why}");
        assert!(bypasses(std::ffi::OsStr::new("git")).is_none());
        assert!(bypasses(std::ffi::OsStr::new("sshd-helper")).is_none());
    }

    #[test]
    fn the_command_loses_every_variable_an_identity_reads() {
        let config = mayfly_core::Config::parse(
            "[identities.gitlab]\nkind = \"env\"\nvar = \"MY_ID_TOKEN\"\n\n[identities.gh]\nkind = \"github-actions\"\n\n[identities.any]\nkind = \"auto\"\ngitlab_variable = \"GL_TOKEN\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let vars = identity_vars(&config);
        for name in [
            "MY_ID_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "CIRCLE_OIDC_TOKEN_V2",
            "GL_TOKEN",
            "SYSTEM_ACCESSTOKEN",
            "SYSTEM_OIDCREQUESTURI",
            "BUILDKITE_AGENT_ACCESS_TOKEN",
        ] {
            assert!(vars.iter().any(|v| v == name), "{name}: {vars:?}");
        }
        assert_eq!(vars.iter().filter(|v| *v == "ACTIONS_ID_TOKEN_REQUEST_TOKEN").count(), 1);
    }

    #[test]
    fn the_npm_config_keeps_the_users_and_adds_one_placeholder_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("npmrc");
        std::fs::write(&user, "registry=https://npm.example/").unwrap();
        let toml = "[identities.ci]\nkind = \"github-actions\"\naudience = \"mayfly\"\n\n[exchanges.sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example/token\"\n\n[[routes]]\ntool = \"npm\"\nhost = \"npm.example\"\npath = \"@org/a\"\nidentity = \"ci\"\nexchange = \"sts\"\n\n[[routes]]\ntool = \"npm\"\nhost = \"npm.example\"\npath = \"@org/b\"\nidentity = \"ci\"\nexchange = \"sts\"\n";
        let config = mayfly_core::Config::parse(toml, std::path::Path::new("config.toml")).unwrap();
        let env = mayfly_core::Env::from_pairs([("npm_config_userconfig", user.display().to_string())]);
        let text = npm_userconfig(&config, &env).unwrap();
        assert!(text.starts_with("registry=https://npm.example/\n"), "{text}");
        assert_eq!(text.matches("//npm.example/:_authToken=mayfly-proxy-placeholder\n").count(), 1, "{text}");
        assert!(
            npm_userconfig(&mayfly_core::Config::parse("", std::path::Path::new("config.toml")).unwrap(), &env)
                .is_none()
        );
    }
}
