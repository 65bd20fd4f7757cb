//! The shim's command-line reading and plans.

use std::ffi::OsString;

use super::*;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn npm_commands_read_unless_they_publish_a_named_package() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.json"), r#"{"name":"@org/pkg","version":"1.0.0"}"#).unwrap();
    std::fs::write(dir.path().join(".npmrc"), "; comment\n@org:registry = http://127.0.0.1:4873/npm\n").unwrap();
    let env = Env::default();
    let install = need(Family::Npm, &strings(&["install", "--registry", "https://r.example/"]), &env, dir.path());
    let install = install.unwrap().unwrap();
    assert_eq!(
        (install.operation, install.package, install.registry.as_str()),
        (Operation::Read, None, "https://r.example/")
    );
    let publish = need(Family::Npm, &strings(&["publish", "--access", "public"]), &env, dir.path()).unwrap().unwrap();
    assert_eq!(publish.operation, Operation::Publish);
    assert_eq!(publish.package.as_deref(), Some("@org/pkg"));
    assert_eq!(publish.registry.as_str(), "http://127.0.0.1:4873/npm/", "the scope's registry, from .npmrc");
    let env = Env::from_pairs([("NPM_CONFIG_REGISTRY", "https://env.example")]);
    let read = need(Family::Pnpm, &strings(&["add", "x"]), &env, dir.path()).unwrap().unwrap();
    assert_eq!(read.registry.as_str(), "https://env.example/");
    let berry = need(Family::Yarn, &strings(&["npm", "publish"]), &Env::default(), dir.path()).unwrap().unwrap();
    assert_eq!(berry.operation, Operation::Publish);
    let tarball = need(Family::Npm, &strings(&["publish", "pkg.tgz"]), &Env::default(), dir.path());
    assert_eq!(tarball.unwrap().unwrap().package, None, "a tarball names no package directory");
    for quiet in [&["test"][..], &["run", "build"], &["--version"], &["config", "list"]] {
        assert_eq!(need(Family::Npm, &strings(quiet), &Env::default(), dir.path()), Ok(None), "{quiet:?}");
    }
    assert!(need(Family::Yarn, &[], &Env::default(), dir.path()).unwrap().is_some(), "a bare `yarn` installs");
}

#[test]
fn publish_config_and_npmrc_variables_name_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"{"name":"pkg","publishConfig":{"registry":"https://publish.example/"}}"#;
    std::fs::write(dir.path().join("package.json"), manifest).unwrap();
    std::fs::write(dir.path().join(".npmrc"), "registry=${REGISTRY_URL}\n").unwrap();
    let env = Env::from_pairs([("REGISTRY_URL", "https://from-env.example/npm")]);
    let publish = need(Family::Npm, &strings(&["publish"]), &env, dir.path()).unwrap().unwrap();
    assert_eq!(publish.registry.as_str(), "https://publish.example/");
    let install = need(Family::Npm, &strings(&["ci"]), &env, dir.path()).unwrap().unwrap();
    assert_eq!(install.registry.as_str(), "https://from-env.example/npm/");
}

#[test]
fn planted_client_files_are_refused_by_name_never_waited_on() {
    // A FIFO would stall a plain read forever, `/dev/zero` would be read without end, and
    // `/proc/self/environ` holds the shim's environment: each refuses the command, named.
    for (name, plant) in [
        (".npmrc", "fifo"),
        (".npmrc", "/dev/zero"),
        (".npmrc", "/proc/self/environ"),
        ("package.json", "fifo"),
        (".yarnrc", "/dev/zero"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), r#"{"name":"pkg","version":"1.0.0"}"#).unwrap();
        let path = dir.path().join(name);
        let _ = std::fs::remove_file(&path);
        if plant == "fifo" {
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        } else {
            std::os::unix::fs::symlink(plant, &path).unwrap();
        }
        let family = if name == ".yarnrc" { Family::Yarn } else { Family::Npm };
        let args = strings(if name == "package.json" { &["publish"] } else { &["install"] });
        match need(family, &args, &Env::default(), dir.path()) {
            Err(Refusal::Failed(why)) => assert!(why.contains(name) && why.contains("not read"), "{plant}: {why}"),
            other => panic!("{name} as {plant}: {other:?}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.json"), "{}").unwrap();
    std::fs::write(dir.path().join("real.npmrc"), "registry=https://linked.example/\n").unwrap();
    std::os::unix::fs::symlink("real.npmrc", dir.path().join(".npmrc")).unwrap();
    let read = need(Family::Npm, &strings(&["install"]), &Env::default(), dir.path()).unwrap().unwrap();
    assert_eq!(read.registry.as_str(), "https://linked.example/", "a dotfile that is a link to a file is read");
    // A folder where a file is expected is skipped, as npm skips it.
    std::fs::remove_file(dir.path().join(".npmrc")).unwrap();
    std::fs::create_dir(dir.path().join(".npmrc")).unwrap();
    let read = need(Family::Npm, &strings(&["install"]), &Env::default(), dir.path()).unwrap().unwrap();
    assert_eq!(read.registry.as_str(), "https://registry.npmjs.org/");
}

#[test]
fn twine_uploads_name_one_normalised_project() {
    let env = Env::default();
    let upload = strings(&[
        "upload",
        "--repository-url",
        "http://127.0.0.1:8080/legacy/",
        "dist/Foo_Bar-1.0.tar.gz",
        "dist/foo_bar-1.0-py3-none-any.whl",
    ]);
    let need = need(Family::Twine, &upload, &env, Path::new("/")).unwrap().unwrap();
    assert_eq!(need.package.as_deref(), Some("foo-bar"));
    assert_eq!(need.registry.as_str(), "http://127.0.0.1:8080/legacy/");
    assert_eq!(super::need(Family::Twine, &strings(&["check", "dist/x-1.tar.gz"]), &env, Path::new("/")), Ok(None));
    let two = strings(&["upload", "a-1.tar.gz", "b-1.tar.gz"]);
    assert!(super::need(Family::Twine, &two, &env, Path::new("/")).is_err());
    let named = strings(&["upload", "-r", "internal", "a-1.tar.gz"]);
    let err = super::need(Family::Twine, &named, &env, Path::new("/")).unwrap_err();
    assert!(err.to_string().contains("--repository-url"), "{err}");
    let env = Env::from_pairs([("TWINE_REPOSITORY", "internal")]);
    assert!(super::need(Family::Twine, &strings(&["upload", "a-1.tar.gz"]), &env, Path::new("/")).is_err());
}

#[test]
fn tokens_go_into_the_variable_each_tool_reads() {
    let issued = Issued {
        token: crate::Secret::new("tok"),
        expires_at: None,
        token_id: None,
        scheme: crate::Scheme::Bearer,
        username: "__token__".into(),
        from_cache: false,
    };
    let registry = url::Url::parse("http://127.0.0.1:4873/npm/").unwrap();
    assert_eq!(
        token_vars(Family::Npm, &registry, &issued),
        [
            ("npm_config_//127.0.0.1:4873/npm/:_authToken".to_owned(), "tok".to_owned()),
            ("MAYFLY_NPM_TOKEN".to_owned(), "tok".to_owned())
        ]
    );
    let yarn = token_vars(Family::Yarn, &registry, &issued);
    assert!(yarn.iter().all(|(k, _)| k != "YARN_NPM_AUTH_TOKEN"), "berry's global token would go to every registry");
    let twine = token_vars(Family::Twine, &registry, &issued);
    assert_eq!(twine[0], ("TWINE_USERNAME".to_owned(), "__token__".to_owned()));
    assert_eq!(twine[2], ("TWINE_REPOSITORY_URL".to_owned(), registry.to_string()), "pinned to the token's URL");
}

#[test]
fn the_real_tool_is_never_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let (shims, real) = (dir.path().join("shims"), dir.path().join("real"));
    std::fs::create_dir_all(&shims).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    let shim = shims.join("mayfly-shim");
    std::fs::write(&shim, "#!/bin/sh\n").unwrap();
    std::fs::write(real.join("npm"), "#!/bin/sh\n").unwrap();
    for f in [&shim, &real.join("npm")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink(&shim, shims.join("npm")).unwrap();
    let path = format!("{}:{}", shims.display(), real.display());
    assert_eq!(find_real("npm", &path, &shims.join("npm")), Some(real.join("npm")));
    assert_eq!(find_real("npm", &shims.display().to_string(), &shims.join("npm")), None);
}

/// A project with these scripts (each `true`) in a fresh directory.
fn project(scripts: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let scripts: serde_json::Map<String, serde_json::Value> =
        scripts.iter().map(|s| ((*s).to_owned(), serde_json::json!("true"))).collect();
    let manifest = serde_json::json!({"name": "@org/pkg", "version": "1.0.0", "scripts": scripts});
    std::fs::write(dir.path().join("package.json"), manifest.to_string()).unwrap();
    dir
}

fn step(program: &str, args: &[&str], dir: Option<&Path>) -> Step {
    Step {
        program: program.into(),
        args: args.iter().map(OsString::from).collect(),
        dir: dir.map(Path::to_owned),
        unset: Vec::new(),
    }
}

#[test]
fn installs_fetch_with_scripts_off_and_run_them_afterwards_with_the_same_client() {
    let dir = project(&["postinstall", "prepare"]);
    let cwd = dir.path();
    let plan = |client, args: &[&str]| phases::plan(client, Path::new("t"), &strings(args), cwd, Path::new("/p"));
    assert_eq!(
        plan(Client::Npm, &["ci", "--", "x"]),
        Plan::Install {
            with_token: step("t", &["ci", "--ignore-scripts", "--", "x"], None),
            after: vec![step("t", &["rebuild"], None), step("t", &["run", "--ignore-scripts", "prepare"], Some(cwd))],
        },
        "npm's rebuild leaves out the project's prepare"
    );
    let Plan::Install { after, .. } = plan(Client::Pnpm(10), &["add", "x"]) else { panic!() };
    assert_eq!(after, [step("t", &["rebuild"], None)]);
    let Plan::Install { after, .. } = plan(Client::Pnpm(12), &["install"]) else { panic!() };
    assert_eq!(
        after,
        [
            step("t", &["rebuild"], None),
            step("t", &["run", "postinstall"], Some(cwd)),
            step("t", &["run", "prepare"], Some(cwd))
        ],
        "pnpm 11 and later rebuild dependencies only"
    );
    assert_eq!(
        plan(Client::YarnClassic, &["--frozen-lockfile"]),
        Plan::Install {
            with_token: step("t", &["install", "--frozen-lockfile", "--ignore-scripts"], None),
            after: vec![step("t", &["install", "--force", "--offline", "--frozen-lockfile"], None)],
        }
    );
    assert_eq!(
        plan(Client::YarnBerry, &["add", "x"]),
        Plan::Install {
            with_token: step("t", &["add", "x", "--mode=skip-build"], None),
            after: vec![step("t", &["rebuild"], None)],
        }
    );
    // Asked for no scripts, or reading without any: one step.
    assert_eq!(
        plan(Client::Npm, &["i", "--ignore-scripts"]),
        Plan::Direct(step("t", &["i", "--ignore-scripts"], None))
    );
    assert_eq!(plan(Client::Pnpm(9), &["view", "x"]), Plan::Direct(step("t", &["view", "x"], None)));
    assert_eq!(
        plan(Client::Npm, &["install", "-g", "x"]),
        Plan::Install {
            with_token: step("t", &["install", "-g", "x", "--ignore-scripts"], None),
            after: vec![step("t", &["rebuild", "--global"], None)],
        }
    );
}

#[test]
fn publishes_pack_without_a_token_and_upload_the_tarball_with_scripts_off() {
    let dir = project(&["prepublishOnly", "prepare", "prepack", "postpublish"]);
    let cwd = dir.path();
    let pack = Path::new("/p");
    assert_eq!(
        phases::plan(Client::Npm, Path::new("t"), &strings(&["publish", "--tag", "next"]), cwd, pack),
        Plan::Publish {
            before: vec![
                step("t", &["run", "--ignore-scripts", "prepublishOnly"], Some(cwd)),
                step("t", &["pack", "--pack-destination", "/p"], Some(cwd)),
            ],
            after: vec![step("t", &["run", "--ignore-scripts", "postpublish"], Some(cwd))],
        }
    );
    let Plan::Publish { before, .. } =
        phases::plan(Client::YarnClassic, Path::new("t"), &strings(&["publish"]), cwd, pack)
    else {
        panic!()
    };
    assert_eq!(
        before,
        [
            step("t", &["run", "prepare"], Some(cwd)),
            step("t", &["run", "prepublishOnly"], Some(cwd)),
            step("t", &["pack", "--filename", "/p/package.tgz"], Some(cwd)),
        ]
    );
    let registry = url::Url::parse("https://r.example/").unwrap();
    let tarball = Path::new("/p/package.tgz");
    let args = strings(&["publish", "--tag", "next"]);
    let upload = phases::upload(Client::Pnpm(12), Path::new("t"), None, &args, tarball, &registry).unwrap();
    assert_eq!(upload, step("t", &["publish", "/p/package.tgz", "--tag", "next", "--ignore-scripts"], None));
    // berry cannot publish a tarball: npm uploads it, to the registry berry would use.
    let args = strings(&["npm", "publish", "--access", "public", "--tolerate-republish"]);
    let upload = phases::upload(Client::YarnBerry, Path::new("t"), Some(Path::new("npm")), &args, tarball, &registry);
    assert_eq!(
        upload.unwrap(),
        step(
            "npm",
            &[
                "publish",
                "/p/package.tgz",
                "--ignore-scripts",
                "--registry",
                "https://r.example/",
                "--access",
                "public"
            ],
            None
        )
    );
    assert!(phases::upload(Client::YarnBerry, Path::new("t"), None, &args, tarball, &registry).is_err());
    // A tarball named on the command line runs no scripts of its own: one step.
    std::fs::write(cwd.join("x.tgz"), "").unwrap();
    assert_eq!(
        phases::plan(Client::Npm, Path::new("t"), &strings(&["publish", "x.tgz"]), cwd, pack),
        Plan::Direct(step("t", &["publish", "x.tgz", "--ignore-scripts"], None))
    );
}

#[test]
fn code_runners_get_no_token_and_reads_get_one_per_scope_registry() {
    let dir = project(&[]);
    std::fs::write(dir.path().join(".npmrc"), "@org:registry=https://org.example\n@b:registry = ${B}\n").unwrap();
    let env = Env::from_pairs([("B", "https://b.example/npm")]);
    for quiet in [&["exec", "x"][..], &["x", "y"], &["dlx", "y"], &["install-test"], &["pack"]] {
        assert_eq!(need(Family::Npm, &strings(quiet), &env, dir.path()), Ok(None), "{quiet:?}");
    }
    let read = need(Family::Npm, &strings(&["install"]), &env, dir.path()).unwrap().unwrap();
    let scopes: Vec<&str> = read.scopes.iter().map(url::Url::as_str).collect();
    assert_eq!(scopes, ["https://org.example/", "https://b.example/npm/"]);
    assert!(need(Family::Npm, &strings(&["pack", "left-pad"]), &env, dir.path()).unwrap().is_some());
    let env = Env::from_pairs([
        ("npm_config_registry", "https://npm.example/"),
        ("PNPM_CONFIG_REGISTRY", "https://p.example/"),
    ]);
    let pnpm = need(Family::Pnpm, &strings(&["install"]), &env, dir.path()).unwrap().unwrap();
    assert_eq!(pnpm.registry.as_str(), "https://p.example/", "pnpm 11 and later read only their own");
    std::fs::write(dir.path().join(".yarnrc"), "registry \"https://yarnrc.example/\"\n").unwrap();
    std::fs::write(dir.path().join(".npmrc"), "registry=https://npmrc.example/\n").unwrap();
    let yarn = need(Family::Yarn, &[], &Env::default(), dir.path()).unwrap().unwrap();
    assert_eq!(yarn.registry.as_str(), "https://yarnrc.example/", "classic yarn's own file wins");
}

#[test]
fn berry_settings_name_the_registry() {
    let settings = [
        r#"{"key":"npmPublishRegistry","effective":"https://publish.example"}"#,
        r#"{"key":"npmRegistryServer","effective":"https://server.example"}"#,
        r#"{"key":"npmScopes","effective":{}}"#,
    ]
    .join("\n");
    let scopes = r#"{"org":{"npmRegistryServer":"https://org.example","npmPublishRegistry":null}}"#;
    let mut need = Need {
        registry: url::Url::parse("https://registry.npmjs.org/").unwrap(),
        operation: Operation::Read,
        package: None,
        publish_config: Some("https://config.example/".into()),
        scopes: Vec::new(),
    };
    let registry = |need: &Need, scope| phases::berry_registry(&settings, scopes, need, scope);
    assert_eq!(registry(&need, None).as_deref(), Some("https://server.example"));
    assert_eq!(registry(&need, Some("org")).as_deref(), Some("https://org.example"));
    need.operation = Operation::Publish;
    assert_eq!(registry(&need, Some("org")).as_deref(), Some("https://config.example/"));
    need.publish_config = None;
    assert_eq!(registry(&need, Some("org")).as_deref(), Some("https://org.example"));
    assert_eq!(registry(&need, None).as_deref(), Some("https://publish.example"));
    assert_eq!(phases::berry_scopes(scopes), ["https://org.example"]);
}

#[test]
fn workspace_publishes_are_refused_with_one_line() {
    let dir = project(&[]);
    for args in [
        &["publish", "--workspace", "a"][..],
        &["publish", "-w=a"],
        &["--filter", "a", "publish"],
        &["-r", "publish"],
        &["--recursive", "publish"],
    ] {
        let err = need(Family::Pnpm, &strings(args), &Env::default(), dir.path()).unwrap_err();
        assert!(
            err.to_string().starts_with("`pnpm publish` of workspaces: run it in the package's directory"),
            "{err}"
        );
    }
    // twine's `-r` names a repository: `twine upload -r pypi dist/*` still uploads.
    let dist = dir.path().join("x-1.0.tar.gz");
    std::fs::write(&dist, b"x").unwrap();
    let args = strings(&["upload", "-r", "pypi", dist.to_str().unwrap()]);
    assert!(need(Family::Twine, &args, &Env::default(), dir.path()).unwrap().is_some());
}

#[test]
fn each_refusal_is_one_line_and_the_tool_not_run() {
    let answers: Vec<Reply> = crate::protocol::every_refusal().iter().map(reply).collect();
    let no_route = Reply::line("no route gives this registry a token");
    assert_eq!(
        answers,
        [
            no_route.clone(),
            no_route,
            Reply::line("no token for https://h.example/org/app (git write): route `r` does not allow write"),
            Reply::line("the request is malformed"),
            Reply::line("unknown action"),
        ]
    );
}

#[test]
fn inside_a_proxy_session_the_real_tool_runs_without_a_token() {
    type Vars = Vec<(String, String)>;
    struct Recording(Vec<(Vec<PathBuf>, Vars)>);
    impl Runner for Recording {
        fn run(&mut self, _: &Step, _: &[(String, String)]) -> Result<i32, String> {
            Err("no run expected".into())
        }
        fn output(&mut self, _: &Step, _: &[(String, String)]) -> Option<String> {
            None
        }
        fn exec(&mut self, steps: &[Step], vars: &[(String, String)]) -> String {
            self.0.push((steps.iter().map(|s| s.program.clone()).collect(), vars.to_vec()));
            "recorded".into()
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let npm = dir.path().join("npm");
    std::fs::write(&npm, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&npm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = Env::from_pairs([
        ("PATH", dir.path().to_str().unwrap()),
        ("MAYFLY_PROXY_SESSION", "s-1"),
        ("MAYFLY_CONFIG", "/nonexistent/config.toml"),
    ]);
    let mut runner = Recording(Vec::new());
    let args = [OsString::from("publish")];
    let result = run(Family::Npm, &args, env, dir.path(), Path::new("/nonexistent/shim"), &Vec::new, &mut runner);
    assert!(matches!(result, Err(Refusal::Failed(reason)) if reason == "recorded"));
    assert_eq!(runner.0, [(vec![npm], vec![("MAYFLY_NPM_TOKEN".to_owned(), String::new())])]);
}

/// A work directory holding the built gems the tests below push, each named for its gem.
fn gems() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (file, name) in [("pkg/my-gem-1.2.0.gem", "my-gem"), ("x_y-0.1.0-x86_64-linux.gem", "x_y"), ("a-1.gem", "a")] {
        super::gem::tests::write_gem(&dir.path().join(file), &format!("name: {name}\n"));
    }
    dir
}

#[test]
fn gem_push_names_the_gem_and_the_host() {
    let gems = gems();
    let env = Env::default();
    let push = need(Family::Gem, &strings(&["push", "pkg/my-gem-1.2.0.gem"]), &env, gems.path()).unwrap().unwrap();
    assert_eq!((push.package.as_deref(), push.registry.as_str()), (Some("my-gem"), "https://rubygems.org/"));
    assert_eq!(push.operation, Operation::Publish);
    let args = strings(&["push", "--host", "http://127.0.0.1:9292", "x_y-0.1.0-x86_64-linux.gem"]);
    let push = need(Family::Gem, &args, &env, gems.path()).unwrap().unwrap();
    assert_eq!((push.package.as_deref(), push.registry.as_str()), (Some("x_y"), "http://127.0.0.1:9292/"));
    let env = Env::from_pairs([("RUBYGEMS_HOST", "https://gems.example")]);
    let push = need(Family::Gem, &strings(&["push", "a-1.gem"]), &env, gems.path()).unwrap().unwrap();
    assert_eq!(push.registry.as_str(), "https://gems.example/");
    for other in [&["install", "rake"][..], &["build", "a.gemspec"], &["yank", "a", "-v", "1"], &[]] {
        assert_eq!(need(Family::Gem, &strings(other), &env, gems.path()), Ok(None), "{other:?}");
    }
    for bad in [&["push"][..], &["push", "a-1.gem", "b-1.gem"], &["push", "a.gem"], &["push", "1-2.gem"]] {
        let err = need(Family::Gem, &strings(bad), &env, gems.path()).unwrap_err().to_string();
        assert!(err.starts_with("`gem push`: "), "{err}");
    }
}

#[test]
fn gem_push_is_pinned_to_the_host_its_key_is_for() {
    let gems = gems();
    let env = Env::default();
    let args = strings(&["push", "a-1.gem"]);
    let push = need(Family::Gem, &args, &env, gems.path()).unwrap().unwrap();
    let os: Vec<OsString> = args.iter().map(Into::into).collect();
    assert_eq!(pinned_args(Family::Gem, &push, &os), ["push", "--host", "https://rubygems.org", "a-1.gem"]);
    let given: Vec<OsString> = ["push", "a-1.gem", "--host=https://rubygems.org"].map(Into::into).into();
    assert_eq!(
        pinned_args(Family::Gem, &push, &given),
        ["push", "--host", "https://rubygems.org", "a-1.gem"],
        "the host given is replaced by the one pinned"
    );
    let issued = Issued {
        token: crate::Secret::new("rubygems_k"),
        expires_at: None,
        token_id: None,
        scheme: crate::Scheme::Plain,
        username: "x-access-token".into(),
        from_cache: false,
    };
    assert_eq!(
        token_vars(Family::Gem, &push.registry, &issued),
        [("GEM_HOST_API_KEY".to_owned(), "rubygems_k".to_owned())]
    );
}

/// Ruby's OptionParser keeps the last `--host`, takes `--ho`, `--hos` and any case, and
/// stops at `--`: each way of sending the key to a host other than the one it names.
#[test]
fn gem_push_reads_every_host_option_as_gem_does() {
    let gems = gems();
    let env = Env::default();
    let host = |args: &[&str]| need(Family::Gem, &strings(args), &env, gems.path()).map(|n| n.unwrap());
    for (args, want) in [
        (&["push", "--ho", "https://a.example", "a-1.gem"][..], "https://a.example/"),
        (&["push", "a-1.gem", "--hos=https://a.example"], "https://a.example/"),
        (&["push", "--HOST", "https://a.example", "a-1.gem"], "https://a.example/"),
        (&["push", "a-1.gem", "--Ho=https://a.example"], "https://a.example/"),
    ] {
        assert_eq!(host(args).unwrap().registry.as_str(), want, "{args:?}");
    }
    for bad in [
        &["push", "--host", "https://rubygems.org", "a-1.gem", "--host", "https://evil.example"][..],
        &["push", "--host=https://rubygems.org", "a-1.gem", "--ho", "https://evil.example"],
        &["push", "a-1.gem", "--hos=https://evil.example", "--HOST=https://rubygems.org"],
        &["push", "a-1.gem", "--h", "https://evil.example", "--host", "https://rubygems.org"],
    ] {
        let err = host(bad).unwrap_err().to_string();
        assert!(err.contains("--host given more than once"), "{bad:?}: {err}");
    }
    for bad in
        [&["push", "a-1.gem", "--"][..], &["push", "--host", "https://rubygems.org", "a-1.gem", "--", "--host", "x"]]
    {
        let err = host(bad).unwrap_err().to_string();
        assert!(err.contains("`--` is not taken"), "{bad:?}: {err}");
    }
    let err = host(&["push", "a-1.gem", "--ho\u{17f}t=https://evil.example"]).unwrap_err().to_string();
    assert!(err.starts_with("`gem push`: the option `--ho"), "{err}");
    let err = host(&["push", "a-1.gem", "--host"]).unwrap_err().to_string();
    assert!(err.contains("--host has no value"), "{err}");
}

#[test]
fn gem_push_pins_the_host_right_after_the_command() {
    let gems = gems();
    let env = Env::default();
    for (args, want) in [
        (
            &["push", "a-1.gem", "--ho", "https://a.example"][..],
            &["push", "--host", "https://a.example", "a-1.gem"][..],
        ),
        (
            &["pu", "--HOS=https://a.example", "-k", "k", "a-1.gem"],
            &["pu", "--host", "https://a.example", "-k", "k", "a-1.gem"],
        ),
        (&["push", "--otp", "123", "a-1.gem"], &["push", "--host", "https://rubygems.org", "--otp", "123", "a-1.gem"]),
    ] {
        let push = need(Family::Gem, &strings(args), &env, gems.path()).unwrap().unwrap();
        let os: Vec<OsString> = args.iter().map(Into::into).collect();
        assert_eq!(pinned_args(Family::Gem, &push, &os), want, "{args:?}");
    }
}

/// The gem a push publishes is the one the file holds: a file renamed for another gem,
/// or holding no readable specification, is refused before any token is asked for.
#[test]
fn gem_push_takes_the_gem_from_its_specification_not_its_file_name() {
    let gems = gems();
    let env = Env::default();
    let write = |file: &str, yaml: &str| super::gem::tests::write_gem(&gems.path().join(file), yaml);
    write("allowed-gem-1.0.0.gem", "name: other-gem\n");
    write("foo-2fa-1.0.0.gem", "name: foo-2fa\n");
    write("foo-1.0.0.gem", "name: foo-2fa\n");
    write("bare.gem", "name: bare\n");
    let push = |file: &str| need(Family::Gem, &strings(&["push", file]), &env, gems.path());
    let err = push("allowed-gem-1.0.0.gem").unwrap_err().to_string();
    assert_eq!(
        err,
        "`gem push`: `allowed-gem-1.0.0.gem` holds the gem `other-gem`, but is not named `other-gem-VERSION.gem`"
    );
    assert_eq!(push("foo-2fa-1.0.0.gem").unwrap().unwrap().package.as_deref(), Some("foo-2fa"));
    assert!(push("foo-1.0.0.gem").unwrap_err().to_string().contains("holds the gem `foo-2fa`"));
    let err = push("bare.gem").unwrap_err().to_string();
    assert_eq!(err, "`gem push`: `bare.gem` is not a gem file named NAME-VERSION.gem", "refused before it is read");
    let err = push("missing-1.0.0.gem").unwrap_err().to_string();
    assert!(err.starts_with("`gem push`: `missing-1.0.0.gem`: cannot open it"), "{err}");
}

#[test]
fn gem_pushes_the_copy_it_checked() {
    use std::os::unix::fs::PermissionsExt;
    /// Swaps the named gem for another before reading what gem would push.
    struct Swapping(PathBuf, Vec<(Vec<OsString>, Vec<u8>)>);
    impl Runner for Swapping {
        fn run(&mut self, step: &Step, _: &[(String, String)]) -> Result<i32, String> {
            super::gem::tests::write_gem(&self.0, "name: evil\n");
            let pushed = Path::new(step.args.last().unwrap());
            self.1.push((step.args.clone(), std::fs::read(pushed).unwrap()));
            Ok(0)
        }
        fn output(&mut self, _: &Step, _: &[(String, String)]) -> Option<String> {
            None
        }
        fn exec(&mut self, _: &[Step], _: &[(String, String)]) -> String {
            "no exec expected".into()
        }
    }
    let gems = gems();
    let original = gems.path().join("a-1.gem");
    let checked = std::fs::read(&original).unwrap();
    let gem = gems.path().join("bin/gem");
    std::fs::create_dir_all(gem.parent().unwrap()).unwrap();
    std::fs::write(&gem, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&gem, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = gems.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let env = Env::from_pairs([
        ("PATH", gem.parent().unwrap().to_str().unwrap()),
        ("MAYFLY_CONFIG", config.to_str().unwrap()),
    ]);
    let mut runner = Swapping(original.clone(), Vec::new());
    let args = [OsString::from("push"), OsString::from("a-1.gem")];
    let code = run(Family::Gem, &args, env, gems.path(), Path::new("/nonexistent/shim"), &Vec::new, &mut runner);
    assert_eq!(code, Ok(0));
    let [(pushed_args, pushed)] = &runner.1[..] else { panic!("{:?}", runner.1.len()) };
    assert_eq!(pushed, &checked, "the bytes pushed are the bytes checked");
    let copy = Path::new(pushed_args.last().unwrap());
    assert!(copy.ends_with("a-1.gem") && copy != original);
    assert!(!copy.exists(), "the copy is removed once gem exits");
}

#[test]
fn gem_push_refuses_links_fifos_and_proc_files_without_reading_them() {
    let gems = tempfile::tempdir().unwrap();
    let secret = gems.path().join("secret");
    std::fs::write(&secret, "not a gem").unwrap();
    std::os::unix::fs::symlink(&secret, gems.path().join("link-1.0.0.gem")).unwrap();
    nix::unistd::mkfifo(&gems.path().join("fifo-1.0.0.gem"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", gems.path().join("environ-1.0.0.gem")).unwrap();
    let config = gems.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let env = Env::from_pairs([("PATH", "/nonexistent"), ("MAYFLY_CONFIG", config.to_str().unwrap())]);
    for (file, why) in [
        ("link-1.0.0.gem", "is a symbolic link"),
        ("fifo-1.0.0.gem", "is not a regular file"),
        ("environ-1.0.0.gem", "is a symbolic link"),
    ] {
        // Both ways in: the push's own copy and the name read to pick a route.
        let args = strings(&["push", file]);
        let err = super::gem_copy(&args, gems.path()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("`gem push`: `{file}`: cannot open it: {why}")), "{err}");
        let err = need(Family::Gem, &args, &env, gems.path()).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    // A /proc file reached through a real folder path is refused by its file system.
    let err = super::gem::spec_name(Path::new("/proc/self/environ")).unwrap_err();
    assert!(err.contains("kernel file system"), "{err}");
}
