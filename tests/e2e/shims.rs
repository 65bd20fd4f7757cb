//! The shims for hookless tools: the real twine, run inside `mayfly exec`, uploads through
//! PyPI's trusted publishing exchange with a token that exists only in twine's environment,
//! burnt when the session ends; and through a PEP 807 index's discovered exchange. The
//! real `gem push` publishes through RubyGems trusted publishing the same way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mayfly_devstack::{Pypi, RubygemsOrg};
use mayfly_tests::{Stack, bin, require_tool};

/// A PyPI where `org/app` publishes `mayfly-py`, and a route to it.
fn pypi(stack: &Stack) -> Pypi {
    pypi_with(stack, |pypi| format!("kind = \"pypi\"\ntoken_endpoint = \"{}/_/oidc/mint-token\"", pypi.base_url))
}

/// A PyPI where `org/app` publishes `mayfly-py`, and a route to it through the exchange
/// `exchange` writes.
fn pypi_with(stack: &Stack, exchange: impl Fn(&Pypi) -> String) -> Pypi {
    let pypi = Pypi::start(stack.runtime(), &stack.ca, &stack.issuer, &[("org/app", &["mayfly-py"])]).unwrap();
    let host = pypi.base_url.trim_start_matches("https://");
    stack.write_config(&format!(
        "[exchanges.pypi]\n{}\nca_file = \"{}\"\n\n{}\n[[routes]]\ntool = \"pypi\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"pypi\"\n",
        exchange(&pypi),
        stack.ca.ca_cert.display(),
        stack.default_routes(),
    ));
    pypi
}

/// A minimal source distribution: `NAME-VERSION.tar.gz` holding `NAME-VERSION/PKG-INFO`.
pub(super) fn sdist(stack: &Stack, name: &str, version: &str) -> PathBuf {
    let root = stack.work.join(format!("build-{name}"));
    let base = format!("{}-{version}", name.replace('-', "_"));
    std::fs::create_dir_all(root.join(&base)).unwrap();
    std::fs::write(
        root.join(&base).join("PKG-INFO"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n"),
    )
    .unwrap();
    let dist = stack.work.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    let file = dist.join(format!("{base}.tar.gz"));
    let out = Command::new("tar").arg("czf").arg(&file).arg("-C").arg(&root).arg(&base).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    file
}

fn twine_upload(stack: &Stack, pypi: &Pypi, file: &Path, session: &str) -> Output {
    Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--", "twine", "upload", "--non-interactive", "--disable-progress-bar"])
        .args(["--repository-url", &pypi.upload_url])
        .arg(file)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("REQUESTS_CA_BUNDLE", &stack.ca.ca_cert)
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn twine_uploads_through_the_shim_with_a_pypi_trusted_publishing_token() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = pypi(&stack);
    let file = sdist(&stack, "mayfly-py", "0.1.0");
    let out = twine_upload(&stack, &pypi, &file, "py-1");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(pypi.uploads(), [("mayfly-py".to_owned(), "mayfly_py-0.1.0.tar.gz".to_owned())]);
    let audit = stack.client_audit();
    let issued = audit.iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!((issued["tool"].as_str(), issued["operation"].as_str()), (Some("pypi"), Some("publish")));
    assert_eq!(issued["session"], "py-1");
    assert_eq!(issued["target"], format!("{}/mayfly-py", pypi.base_url));
    let argv = issued["process"][0]["argv"].as_array().unwrap();
    assert_eq!(argv[0], "twine", "the shim heads the chain: {argv:?}");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn a_project_the_publisher_does_not_own_is_refused_by_pypi() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = pypi(&stack);
    let file = sdist(&stack, "someone-else", "0.1.0");
    let out = twine_upload(&stack, &pypi, &file, "py-2");
    assert!(!out.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("403"), "{all}");
    assert!(pypi.uploads().is_empty());
    assert!(!all.contains("pypi-"), "no token in the output: {all}");
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn without_a_route_the_shim_runs_the_real_tool_untouched() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let shims = stack.dir.path().join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    std::os::unix::fs::symlink(bin("mayfly-shim"), shims.join("twine")).unwrap();
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap());
    let out = Command::new(shims.join("twine"))
        .arg("--version")
        .env_clear()
        .envs(stack.env())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("twine version"));
    // Only itself on PATH: one clear line, no recursion.
    let out = Command::new(shims.join("twine"))
        .arg("--version")
        .env_clear()
        .envs(stack.env())
        .env("PATH", shims.display().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "mayfly: cannot find the real `twine` on PATH\n");
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn a_named_repository_the_shim_cannot_resolve_gets_no_token() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = pypi(&stack);
    let file = sdist(&stack, "mayfly-py", "0.1.0");
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--", "twine", "upload", "--non-interactive", "-r", "internal"])
        .arg(&file)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("mayfly: `twine upload -r internal`: give the repository's URL"), "{stderr}");
    assert_eq!(pypi.minted(), 0, "no token was minted for a guess");
    assert!(pypi.uploads().is_empty());
}

/// twine with a token given by hand, no mayfly involved.
fn twine_upload_with(stack: &Stack, pypi: &Pypi, file: &Path, token: &str) -> Output {
    Command::new("twine")
        .args(["upload", "--non-interactive", "--disable-progress-bar", "--repository-url", &pypi.upload_url])
        .arg(file)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("REQUESTS_CA_BUNDLE", &stack.ca.ca_cert)
        .env("TWINE_USERNAME", "__token__")
        .env("TWINE_PASSWORD", token)
        .output()
        .unwrap()
}

pub(super) fn all_output(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn the_session_end_burns_the_upload_token_at_pypi() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = pypi(&stack);
    let file = sdist(&stack, "mayfly-py", "0.1.0");
    let out = twine_upload(&stack, &pypi, &file, "py-burn");
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(pypi.uploads().len(), 1);
    // One token minted, and the same token burnt: `POST /_/oidc/burn-token {"token": T}`.
    let minted = pypi.tokens();
    assert_eq!(minted.len(), 1);
    assert_eq!(pypi.burnt(), minted, "the session's end burnt the token it minted");
    assert!(!pypi.is_live(&minted[0]));
    let audit = stack.client_audit();
    let revoked: Vec<_> = audit.iter().filter(|l| l["outcome"] == "revoked").collect();
    assert_eq!(revoked.len(), 1, "{audit:?}");
    assert_eq!((revoked[0]["session"].as_str(), revoked[0]["tool"].as_str()), (Some("py-burn"), Some("pypi")));
    // The burnt token no longer uploads.
    let again = sdist(&stack, "mayfly-py", "0.2.0");
    let out = twine_upload_with(&stack, &pypi, &again, &minted[0]);
    assert!(!out.status.success());
    assert!(all_output(&out).contains("403"), "{}", all_output(&out));
    assert_eq!(pypi.uploads().len(), 1);
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn burn_false_leaves_the_token_to_expire() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = pypi_with(&stack, |pypi| {
        format!("kind = \"pypi\"\ntoken_endpoint = \"{}/_/oidc/mint-token\"\nburn = \"false\"", pypi.base_url)
    });
    let file = sdist(&stack, "mayfly-py", "0.1.0");
    let out = twine_upload(&stack, &pypi, &file, "py-keep");
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(pypi.burnt().is_empty());
    assert!(pypi.is_live(&pypi.tokens()[0]));
    let outcomes: Vec<_> =
        stack.client_audit().iter().map(|l| l["outcome"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(!outcomes.iter().any(|o| o == "revoked"), "{outcomes:?}");
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn twine_uploads_to_a_pep807_index_at_the_endpoints_it_names() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = pypi_with(&stack, |pypi| format!("kind = \"pep807\"\ntoken_endpoint = \"{}\"", pypi.upload_url));
    let file = sdist(&stack, "mayfly-py", "0.1.0");
    let out = twine_upload(&stack, &pypi, &file, "py-807");
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(pypi.uploads(), [("mayfly-py".to_owned(), "mayfly_py-0.1.0.tar.gz".to_owned())]);
    assert_eq!(pypi.minted(), 1);
    // Discovered once for the audience and once for the mint, with PEP 807's media type.
    let accepts = pypi.discovery_accepts();
    assert_eq!(accepts, ["application/vnd.pypi.pytp.v1+json"; 2]);
    let issued = stack.client_audit().into_iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!((issued["tool"].as_str(), issued["operation"].as_str()), (Some("pypi"), Some("publish")));
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn a_pep807_index_naming_another_host_never_gets_the_id_token() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = pypi_with(&stack, |pypi| format!("kind = \"pep807\"\ntoken_endpoint = \"{}\"", pypi.upload_url));
    // Same server, but by another name: the host differs from the upload URL's.
    let elsewhere = pypi.base_url.replace("127.0.0.1", "localhost");
    pypi.serve_discovery(serde_json::json!({
        "audience-endpoint": format!("{elsewhere}/_/oidc/audience"),
        "mint-token-endpoint": format!("{elsewhere}/_/oidc/mint-token"),
    }));
    let before = stack.issuer.issued();
    let file = sdist(&stack, "mayfly-py", "0.1.0");
    let out = twine_upload(&stack, &pypi, &file, "py-807-hostile");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("another host")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.ends_with("exchange `pypi` answered 200 with `audience-endpoint` on another host (localhost), refused"),
        "{stderr}"
    );
    assert_eq!(stack.issuer.issued(), before, "no ID token was fetched for it");
    assert_eq!(pypi.minted(), 0);
    assert!(pypi.uploads().is_empty());
}

/// `mayfly explain pypi URL --operation publish`: its stdout.
fn explain(stack: &Stack, url: &str) -> String {
    let out = Command::new(bin("mayfly"))
        .args(["explain", "pypi", url, "--operation", "publish"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn explain_names_the_pypi_kinds_and_whether_they_burn() {
    let stack = Stack::new();
    let pypi = pypi(&stack);
    let text = explain(&stack, &format!("{}/mayfly-py", pypi.base_url));
    assert!(text.contains("(pypi, ") && text.contains("can revoke its tokens (at erase and session end)"), "{text}");
    stack.write_config(&format!(
        "[exchanges.pypi]\nkind = \"pep807\"\ntoken_endpoint = \"{}\"\n\n{}\n[[routes]]\ntool = \"pypi\"\nhost = \"{}\"\nidentity = \"ci\"\nexchange = \"pypi\"\n",
        pypi.upload_url,
        stack.default_routes(),
        pypi.base_url.trim_start_matches("https://"),
    ));
    let text = explain(&stack, &format!("{}/mayfly-py", pypi.base_url));
    assert!(text.contains("(pep807, ") && text.contains("cannot revoke"), "{text}");
    assert_eq!(pypi.minted(), 0, "explain alone asks nothing");
}

/// A RubyGems.org where `org/app` publishes `mayfly-gem`, and a `gem` route to it.
fn rubygems(stack: &Stack) -> RubygemsOrg {
    let gems = RubygemsOrg::start(stack.runtime(), &stack.ca, &stack.issuer, &[("org/app", "mayfly-gem")]).unwrap();
    stack.write_config(&format!(
        "[exchanges.rubygems]\nkind = \"rubygems\"\ntoken_endpoint = \"{}\"\nca_file = \"{}\"\n\n{}\n[[routes]]\ntool = \"gem\"\nhost = \"{}\"\nidentity = \"ci\"\nexchange = \"rubygems\"\n",
        gems.exchange_url(),
        stack.ca.ca_cert.display(),
        stack.default_routes(),
        gems.host(),
    ));
    gems
}

/// `gem build` of a gem with nothing in it: `NAME-VERSION.gem` in the work directory.
fn built_gem(stack: &Stack, name: &str, version: &str) -> PathBuf {
    built_gem_with(stack, name, version, "")
}

/// `gem build` of a gem with nothing in it and these lines in its specification.
fn built_gem_with(stack: &Stack, name: &str, version: &str, extra: &str) -> PathBuf {
    let dir = stack.work.join(format!("gem-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!(
        "Gem::Specification.new do |s|\n  s.name = \"{name}\"\n  s.version = \"{version}\"\n  s.summary = \"test\"\n  s.authors = [\"mayfly\"]\n  s.files = []\n{extra}end\n"
    );
    std::fs::write(dir.join(format!("{name}.gemspec")), spec).unwrap();
    let out = Command::new("gem")
        .args(["build", &format!("{name}.gemspec")])
        .current_dir(&dir)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir.join(format!("{name}-{version}.gem"))
}

/// `mayfly exec -- gem push FILE` with `extra` arguments, trusting the stack's CA.
fn gem_push(stack: &Stack, file: &Path, session: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--", "gem", "push"])
        .arg(file)
        .args(extra)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("SSL_CERT_FILE", &stack.ca.ca_cert)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Every file under `dir` whose bytes hold `needle`.
pub(super) fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
            found.push(path);
        }
    }
    found
}

#[test]
#[cfg_attr(missing = "gem", ignore = "needs gem, which is not installed")]
fn gem_push_publishes_through_the_shim_with_a_rubygems_trusted_publishing_key() {
    if !require_tool("gem") {
        return;
    }
    let stack = Stack::new();
    let gems = rubygems(&stack);
    let file = built_gem(&stack, "mayfly-gem", "0.1.0");
    let out = gem_push(&stack, &file, "gem-1", &["--host", &gems.base_url], &[]);
    let all = all_output(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Successfully registered gem: mayfly-gem (0.1.0)"), "{all}");
    assert_eq!(gems.pushes(), [("mayfly-gem".to_owned(), "0.1.0".to_owned())]);
    // The exchange as RubyGems.org documents it, then the push with the key as it is.
    let minted = gems.minted();
    assert_eq!(minted.len(), 1);
    let requests = gems.requests();
    assert_eq!(requests.len(), 2, "one exchange, one push");
    let exchange = &requests[0];
    assert_eq!(
        (exchange.method.as_str(), exchange.path.as_str()),
        ("POST", "/api/v1/oidc/trusted_publisher/exchange_token")
    );
    assert_eq!(exchange.header("content-type"), Some("application/json"));
    assert_eq!(exchange.id_token_audience, Some(serde_json::json!("rubygems.org")));
    let body = exchange.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["jwt"]);
    let push = &requests[1];
    assert_eq!((push.method.as_str(), push.path.as_str()), ("POST", "/api/v1/gems"));
    let fingerprint = mayfly_core::Fingerprint::of(&minted[0]);
    assert_eq!(push.header("authorization"), Some(format!("Plain {fingerprint}").as_str()));
    let audit = stack.client_audit();
    let issued = audit.iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!((issued["tool"].as_str(), issued["operation"].as_str()), (Some("gem"), Some("publish")));
    assert_eq!(issued["target"], format!("{}/mayfly-gem", gems.base_url));
    assert_eq!(issued["process"][0]["argv"][0], "gem", "the shim heads the chain");
    // No key on disk before or after, and none in the output.
    assert!(!all.contains(&minted[0]), "no key in the output: {all}");
    assert!(!stack.home.join(".gem/credentials").exists());
    assert_eq!(files_holding(stack.dir.path(), &minted[0]), Vec::<PathBuf>::new());
    assert_eq!(files_holding(stack.runtime_dir.path(), &minted[0]), Vec::<PathBuf>::new());
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "gem", ignore = "needs gem, which is not installed")]
fn rubygems_host_names_the_gem_host_and_the_shim_pins_it() {
    if !require_tool("gem") {
        return;
    }
    let stack = Stack::new();
    let gems = rubygems(&stack);
    let file = built_gem(&stack, "mayfly-gem", "0.2.0");
    let out = gem_push(&stack, &file, "gem-env", &[], &[("RUBYGEMS_HOST", &gems.base_url)]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(gems.pushes(), [("mayfly-gem".to_owned(), "0.2.0".to_owned())]);
    let audit = stack.client_audit();
    let issued = audit.iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    let argv: Vec<&str> = issued["process"][0]["argv"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(argv[..2], ["gem", "push"], "{argv:?}");
    // A gem whose specification names another push host: without `--host` gem would send
    // the key there; pinned, gem itself refuses.
    let elsewhere = "  s.metadata = { \"allowed_push_host\" => \"https://gems.invalid\" }\n";
    let file = built_gem_with(&stack, "mayfly-gem", "0.2.1", elsewhere);
    let out = gem_push(&stack, &file, "gem-env-2", &[], &[("RUBYGEMS_HOST", &gems.base_url)]);
    let all = all_output(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("is not allowed by the gemspec, which only allows \"https://gems.invalid\""), "{all}");
    assert_eq!(gems.pushes().len(), 1, "only the first push arrived");
}

#[test]
#[cfg_attr(missing = "gem", ignore = "needs gem, which is not installed")]
fn a_gem_the_publisher_does_not_own_is_refused_by_rubygems() {
    if !require_tool("gem") {
        return;
    }
    let stack = Stack::new();
    let gems = rubygems(&stack);
    let file = built_gem(&stack, "someone-elses-gem", "1.0.0");
    let out = gem_push(&stack, &file, "gem-2", &["--host", &gems.base_url], &[]);
    let all = all_output(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("This API key cannot perform the specified action on this gem."), "{all}");
    assert!(gems.pushes().is_empty());
    let minted = gems.minted();
    assert_eq!(minted.len(), 1, "RubyGems.org, not mayfly, knows which gem the key pushes");
    assert!(!all.contains(&minted[0]) && !all.contains("rubygems_"), "no key in the output: {all}");
}

/// A real built gem renamed for the one gem a route's `path` allows: the shim reads the
/// gem from its specification, refuses in one line, and asks for no key.
#[test]
#[cfg_attr(missing = "gem", ignore = "needs gem, which is not installed")]
fn a_gem_renamed_for_another_gets_no_key() {
    if !require_tool("gem") {
        return;
    }
    let stack = Stack::new();
    let gems = rubygems(&stack);
    let config = stack.home.join(".config/mayfly/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    stack.write_config_text(&format!("{text}path = \"mayfly-gem\"\n"));
    let built = built_gem(&stack, "someone-elses-gem", "1.0.0");
    let renamed = stack.work.join("mayfly-gem-1.0.0.gem");
    std::fs::rename(&built, &renamed).unwrap();
    let out = gem_push(&stack, &renamed, "gem-renamed", &["--host", &gems.base_url], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", all_output(&out));
    let want = format!(
        "mayfly: `gem push`: `{}` holds the gem `someone-elses-gem`, but is not named `someone-elses-gem-VERSION.gem`\n",
        renamed.display()
    );
    assert_eq!(stderr, want);
    assert!(gems.minted().is_empty() && gems.requests().is_empty(), "nothing was asked of RubyGems.org");
    assert!(gems.pushes().is_empty());
    // Named for what it holds, the same gem is outside the route's `path`: gem runs with no key.
    let named = stack.work.join("someone-elses-gem-1.0.0.gem");
    std::fs::rename(&renamed, &named).unwrap();
    let out = gem_push(&stack, &named, "gem-named", &["--host", &gems.base_url], &[]);
    assert!(!out.status.success(), "{}", all_output(&out));
    assert!(gems.minted().is_empty() && gems.pushes().is_empty());
}

#[test]
#[cfg_attr(missing = "gem", ignore = "needs gem, which is not installed")]
fn gem_commands_other_than_push_run_untouched_without_a_key() {
    if !require_tool("gem") {
        return;
    }
    let stack = Stack::new();
    let gems = rubygems(&stack);
    let file = built_gem(&stack, "mayfly-gem", "0.3.0");
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--", "gem", "specification"])
        .arg(&file)
        .arg("name")
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mayfly-gem"), "{}", all_output(&out));
    // A push of a file that names no gem: one line, nothing asked of anyone.
    let out = gem_push(&stack, Path::new("notes.txt"), "gem-3", &["--host", &gems.base_url], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "mayfly: `gem push`: `notes.txt` is not a gem file named NAME-VERSION.gem\n"
    );
    assert!(gems.minted().is_empty() && gems.requests().is_empty());
}

#[test]
fn explain_names_the_rubygems_kind_and_asks_nothing() {
    let stack = Stack::new();
    let gems = rubygems(&stack);
    let out = Command::new(bin("mayfly"))
        .args(["explain", "gem", &format!("{}/mayfly-gem", gems.base_url), "--operation", "publish"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(text.contains("(rubygems, ") && text.contains("cannot revoke"), "{text}");
    assert!(gems.requests().is_empty(), "explain alone asks nothing");
}
