//! The real `nuget` (2.8, on Mono) pushes through `mayfly exec --proxy` to a NuGet gallery
//! whose trusted publishing token API mints the key: nuget is given no key at all, and the
//! proxy sets `X-NuGet-ApiKey` on the push alone, with a key got for a fresh ID token.
//!
//! Mono never proxies a loopback host and trusts only its own certificate store, so the
//! gallery is plain HTTP and nuget names it `localhost.` (which the proxy reads as the
//! route's `localhost`).

use mayfly_devstack::{NUGET_AUDIENCE, NUGET_KEY_REFUSED, NugetGallery};
use mayfly_tests::{Stack, bin, require_tool};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NUSPEC: &str = r#"<?xml version="1.0"?>
<package xmlns="http://schemas.microsoft.com/packaging/2010/07/nuspec.xsd">
  <metadata>
    <id>ID</id>
    <version>1.0.0</version>
    <authors>mayfly</authors>
    <description>A package mayfly's tests push.</description>
  </metadata>
  <files><file src="readme.txt" target="content" /></files>
</package>
"#;

/// `nuget pack`s a package with this id; its path.
fn pack(stack: &Stack, id: &str) -> PathBuf {
    let dir = stack.work.join(format!("pack-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("readme.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("package.nuspec"), NUSPEC.replace("ID", id)).unwrap();
    let out = Command::new("nuget")
        .args(["pack", "package.nuspec", "-NonInteractive"])
        .current_dir(&dir)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    dir.join(format!("{id}.1.0.0.nupkg"))
}

/// `nuget push` in a proxy session, with no key; the command's environment and command
/// line are written beside the package for the test to read.
fn push(stack: &Stack, gallery: &NugetGallery, package: &Path, session: &str) -> (Output, String) {
    let source = format!("http://localhost.:{}/", gallery.host().rsplit_once(':').unwrap().1);
    let seen = stack.work.join(format!("{session}.environ"));
    let script = "nuget push \"$1\" -Source \"$2\" -NonInteractive; rc=$?; \
                  tr '\\0' '\\n' </proc/$$/environ >\"$3\"; tr '\\0' ' ' </proc/$$/cmdline >>\"$3\"; exit $rc";
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--proxy", "--", "sh", "-c", script, "sh"])
        // nuget 2.8 on Mono reads an absolute path as relative to the working directory.
        .arg(package.strip_prefix(&stack.work).unwrap())
        .arg(&source)
        .arg(&seen)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    (out, std::fs::read_to_string(&seen).unwrap_or_default())
}

fn proxy_lines(stack: &Stack, session: &str) -> Vec<Value> {
    stack.client_audit().into_iter().filter(|l| l["session"] == session && l["tool"] == "proxy").collect()
}

fn header<'a>(request: &'a mayfly_devstack::RecordedRequest, name: &str) -> Option<&'a str> {
    request.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn config(gallery: &NugetGallery, user: &str) -> String {
    format!(
        "[exchanges.nuget]\nkind = \"nuget\"\ntoken_endpoint = \"http://localhost:{port}/api/v2/token\"\nuser = \"{user}\"\n\n[[routes]]\ntool = \"nuget\"\nprotocol = \"http\"\nhost = \"localhost:{port}\"\nidentity = \"ci\"\nexchange = \"nuget\"\n",
        port = gallery.host().rsplit_once(':').unwrap().1,
    )
}

/// A stack with a gallery whose one policy lets `mayfly-bot` push `Mayfly.Demo` from
/// `org/app`, routed by the config.
fn galleried() -> (Stack, NugetGallery) {
    let stack = Stack::new();
    let gallery =
        NugetGallery::start(stack.runtime(), &stack.issuer, &[("mayfly-bot", "org/app", &["Mayfly.Demo"])]).unwrap();
    stack.write_config(&config(&gallery, "mayfly-bot"));
    (stack, gallery)
}

#[test]
#[cfg_attr(missing = "nuget", ignore = "needs nuget, which is not installed")]
fn nuget_pushes_through_the_proxy_holding_no_key() {
    if !require_tool("nuget") {
        return;
    }
    let (stack, gallery) = galleried();
    let package = pack(&stack, "Mayfly.Demo");

    let (out, seen) = push(&stack, &gallery, &package, "ng-proxy");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert_eq!(gallery.pushes(), [("Mayfly.Demo".to_owned(), "1.0.0".to_owned())]);
    let minted = gallery.minted();
    assert_eq!(minted.len(), 1, "one key for the push");
    let key = mayfly_core::Fingerprint::of(&minted[0]).to_string();

    // The token API saw a fresh ID token for nuget.org, as a bearer token, and the body
    // NuGet/login sends; the push carried the key and nothing of the proxy's.
    let requests = gallery.requests();
    let exchange = requests.iter().find(|r| r.path == "/api/v2/token").expect("a token request");
    assert_eq!(exchange.method, "POST");
    assert_eq!(exchange.id_token_audience, Some(Value::from(NUGET_AUDIENCE)));
    assert!(header(exchange, "authorization").is_some_and(|v| v.starts_with("Bearer ")), "{exchange:?}");
    assert!(header(exchange, "content-type").is_some_and(|v| v.starts_with("application/json")));
    assert_eq!(exchange.json(), serde_json::json!({"username": "mayfly-bot", "tokenType": "ApiKey"}));
    let pushes: Vec<_> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(pushes.len(), 1, "{requests:?}");
    assert_eq!(pushes[0].path, "/api/v2/package/");
    assert_eq!(header(pushes[0], "x-nuget-apikey"), Some(format!("Plain {key}").as_str()));
    assert!(header(pushes[0], "content-type").is_some_and(|v| v.starts_with("multipart/form-data")));
    assert!(pushes[0].body.windows(2).any(|w| w == b"PK"), "the .nupkg is the form's file");
    for request in &requests {
        assert!(header(request, "proxy-authorization").is_none(), "{request:?}");
        if request.method != "PUT" {
            assert!(header(request, "x-nuget-apikey").is_none(), "reads carry no key: {request:?}");
        }
    }
    let lines = proxy_lines(&stack, "ng-proxy");
    assert!(
        lines.iter().any(|l| l["outcome"] == "proxied"
            && l["method"] == "PUT"
            && l["operation"] == "publish"
            && l["fingerprint"] == key.as_str()),
        "{lines:?}"
    );

    // The key never entered nuget: not in its environment, its command line or its output.
    assert!(seen.contains("HTTP_PROXY="), "{seen}");
    assert!(!seen.contains(&minted[0]) && !all.contains(&minted[0]), "{seen}{all}");
    assert!(!seen.contains("ACTIONS_ID_TOKEN_REQUEST_TOKEN"), "no way to an ID token: {seen}");

    // Another session: a fresh ID token (nuget.org takes each once) and a second key.
    let (out, _) = push(&stack, &gallery, &package, "ng-again");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bearers: Vec<_> = gallery
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v2/token")
        .filter_map(|r| header(r, "authorization").map(str::to_owned))
        .collect();
    assert_eq!(bearers.len(), 2);
    assert_ne!(bearers[0], bearers[1], "each exchange presents its own ID token");
    assert_eq!(gallery.minted().len(), 2);
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "nuget", ignore = "needs nuget, which is not installed")]
fn a_refused_exchange_and_a_refused_push_are_one_line_in_nugets_output() {
    if !require_tool("nuget") {
        return;
    }
    let stack = Stack::new();
    let gallery =
        NugetGallery::start(stack.runtime(), &stack.issuer, &[("mayfly-bot", "org/app", &["Mayfly.Demo"])]).unwrap();

    // No policy of this user trusts the workload: the token API says so, and nuget shows
    // mayfly's one line.
    stack.write_config(&config(&gallery, "someone-else"));
    let package = pack(&stack, "Mayfly.Demo");
    let (out, _) = push(&stack, &gallery, &package, "ng-refused");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{all}");
    let line = all.lines().find(|l| l.contains("No matching trusted publishing policy was found. (401)")).expect(&all);
    assert!(line.contains("mayfly: ") && line.contains("exchange `nuget` refused"), "{line}");
    assert!(gallery.pushes().is_empty() && gallery.minted().is_empty());
    let lines = proxy_lines(&stack, "ng-refused");
    assert!(lines.iter().any(|l| l["outcome"] == "denied" && l["operation"] == "publish"), "{lines:?}");

    // A package the policy does not cover: the key is minted, and the gallery refuses the
    // push the way nuget.org does.
    stack.write_config(&config(&gallery, "mayfly-bot"));
    let other = pack(&stack, "Someone.Else");
    let (out, _) = push(&stack, &gallery, &other, "ng-not-covered");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains(NUGET_KEY_REFUSED) && all.contains("403"), "{all}");
    assert_eq!(gallery.minted().len(), 1);
    assert!(gallery.pushes().is_empty());
    assert!(!all.contains(&gallery.minted()[0]), "{all}");
}

/// A command in a proxy session, run from the stack's work directory; its output.
fn in_session(stack: &Stack, session: &str, command: &[&str]) -> (Output, String) {
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--proxy", "--"])
        .args(command)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, all)
}

#[test]
#[cfg_attr(missing = "nuget", ignore = "needs nuget, which is not installed")]
fn a_placeholder_key_is_replaced_on_the_push_and_an_unlist_is_refused() {
    if !require_tool("nuget") {
        return;
    }
    let (stack, gallery) = galleried();
    let package = pack(&stack, "Mayfly.Demo");
    let package = package.strip_prefix(&stack.work).unwrap().to_str().unwrap().to_owned();
    let source = format!("http://localhost.:{}/", gallery.host().rsplit_once(':').unwrap().1);
    let placeholder = "mayfly-proxy-placeholder";

    let (out, all) = in_session(
        &stack,
        "ng-placeholder",
        &["nuget", "push", &package, "-Source", &source, "-ApiKey", placeholder, "-NonInteractive"],
    );
    assert!(out.status.success(), "{all}");
    assert_eq!(gallery.pushes(), [("Mayfly.Demo".to_owned(), "1.0.0".to_owned())]);
    let minted = gallery.minted();
    assert_eq!(minted.len(), 1);
    let key = mayfly_core::Fingerprint::of(&minted[0]).to_string();
    let requests = gallery.requests();
    let pushes: Vec<_> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(pushes.len(), 1, "{requests:?}");
    assert_eq!(header(pushes[0], "x-nuget-apikey"), Some(format!("Plain {key}").as_str()), "the placeholder replaced");
    let reads: Vec<_> = requests.iter().filter(|r| r.method == "GET").collect();
    assert!(!reads.is_empty(), "{requests:?}");
    for request in &requests {
        assert!(
            request.headers.iter().all(|(_, v)| !v.contains(placeholder)),
            "the placeholder never reaches the gallery: {request:?}"
        );
        if request.method != "PUT" {
            assert!(header(request, "x-nuget-apikey").is_none(), "reads carry no key: {request:?}");
        }
    }

    // Unlisting is not a push: refused by the proxy with one line, before any exchange.
    let seen = gallery.requests().len();
    let (out, all) = in_session(
        &stack,
        "ng-delete",
        &["nuget", "delete", "Mayfly.Demo", "1.0.0", "-Source", &source, "-ApiKey", placeholder, "-NonInteractive"],
    );
    assert!(!out.status.success(), "{all}");
    let line = all.lines().find(|l| l.contains("is not a NuGet push")).expect(&all);
    assert!(line.contains("mayfly: `DELETE /api/v2/package/Mayfly.Demo/1.0.0`"), "{line}");
    assert_eq!(gallery.minted().len(), 1, "no key for an unlist");
    assert!(gallery.requests()[seen..].iter().all(|r| r.method != "DELETE"), "the DELETE never reached the gallery");
    let lines = proxy_lines(&stack, "ng-delete");
    assert!(lines.iter().any(|l| l["outcome"] == "denied" && l["method"] == "DELETE"), "{lines:?}");
}

#[test]
#[cfg_attr(missing = "curl", ignore = "needs curl, which is not installed")]
fn a_put_elsewhere_than_the_gallerys_push_path_gets_no_key() {
    if !require_tool("curl") {
        return;
    }
    let (stack, gallery) = galleried();
    let port = gallery.host().rsplit_once(':').unwrap().1;
    let paths = ["/anything/api/v2/package", "//api/v2/package", "/x/../api/v2/package", "/api/v2/package/Mayfly.Demo"];
    let script = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            format!(
                "NO_PROXY= no_proxy= curl -sS --path-as-is -X PUT -d x -w '\\n%{{http_code}}\\n' \
                 'http://localhost:{port}{path}' > put-{i}.txt 2>&1"
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let (out, all) = in_session(&stack, "ng-paths", &["sh", "-c", &script]);
    assert!(out.status.success(), "{all}");
    for (i, path) in paths.iter().enumerate() {
        let answer = std::fs::read_to_string(stack.work.join(format!("put-{i}.txt"))).unwrap();
        assert!(
            answer.contains(&format!("mayfly: `PUT {path}` is not a NuGet push")) && answer.trim_end().ends_with("403"),
            "{path}: {answer}"
        );
    }
    assert!(gallery.minted().is_empty(), "no key for any of them");
    assert!(gallery.requests().is_empty(), "none reached the gallery: {:?}", gallery.requests());
}

#[test]
fn explain_names_the_nuget_kind_and_its_header_and_asks_nothing() {
    let stack = Stack::new();
    let gallery = NugetGallery::start(stack.runtime(), &stack.issuer, &[]).unwrap();
    stack.write_config(&config(&gallery, "mayfly-bot"));
    let target = format!("http://localhost:{}/Mayfly.Demo", gallery.host().rsplit_once(':').unwrap().1);
    let out = Command::new(bin("mayfly"))
        .args(["explain", "nuget", &target, "--operation", "publish"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("(nuget, ") && text.contains("cannot revoke"), "{text}");
    assert!(text.contains("X-NuGet-ApiKey") && text.contains(&format!("audience   {NUGET_AUDIENCE}")), "{text}");
    assert!(text.contains("a fresh ID token per exchange, never cached"), "{text}");
    assert!(gallery.requests().is_empty(), "explain alone asks nothing");
}
