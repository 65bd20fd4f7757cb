//! `mayfly exec --proxy --isolate`: inside bubblewrap's sandbox a script tries every way
//! around the proxy that a process of the same user has (the helper with the session's
//! marker removed, `git credential fill`, the cache key in the kernel keyring and its
//! directory, the cache, the audit log, the config, an identity token file, `/proc` of
//! mayfly's process, a direct connection to a loopback server, undoing a mount) and each
//! fails, while a clone through the proxy still works.

use std::process::{Command, Stdio};

use mayfly_core::RouteEntry;
use mayfly_tests::{Stack, bin, require_tool, routes_toml};

fn read(stack: &Stack, name: &str) -> String {
    std::fs::read_to_string(stack.work.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The kernel user keyring's cache key for this stack's runtime directory, as `keyctl
/// print` shows it outside the sandbox.
fn cache_key_description(stack: &Stack) -> String {
    let runtime = stack.runtime_dir.path().join("rt");
    format!("mayfly-cache-key-{}", mayfly_core::Cache::key(&[&runtime.display().to_string()]))
}

#[test]
#[cfg_attr(
    any(missing = "git", missing = "bwrap", missing = "keyctl"),
    ignore = "needs git, bwrap and keyctl, one of which is not installed"
)]
fn an_isolated_command_finds_every_way_around_the_proxy_closed_and_the_proxy_open() {
    if !require_tool("git") || !require_tool("bwrap") || !require_tool("keyctl") {
        return;
    }
    let stack = Stack::new();
    let route = RouteEntry {
        tool: "git".into(),
        host: Some(stack.git_host()),
        path: Some("org/app".into()),
        identity: "ci".into(),
        exchange: "sts".into(),
        ca_file: Some(stack.ca.ca_cert.clone()),
        ..Default::default()
    };
    // An identity token file in a directory of its own, which is covered inside.
    let id_file = stack.home.join("identity/id-token");
    std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
    std::fs::write(&id_file, "identity-file-secret\n").unwrap();
    // The working directory is a git repository: its hooks and config are read-only inside.
    let init = Command::new("git").args(["init", "-q"]).current_dir(&stack.work).envs(stack.env()).status().unwrap();
    assert!(init.success());
    let extra = format!("\n[identities.k8s]\nkind = \"file\"\npath = \"{}\"\n", id_file.display());
    stack.write_config(&format!("{}{extra}", routes_toml(vec![route])));

    let home = stack.home.display().to_string();
    let runtime = stack.runtime_dir.path().join("rt").display().to_string();
    let description = cache_key_description(&stack);
    let helper = bin("git-credential-mayfly").display().to_string();
    let host = stack.git_host();
    let app = stack.repo_url("org/app.git");
    let ask = format!("printf 'protocol=https\\nhost={host}\\npath=org/app.git\\n\\n'");
    let id = id_file.display();
    let script = format!(
        "{ask} | env -u MAYFLY_PROXY_SESSION {helper} get > helper.txt 2>&1; \
         {ask} | env -u MAYFLY_PROXY_SESSION git -c credential.helper= -c credential.helper={helper} credential fill > fill.txt 2>&1; \
         ls -A {runtime} > key-dir.txt 2>&1; \
         ls -A {home}/.cache/mayfly/tokens > cache.txt 2>&1; \
         cat {home}/.local/state/mayfly/audit.jsonl > audit.txt 2>&1; \
         cat {home}/.config/mayfly/config.toml > config.txt 2>&1; \
         cat {id} > id.txt 2>&1; \
         {{ echo x > .git/hooks/x; echo \"hook=$?\"; printf '[core]\\n\\tpager = planted\\n' >> .git/config; echo \"config=$?\"; }} > git.txt 2>&1; \
         {{ keyctl search @u user {description}; keyctl pipe 0x$(grep ' {description}: ' /proc/keys | cut -d' ' -f1); }} > keyring.txt 2>&1; \
         until [ -s pid.txt ]; do sleep 0.05; done; pid=$(cat pid.txt); \
         if [ -d /proc/$pid ]; then echo visible; else echo hidden; fi > proc.txt; \
         cat /proc/$pid/environ > environ.txt 2>&1; cat /proc/[0-9]*/environ > all-environ.txt 2>/dev/null; \
         NO_PROXY='*' no_proxy='*' git ls-remote {app} > direct.txt 2>&1; echo \"direct=$?\" >> direct.txt; \
         umount /tmp > umount.txt 2>&1; echo \"umount=$?\" >> umount.txt; \
         git clone -q {app} app"
    );
    let mut child = Command::new(bin("mayfly"))
        .args(["exec", "--session", "isolated", "--proxy", "--isolate", "--", "sh", "-c", &script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mayfly exec runs");
    std::fs::write(stack.work.join("pid.txt"), child.id().to_string()).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{stderr}");

    // The clone through the proxy worked: the route's token was added outside.
    assert!(stack.work.join("app/.git").is_dir(), "{stderr}");
    let proxied = stack.client_audit().into_iter().any(|l| {
        l["session"] == "isolated" && l["tool"] == "proxy" && l["outcome"] == "proxied" && l["operation"] == "read"
    });
    assert!(proxied, "the clone's requests were proxied");

    // The helper and git's credential fill got nothing, even without the session's marker.
    for name in ["helper.txt", "fill.txt"] {
        let out = read(&stack, name);
        assert!(!out.contains("password="), "{name}: {out}");
    }
    // mayfly's directories are empty or absent inside, though they hold files outside.
    assert!(std::fs::read_dir(stack.runtime_dir.path().join("rt")).unwrap().next().is_some());
    assert!(std::fs::read_dir(stack.home.join(".cache/mayfly/tokens")).unwrap().next().is_some());
    for name in ["key-dir.txt", "cache.txt"] {
        let out = read(&stack, name);
        assert!(out.is_empty() || out.contains("No such file"), "{name}: {out}");
    }
    for name in ["audit.txt", "config.txt"] {
        let out = read(&stack, name);
        assert!(!out.contains("session") && !out.contains("[identities"), "{name}: {out}");
    }
    let git = read(&stack, "git.txt");
    assert!(git.contains("hook=") && !git.contains("hook=0") && !git.contains("config=0"), "{git}");
    assert!(!stack.work.join(".git/hooks/x").exists(), "{git}");
    assert!(!std::fs::read_to_string(stack.work.join(".git/config")).unwrap().contains("planted"), "{git}");
    let id = read(&stack, "id.txt");
    assert!(!id.contains("identity-file-secret"), "the identity file is covered inside: {id}");
    assert_eq!(std::fs::read_to_string(&id_file).unwrap(), "identity-file-secret\n", "and is untouched outside");

    // The cache key: readable by this user outside, not from the sandbox's user namespace.
    let outside = Command::new("keyctl").args(["search", "@u", "user", &description]).output().unwrap();
    let id = String::from_utf8_lossy(&outside.stdout).trim().to_owned();
    let printed = Command::new("keyctl").args(["pipe", &id]).output().unwrap();
    assert!(String::from_utf8_lossy(&printed.stdout).contains("AGE-SECRET-KEY-"), "the key is there outside");
    let keyring = read(&stack, "keyring.txt");
    assert!(!keyring.contains("AGE-SECRET-KEY-"), "{keyring}");
    assert!(!keyring.contains(&id), "the search found the key: {keyring}");

    // mayfly's process is not in the sandbox's /proc; no process there has an ID token
    // request token in its environment.
    assert_eq!(read(&stack, "proc.txt").trim(), "hidden");
    let token = stack.issuer.request_token();
    for name in ["environ.txt", "all-environ.txt"] {
        let out = read(&stack, name);
        assert!(!out.contains(token) && !out.contains("ACTIONS_ID_TOKEN_REQUEST"), "{name}");
    }
    // A direct connection to the git server's loopback port has no route out.
    let direct = read(&stack, "direct.txt");
    assert!(direct.contains("Couldn't connect") || direct.contains("Failed to connect"), "{direct}");
    assert!(!direct.contains("direct=0"), "{direct}");
    let umount = read(&stack, "umount.txt");
    assert!(!umount.contains("umount=0"), "{umount}");

    // The session's tokens were revoked at its end, as without the sandbox.
    let session: Vec<_> = stack.client_audit().into_iter().filter(|l| l["session"] == "isolated").collect();
    let issued = session.iter().filter(|l| l["outcome"] == "issued").count();
    let revoked = session.iter().filter(|l| l["outcome"] == "revoked").count();
    assert!(issued >= 1 && issued == revoked, "{session:?}");
}

#[test]
fn isolate_without_bwrap_on_path_refuses_and_runs_nothing() {
    let stack = Stack::builder().start();
    let empty = stack.dir.path().join("no-bwrap");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--proxy", "--isolate", "--", "/bin/sh", "-c", "touch ran"])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = mayfly_tests::mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--isolate needs bubblewrap (`bwrap`"), "{}", lines[0]);
    assert!(!stack.work.join("ran").exists(), "the command ran unisolated");
}

#[test]
fn isolate_where_bwrap_cannot_make_the_sandbox_refuses_and_runs_nothing() {
    let stack = Stack::builder().start();
    // A `bwrap` that fails as it does where user namespaces are off.
    let dir = stack.dir.path().join("failing-bwrap");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("bwrap");
    std::fs::write(&fake, "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--proxy", "--isolate", "--", "/bin/sh", "-c", "touch ran"])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = mayfly_tests::mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(
            "bubblewrap cannot make a sandbox on this machine (bwrap: No permissions to create new namespace)"
        ),
        "{}",
        lines[0]
    );
    assert!(!stack.work.join("ran").exists(), "the command ran unisolated");
}
