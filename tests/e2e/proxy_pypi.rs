//! twine uploads through `mayfly exec --proxy` to a PyPI whose trusted publishing exchange
//! mints the token: twine holds a placeholder password only, and the proxy mints a token
//! for the project the upload's form names.

use mayfly_devstack::Pypi;
use mayfly_tests::{Stack, bin, require_tool};
use serde_json::Value;
use std::process::{Command, Output};

fn upload(stack: &Stack, pypi: &Pypi, name: &str, session: &str) -> Output {
    let root = stack.work.join(format!("build-{name}"));
    let base = format!("{}-0.1.0", name.replace('-', "_"));
    std::fs::create_dir_all(root.join(&base)).unwrap();
    let info = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\nSummary: test\n");
    std::fs::write(root.join(&base).join("PKG-INFO"), info).unwrap();
    let file = stack.work.join(format!("{base}.tar.gz"));
    let out = Command::new("tar").arg("czf").arg(&file).arg("-C").arg(&root).arg(&base).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--proxy", "--", "twine", "upload", "--non-interactive"])
        .args(["--disable-progress-bar", "--repository-url", &pypi.upload_url])
        .arg(&file)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("TWINE_USERNAME", "__token__")
        .env("TWINE_PASSWORD", "mayfly-proxy-placeholder")
        .output()
        .unwrap()
}

fn proxy_lines(stack: &Stack, session: &str) -> Vec<Value> {
    stack.client_audit().into_iter().filter(|l| l["session"] == session && l["tool"] == "proxy").collect()
}

#[test]
#[cfg_attr(missing = "twine", ignore = "needs twine, which is not installed")]
fn twine_uploads_through_the_proxy_with_a_placeholder_password() {
    if !require_tool("twine") {
        return;
    }
    let stack = Stack::new();
    let pypi = Pypi::start(stack.runtime(), &stack.ca, &stack.issuer, &[("org/app", &["mayfly-py"])]).unwrap();
    let host = pypi.base_url.trim_start_matches("https://").to_owned();
    stack.write_config(&format!(
        "[exchanges.pypi]\nkind = \"pypi\"\ntoken_endpoint = \"{}/_/oidc/mint-token\"\nca_file = \"{ca}\"\n\n[[routes]]\ntool = \"pypi\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"pypi\"\nca_file = \"{ca}\"\n",
        pypi.base_url,
        ca = stack.ca.ca_cert.display(),
    ));

    let out = upload(&stack, &pypi, "Mayfly_Py", "py-proxy");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert_eq!(
        pypi.uploads(),
        [("mayfly-py".to_owned(), "Mayfly_Py-0.1.0.tar.gz".to_owned())],
        "PEP 503 names the project"
    );
    let lines = proxy_lines(&stack, "py-proxy");
    assert!(
        lines.iter().any(|l| l["outcome"] == "proxied"
            && l["method"] == "POST"
            && l["operation"] == "publish"
            && l["target"] == format!("https://{host}/mayfly-py")
            && l["fingerprint"].is_string()),
        "{lines:?}"
    );

    // A project the publisher does not own: the token (bound to the publisher's projects)
    // does not cover it, PyPI refuses, and twine shows 403.
    let out = upload(&stack, &pypi, "someone-else", "py-refused");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("403"), "{all}");
    assert_eq!(pypi.uploads().len(), 1);
    let lines = proxy_lines(&stack, "py-refused");
    assert!(
        lines.iter().any(|l| l["target"] == format!("https://{host}/someone-else")
            && l["operation"] == "publish"
            && l["reason"] == "upstream answered 403"),
        "{lines:?}"
    );
    assert!(!all.contains("pypi-"), "no token in the output: {all}");
    stack.assert_no_tokens_on_disk();
}
