//! `mayfly exec --proxy` with the real skopeo against the real distribution registry with
//! token auth from the exchange: the proxy answers the registry's token challenge itself,
//! so skopeo holds neither the minted token nor the registry token.
//!
//! skopeo is a Go client, and Go never proxies loopback addresses: the registry listens
//! on a non-loopback address of this machine, over TLS with a certificate for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mayfly_core::RouteEntry;
use mayfly_devstack::OciFront;
use mayfly_tests::{KillOnDrop, Stack, await_marker, bin, read_work as read, require_tool, routes_toml};
use serde_json::Value;

use super::oci::{Registry, image_layout};

/// The first non-loopback IPv4 address of this machine (`hostname -I` lists the
/// addresses of every interface but loopback).
fn non_loopback_ipv4() -> String {
    let out = Command::new("hostname").arg("-I").output().expect("hostname runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|a| a.parse::<std::net::Ipv4Addr>().ok().filter(|ip| !ip.is_loopback()))
        .map(|ip| ip.to_string())
        .expect("this machine has a non-loopback IPv4 address (Go clients never proxy loopback)")
}

/// A CA and a server certificate for `address`; the certificate, its key and the CA file.
fn registry_tls(dir: &Path, address: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "mayfly test registry CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![address.to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, address);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (dir.join("registry.pem"), dir.join("registry-key.pem"), dir.join("registry-ca.pem"));
    std::fs::write(&paths.0, cert.pem()).unwrap();
    std::fs::write(&paths.1, key.serialize_pem()).unwrap();
    std::fs::write(&paths.2, ca_cert.pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// `mayfly exec --session NAME --proxy -- sh -c SCRIPT` in the work tree.
fn exec(stack: &Stack, session: &str, script: &str) -> Output {
    Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--proxy", "--", "sh", "-c", script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .expect("mayfly exec runs")
}

/// Runs `COMMAND` in the background, and while it runs (at least once) copies the
/// environment and command line of every process of the session into `scan.txt` (a
/// process may end between the check and the copy: nothing there fails the script).
fn scanned(command: &str, err: &str) -> String {
    format!(
        "{command} 2> {err} & pid=$!; \
         while :; do for p in /proc/[0-9]*; do \
           if cat $p/environ 2>/dev/null | tr '\\0' '\\n' | grep -q '^MAYFLY_PROXY_SESSION='; then \
             {{ cat $p/environ 2>/dev/null | tr '\\0' '\\n'; cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; }} >> scan.txt; \
           fi; done; kill -0 $pid 2>/dev/null || break; done; \
         wait $pid || echo \"failed: {err}\""
    )
}

/// A stack whose exchange mints for a TLS registry on a non-loopback address, the registry
/// (its token realm at `realm(stack)`), and routes to it: `test/*` pulls and pushes,
/// `test/readonly/*` only pulls; the registry's `IP:PORT`.
fn registry_behind_routes(realm: impl Fn(&Stack) -> String) -> (Stack, Registry, String) {
    let (stack, registry, host, _) = registry_maybe_fronted(realm, Front::None);
    (stack, registry, host)
}

/// What stands before, or beside, the registry.
#[derive(PartialEq)]
enum Front {
    None,
    /// An [`OciFront`] whose `/v2/` answers anonymously.
    Anonymous,
    /// Nothing, but the registry trusts another signer than the token service's: it
    /// refuses every registry token.
    Refusing,
    /// As [`Front::Anonymous`], the front also serving the token realm on the registry's
    /// host, passed on to the exchange (and refusing tokens when told to).
    Realm,
}

/// As [`registry_behind_routes`]; with [`Front::Anonymous`], the routes' host is an
/// [`OciFront`] whose `/v2/` answers `200` anonymously, before the registry on a loopback
/// port, which challenges on every repository request; with [`Front::Realm`], the front
/// also serves the realm (whatever `realm` says), and is returned.
fn registry_maybe_fronted(
    realm: impl Fn(&Stack) -> String,
    front: Front,
) -> (Stack, Registry, String, Option<OciFront>) {
    let address = non_loopback_ipv4();
    // The exchange mints for the registry by that address: the stack's OCI rule, moved
    // from `127.0.0.1` to it.
    let moved = address.clone();
    let stack = Stack::builder()
        .git()
        .oci()
        .sts_config(move |config, _| {
            for rule in config.rules.iter_mut().filter(|r| r.name.as_deref() == Some("org/app pulls and pushes test/*"))
            {
                for value in rule.audiences.iter_mut().chain(rule.scopes.iter_mut()) {
                    *value = value.replace("127.0.0.1:", &format!("{moved}:"));
                }
            }
        })
        .start();
    let host = format!("{address}:{}", stack.oci_port());
    let tls_dir = stack.dir.path().join("registry-tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let (cert, key, registry_ca) = registry_tls(&tls_dir, &address);
    let signer =
        stack.https_client().get(format!("{}/registry/cert.pem", stack.sts.url)).send().unwrap().text().unwrap();
    let realm = if front == Front::Realm { format!("https://{host}/token") } else { realm(&stack) };
    let mut served = None;
    let registry = if front == Front::Refusing {
        let stranger = std::fs::read_to_string(&registry_ca).unwrap();
        Registry::start_on(&stack, &host, Some((&cert, &key)), &realm, &stack.sts.url, &stranger)
    } else if front == Front::Anonymous || front == Front::Realm {
        let behind = format!("127.0.0.1:{}", mayfly_tests::free_port());
        let registry = Registry::start_as(&stack, &behind, &host, None, &realm, &stack.sts.url, &signer);
        let listener = std::net::TcpListener::bind(&host).unwrap();
        let exchange = format!("{}/registry/token", stack.sts.url);
        let stack_ca = std::fs::read(&stack.ca.ca_cert).unwrap();
        let token_service = (front == Front::Realm).then_some((exchange.as_str(), stack_ca.as_slice()));
        let upstream = format!("http://{behind}");
        served = Some(OciFront::start_with(stack.runtime(), listener, &cert, &key, &upstream, token_service).unwrap());
        registry
    } else {
        Registry::start_on(&stack, &host, Some((&cert, &key)), &realm, &stack.sts.url, &signer)
    };
    // The proxy verifies the registry and the token service (the exchange) it sends the
    // minted token to.
    let bundle = tls_dir.join("upstream-ca.pem");
    let stack_ca = std::fs::read_to_string(&stack.ca.ca_cert).unwrap();
    std::fs::write(&bundle, format!("{}{stack_ca}", std::fs::read_to_string(&registry_ca).unwrap())).unwrap();
    let route = |path: &str, operations: &[&str]| RouteEntry {
        tool: "oci".into(),
        host: Some(host.clone()),
        path: Some(path.into()),
        identity: "ci".into(),
        exchange: "sts".into(),
        operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
        username: Some("mayfly".into()),
        ca_file: Some(bundle.clone()),
        ..Default::default()
    };
    stack.write_config(&format!(
        "{}\n{}",
        stack.default_routes(),
        routes_toml(vec![route("test", &["read", "write"]), route("test/readonly", &["read"])])
    ));

    (stack, registry, host, served)
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn skopeo_pushes_and_pulls_through_the_proxy_which_answers_the_registry_token_challenge() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let (stack, _registry, host) = registry_behind_routes(|stack| format!("{}/registry/token", stack.sts.url));
    let auth = stack.dir.path().join("auth.json");
    std::fs::write(&auth, serde_json::json!({"credHelpers": {host.clone(): "mayfly"}}).to_string()).unwrap();
    let helpers = bin("docker-credential-mayfly").parent().unwrap().display().to_string();
    let layout = image_layout(stack.dir.path());
    let source = format!("oci:{}:v1", layout.display());
    let pulled = stack.dir.path().join("pulled");
    let script = [
        format!("set -e; export PATH={helpers}:$PATH; env > env.txt"),
        scanned(&format!("skopeo copy {source} docker://{host}/test/hello:v1"), "push-err.txt"),
        // A second repository: skopeo may mount the blobs it pushed to the first.
        scanned(&format!("skopeo copy {source} docker://{host}/test/copy:v1"), "copy-err.txt"),
        // The user's auth file still names the credential helper: inside the session it
        // answers "not found", and skopeo goes on without credentials.
        scanned(
            &format!("skopeo inspect --authfile {} docker://{host}/test/hello:v1 > inspect.json", auth.display()),
            "inspect-err.txt",
        ),
        scanned(&format!("skopeo copy docker://{host}/test/hello:v1 oci:{}:v1", pulled.display()), "pull-err.txt"),
        format!("skopeo copy {source} docker://{host}/other/hello:v1 2> other-err.txt || echo other-refused"),
        format!(
            "skopeo copy {source} docker://{host}/test/readonly/hello:v1 2> readonly-err.txt || echo readonly-refused"
        ),
    ]
    .join("; ");
    let out = exec(&stack, "oci-proxied", &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("failed:"), "{stdout}\npush: {}", read(&stack, "push-err.txt"));

    // Pushed, inspected and pulled back through the proxy.
    let inspect_err = read(&stack, "inspect-err.txt");
    assert!(inspect_err.contains("hands out no tokens inside `mayfly exec --proxy`"), "{inspect_err}");
    let inspected: Value = serde_json::from_str(&read(&stack, "inspect.json")).unwrap();
    assert!(inspected["Digest"].as_str().unwrap().starts_with("sha256:"), "{inspected}");
    assert!(pulled.join("index.json").exists(), "the pull wrote its image");

    // Refused with a 403: a repository no route names, and a push under a read-only
    // route, whose reason skopeo prints.
    assert!(stdout.contains("other-refused") && stdout.contains("readonly-refused"), "{stdout}");
    // skopeo's first request there is a `HEAD` of a blob, whose 403 has no body to show.
    let other = read(&stack, "other-err.txt");
    assert!(other.contains("other/hello: 403 (Forbidden)"), "{other}");
    let readonly = read(&stack, "readonly-err.txt");
    assert!(readonly.contains("does not allow write (allowed: read)"), "{readonly}");

    // No token in the session's environment, nor in any of its processes' environments
    // and command lines while skopeo ran.
    let env = read(&stack, "env.txt");
    assert!(env.contains("HTTPS_PROXY=http://mayfly:"), "{env}");
    let scan = read(&stack, "scan.txt");
    assert!(scan.contains("MAYFLY_PROXY_SESSION=oci-proxied"), "the scan saw the session's processes");
    for (name, text) in [("env.txt", &env), ("scan.txt", &scan)] {
        assert!(!text.contains("eyJ"), "{name} holds a JWT");
        assert!(
            !text.contains("DOCKER_AUTH_CONFIG") && !text.contains("REGISTRY_AUTH_FILE"),
            "{name} wires credentials"
        );
    }

    // Audit: each request names its repository and operation.
    let lines: Vec<Value> =
        stack.client_audit().into_iter().filter(|l| l["session"] == "oci-proxied" && l["tool"] == "proxy").collect();
    let hello = format!("https://{host}/test/hello");
    assert!(lines.iter().any(|l| l["outcome"] == "proxied"
        && l["operation"] == "write"
        && l["method"] == "PUT"
        && l["target"] == hello
        && l["path"] == "/v2/test/hello/manifests/v1"
        && l["fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:"))));
    assert!(lines.iter().any(|l| l["outcome"] == "proxied"
        && l["operation"] == "read"
        && l["method"] == "GET"
        && l["target"] == hello));
    assert!(lines.iter().any(|l| l["outcome"] == "denied"
        && l["operation"] == "read"
        && l["method"] == "HEAD"
        && l["target"] == format!("https://{host}/other/hello")
        && l["reason"].as_str().is_some_and(|r| r.contains("no route grants pull of `other/hello`"))));
    assert!(lines.iter().any(|l| l["outcome"] == "denied"
        && l["operation"] == "write"
        && l["target"] == format!("https://{host}/test/readonly/hello")));
    // The exchange saw registry tokens asked for exactly one repository each.
    let registry_tokens: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["rule"] == "registry token").collect();
    assert!(
        registry_tokens.iter().any(|l| l["scope"] == "repository:test/hello:pull,push")
            && registry_tokens.iter().any(|l| l["scope"] == "repository:test/hello:pull")
            && registry_tokens.iter().all(|l| !l["scope"].as_str().unwrap_or("").contains("other/")),
        "{registry_tokens:?}"
    );
    // skopeo mounted the first repository's blobs into the second: that registry token
    // was minted with the second repository's token, which grants nothing of the first,
    // so the proxy sent a plain upload instead.
    let copies: Vec<&Value> =
        registry_tokens.iter().filter(|l| l["scope"].as_str().unwrap_or("").contains("test/copy")).collect();
    assert!(
        copies.iter().any(|l| l["scope"] == "repository:test/copy:pull,push")
            && copies.iter().all(|l| !l["scope"].as_str().unwrap_or("").contains("test/hello")),
        "{copies:?}"
    );
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn a_registry_whose_token_realm_is_another_host_never_gets_the_credential_sent_there() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    // The exchange itself, by a name no route and no exchange of the config names.
    let (stack, _registry, host) =
        registry_behind_routes(|stack| format!("{}/registry/token", stack.sts.url.replace("127.0.0.1", "localhost")));
    let script = format!("skopeo inspect docker://{host}/test/hello:v1 2> inspect-err.txt || echo refused");
    let out = exec(&stack, "oci-lying", &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("refused"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let err = read(&stack, "inspect-err.txt");
    assert!(
        err.contains("denied: mayfly: the registry") && err.contains("sent its token realm to `localhost:"),
        "{err}"
    );
    // The token service was never asked.
    assert!(stack.sts_audit().iter().all(|l| l["rule"] != "registry token"), "a registry token was asked for");
    let lines: Vec<Value> =
        stack.client_audit().into_iter().filter(|l| l["session"] == "oci-lying" && l["tool"] == "proxy").collect();
    assert!(
        lines.iter().any(|l| l["outcome"] == "denied"
            && l["operation"] == "read"
            && l["target"] == format!("https://{host}/test/hello")
            && l["reason"].as_str().is_some_and(|r| r.contains("neither the registry nor the route's exchange"))),
        "{lines:?}"
    );
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "podman"),
    ignore = "needs docker-registry, podman: one is not installed"
)]
fn podman_pushes_and_pulls_through_the_proxy_trusting_the_session_ca() {
    if !require_tool("docker-registry") || !require_tool("podman") {
        return;
    }
    let (stack, _registry, host) = registry_behind_routes(|stack| format!("{}/registry/token", stack.sts.url));
    let layout = image_layout(stack.dir.path());
    // A store of the test's own (vfs: no kernel overlay needed), so nothing of the
    // machine's podman is read or written.
    let store = stack.dir.path().join("podman");
    let podman = format!(
        "podman --root {root} --runroot {run} --storage-driver vfs --cgroup-manager cgroupfs --events-backend file",
        root = store.join("root").display(),
        run = store.join("run").display(),
    );
    let script = [
        // podman names an image it loads after its path, which must be lower case: the
        // layout is loaded from a copy at one.
        format!(
            "set -e; l=/tmp/mayfly-podman-layout-$$; rm -rf $l; cp -r {} $l; \
             id=$({podman} pull -q oci:$l:v1 2> load-err.txt); rm -rf $l",
            layout.display()
        ),
        scanned(&format!("{podman} push $id docker://{host}/test/pod:v1"), "push-err.txt"),
        format!("{podman} rmi -af > /dev/null 2>&1"),
        scanned(&format!("{podman} pull -q docker://{host}/test/pod:v1 > pulled.txt"), "pull-err.txt"),
        format!("{podman} push $({podman} images -q | head -n1) docker://{host}/other/pod:v1 2> other-err.txt || echo other-refused"),
    ]
    .join("; ");
    let out = exec(&stack, "podman-proxied", &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let loaded = std::fs::read_to_string(stack.work.join("load-err.txt")).unwrap_or_default();
    assert!(out.status.success(), "{stdout}\n{}\nload: {loaded}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !stdout.contains("failed:"),
        "{stdout}\npush: {}\npull: {}",
        read(&stack, "push-err.txt"),
        read(&stack, "pull-err.txt")
    );
    assert!(!read(&stack, "pulled.txt").trim().is_empty(), "podman pulled the image back");
    assert!(stdout.contains("other-refused"), "{stdout}");

    // podman trusted the registry only through the session's bundle (`SSL_CERT_FILE`):
    // no certs.d, no --tls-verify=false, and no token in any session process.
    let scan = read(&stack, "scan.txt");
    assert!(scan.contains("MAYFLY_PROXY_SESSION=podman-proxied"), "the scan saw the session's processes");
    assert!(scan.contains("SSL_CERT_FILE="), "podman ran with the session's CA bundle");
    assert!(!scan.contains("eyJ"), "a session process held a JWT");
    assert!(!scan.contains("tls-verify"), "podman was told not to verify");

    // The registry tokens were asked for exactly the repository and operation.
    let registry_tokens: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["rule"] == "registry token").collect();
    assert!(
        registry_tokens.iter().any(|l| l["scope"] == "repository:test/pod:pull,push")
            && registry_tokens.iter().any(|l| l["scope"] == "repository:test/pod:pull")
            && registry_tokens.iter().all(|l| !l["scope"].as_str().unwrap_or("").contains("other/")),
        "{registry_tokens:?}"
    );
    let lines: Vec<Value> =
        stack.client_audit().into_iter().filter(|l| l["session"] == "podman-proxied" && l["tool"] == "proxy").collect();
    assert!(lines.iter().any(|l| l["outcome"] == "proxied"
        && l["operation"] == "write"
        && l["method"] == "PUT"
        && l["path"] == "/v2/test/pod/manifests/v1"));
    assert!(lines.iter().any(|l| l["outcome"] == "denied" && l["target"] == format!("https://{host}/other/pod")));
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo"),
    ignore = "needs docker-registry, skopeo: one is not installed"
)]
fn a_registry_whose_version_check_is_anonymous_is_answered_from_its_repositories_challenge() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let (stack, _registry, host, _front) =
        registry_maybe_fronted(|stack| format!("{}/registry/token", stack.sts.url), Front::Anonymous);
    let layout = image_layout(stack.dir.path());
    let pulled = stack.dir.path().join("pulled");
    let script = [
        format!("set -e; skopeo copy oci:{}:v1 docker://{host}/test/front:v1 2> push-err.txt", layout.display()),
        format!("skopeo copy docker://{host}/test/front:v1 oci:{}:v1 2> pull-err.txt", pulled.display()),
    ]
    .join("; ");
    let out = exec(&stack, "oci-front", &script);
    assert!(
        out.status.success(),
        "{}\npush: {}\npull: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(stack.work.join("push-err.txt")).unwrap_or_default(),
        std::fs::read_to_string(stack.work.join("pull-err.txt")).unwrap_or_default()
    );
    assert!(pulled.join("index.json").exists(), "the pull wrote its image");
    // `/v2/` told the proxy nothing: the realm came from the repository's own 401, and the
    // registry tokens were asked for exactly the repository.
    let registry_tokens: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["rule"] == "registry token").collect();
    assert!(
        registry_tokens.iter().any(|l| l["scope"] == "repository:test/front:pull,push")
            && registry_tokens.iter().any(|l| l["scope"] == "repository:test/front:pull"),
        "{registry_tokens:?}"
    );
    let lines: Vec<Value> =
        stack.client_audit().into_iter().filter(|l| l["session"] == "oci-front" && l["tool"] == "proxy").collect();
    assert!(lines.iter().any(|l| l["path"] == "/v2/" && l["reason"] == "upstream answered 200"), "{lines:?}");
    assert!(lines.iter().all(|l| l["outcome"] != "denied"), "{lines:?}");
    assert!(lines.iter().any(|l| l["outcome"] == "proxied"
        && l["method"] == "PUT"
        && l["path"] == "/v2/test/front/manifests/v1"
        && l["reason"].as_str().is_some_and(|r| r.starts_with("upstream answered 201"))));
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "curl"),
    ignore = "needs docker-registry, curl: one is not installed"
)]
fn a_small_push_the_registry_refuses_a_fresh_registry_token_for_is_refused_not_retried() {
    if !require_tool("docker-registry") || !require_tool("curl") {
        return;
    }
    let (stack, _registry, host, _) =
        registry_maybe_fronted(|stack| format!("{}/registry/token", stack.sts.url), Front::Refusing);
    // The registry token comes fresh from the realm, so the manifest is streamed, never
    // kept: the registry's 401 to it is the registry's answer, not a body too large.
    let manifest = format!("{{\"schemaVersion\":2,\"padding\":\"{}\"}}", "a".repeat(1000));
    std::fs::write(stack.work.join("manifest.json"), manifest).unwrap();
    let script = format!(
        "curl -sS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @manifest.json \
           -o answer.txt -w '%{{http_code}}' https://{host}/v2/test/hello/manifests/v1 > status.txt 2> err.txt || true"
    );
    let out = exec(&stack, "oci-refused", &script);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, answer) = (read(&stack, "status.txt"), read(&stack, "answer.txt"));
    assert_eq!(status, "403", "{answer}{}", read(&stack, "err.txt"));
    assert!(answer.contains("the registry refused the token for push of `test/hello`"), "{answer}");
    assert!(!answer.contains("could not be sent again"), "{answer}");
}

#[test]
#[cfg_attr(
    any(missing = "docker-registry", missing = "skopeo", missing = "curl"),
    ignore = "needs docker-registry, skopeo, curl: one is not installed"
)]
fn a_token_realm_that_refuses_the_cached_token_gets_one_fresh_one_and_no_loop() {
    if !require_tool("docker-registry") || !require_tool("skopeo") || !require_tool("curl") {
        return;
    }
    let (stack, _registry, host, front) = registry_maybe_fronted(|_| String::new(), Front::Realm);
    let front = front.expect("the front serves the realm");
    let layout = image_layout(stack.dir.path());
    std::fs::write(stack.work.join("manifest.json"), "{\"schemaVersion\":2}").unwrap();
    let session = "oci-realm";
    // Between steps the script waits (with a deadline) for the test to have the realm
    // refuse tokens.
    let script = format!(
        "await() {{ n=0; while [ ! -e $1 ]; do n=$((n+1)); [ $n -gt 3600 ] && exit 3; sleep 0.05; done; }}; \
         skopeo copy oci:{layout}:v1 docker://{host}/test/realm:v1 2> push1-err.txt || echo push1-failed; touch ready0; await go0; \
         skopeo copy oci:{layout}:v1 docker://{host}/test/realm:v2 2> push2-err.txt || echo push2-failed; touch ready1; await go1; \
         curl -sS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @manifest.json \
           -o answer.txt -w '%{{http_code}}' https://{host}/v2/test/realm/manifests/v3 > status.txt 2> err.txt || true",
        layout = layout.display()
    );
    let mut child = Command::new(bin("mayfly"));
    child
        .args(["exec", "--session", session, "--proxy", "--", "sh", "-c", &script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env());
    let child = KillOnDrop::spawn(&mut child, &stack.work, "session");
    let issued = |operation: &str| -> Vec<String> {
        stack
            .client_audit()
            .into_iter()
            .filter(|l| l["session"] == session && l["outcome"] == "issued")
            .filter(|l| operation.is_empty() || l["operation"] == operation)
            .filter_map(|l| l["fingerprint"].as_str().map(str::to_owned))
            .collect()
    };

    // The first push: the realm took the mayfly tokens; one write token for all of it.
    await_marker(&stack, "ready0");
    let writes = issued("write");
    assert_eq!(writes.len(), 1, "{writes:?}");
    // The realm now refuses every token the session holds (as if revoked).
    for token in issued("") {
        front.refuse(&token);
    }
    std::fs::write(stack.work.join("go0"), "").unwrap();

    // The second push: the realm refused the cached write token, and the proxy got exactly
    // one fresh one for the rest of the push.
    await_marker(&stack, "ready1");
    let after = issued("write");
    assert_eq!(after.len(), 2, "one fresh write token: {after:?}");
    let refused = front.asked().iter().filter(|a| a.path == "/token" && a.refused).count();
    assert!(refused >= 1, "the realm refused the cached token");
    assert!(
        front.asked().iter().any(|a| a.path == "/token" && !a.refused && a.fingerprint.as_deref() == Some(&after[1])),
        "the fresh token got a registry token"
    );
    // Then the realm refuses every token, the fresh ones too.
    let writes = after.len();
    let asked = front.asked().len();
    front.refuse_all();
    std::fs::write(stack.work.join("go1"), "").unwrap();
    let out = child.wait_with_output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("push1-failed"), "{}", read(&stack, "push1-err.txt"));
    assert!(!stdout.contains("push2-failed"), "{}", read(&stack, "push2-err.txt"));

    // One 403 DENIED: the realm was asked with the cached token and once with a fresh one,
    // and the manifest never went to the registry.
    let (status, answer) = (read(&stack, "status.txt"), read(&stack, "answer.txt"));
    assert_eq!(status, "403", "{answer}{}", read(&stack, "err.txt"));
    assert!(answer.contains("\"DENIED\"") && answer.contains("refused the cached token, then a fresh one"), "{answer}");
    assert_eq!(issued("write").len(), writes + 1, "one fresh write token, refused too");
    let since = front.asked().split_off(asked);
    assert_eq!(since.len(), 2, "the realm asked twice, nothing else sent: {since:?}");
    assert!(since.iter().all(|a| a.path == "/token" && a.refused), "{since:?}");

    let lines: Vec<Value> =
        stack.client_audit().into_iter().filter(|l| l["session"] == session && l["tool"] == "proxy").collect();
    assert!(
        lines.iter().any(|l| l["outcome"] == "proxied"
            && l["reason"].as_str().is_some_and(|r| r.contains("the token service refused the cached token"))),
        "{lines:?}"
    );
    stack.assert_no_tokens_on_disk();
}
