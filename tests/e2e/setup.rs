//! `mayfly setup` on a fresh HOME: afterwards the real git, cargo, kubectl, terraform,
//! skopeo and aws work with no other wiring; a second run changes nothing; `--undo` puts
//! every file back byte for byte. `--ci` on GitHub Actions writes only `$GITHUB_ENV`,
//! `$GITHUB_PATH` and configs outside the workspace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use mayfly_tests::{Stack, bin, require_tool};

/// The files `mayfly setup` manages in these tests, and its journal.
const MANAGED: [&str; 8] = [
    ".gitconfig",
    ".cargo/config.toml",
    ".kube/config",
    ".aws/config",
    ".docker/config.json",
    ".terraformrc",
    ".terraform.d/plugins/terraform-credentials-mayfly",
    ".local/state/mayfly/setup/journal.json",
];

/// SHA-256 of each managed file as it is now (absent files are absent).
fn managed(home: &Path) -> BTreeMap<&'static str, String> {
    use sha2::Digest;
    MANAGED
        .iter()
        .filter_map(|name| {
            let path = home.join(name);
            let bytes = match std::fs::read_link(&path) {
                Ok(target) => target.into_os_string().into_encoded_bytes(),
                Err(_) => std::fs::read(&path).ok()?,
            };
            Some((*name, hex::encode(sha2::Sha256::digest(bytes))))
        })
        .collect()
}

/// Every file under `dir` (symlinks as their targets), by path.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                files.insert(path.clone(), std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes());
            } else if kind.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn setup(stack: &Stack, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let out = Command::new(bin("mayfly"))
        .arg("setup")
        .args(args)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .output()
        .unwrap();
    assert!(out.status.success(), "mayfly setup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A HOME as a user has it before mayfly: git identity, a cargo registry without a
/// provider, a kubeconfig whose user has no credentials, an AWS profile with only a region.
fn user_files(stack: &Stack, moto_url: &str) {
    let home = &stack.home;
    std::fs::write(home.join(".gitconfig"), "[user]\n\tname = mayfly test\n\temail = test@mayfly.invalid\n[init]\n\tdefaultBranch = main\n# the user's own comment\n").unwrap();
    std::fs::create_dir_all(home.join(".cargo")).unwrap();
    std::fs::write(
        home.join(".cargo/config.toml"),
        format!("# my registries\n[registries.mayfly-dev]\nindex = \"{}\"\n", stack.cargo().index_url),
    )
    .unwrap();
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&stack.ca.ca_cert).unwrap());
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    std::fs::write(
        home.join(".kube/config"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: me\n  user: {{}}\ncontexts:\n- name: dev\n  context:\n    cluster: dev\n    user: me\ncurrent-context: dev\n",
            stack.kube().base_url
        ),
    )
    .unwrap();
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/config"),
        format!("[profile deploy]\nregion = us-east-1\nendpoint_url = {moto_url}\n"),
    )
    .unwrap();
}

/// The stack's routes plus an OCI registry and an AWS role.
fn routes(stack: &Stack, registry: &str, gate: &str) -> String {
    format!(
        "{}\n[[routes]]\ntool = \"oci\"\nhost = \"{registry}\"\nidentity = \"ci\"\nexchange = \"sts\"\noperations = [\"read\", \"write\"]\nscope = \"oci:{{host}}/test/*:{{operation}}\"\nusername = \"mayfly\"\n\n[[routes]]\nname = \"deploy\"\ntool = \"aws\"\nidentity = \"aws\"\nexchange = \"aws\"\nrole_arn = \"{}\"\n\n[exchanges.aws]\nkind = \"aws-sts\"\ntoken_endpoint = \"{gate}\"\n\n[identities.aws]\nkind = \"github-actions\"\naudience = \"sts.amazonaws.com\"\n",
        stack.default_routes(),
        super::aws::ROLE,
    )
}

fn ok(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tool(stack: &Stack, program: &str, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).env_clear().envs(stack.env()).env("SSL_CERT_FILE", &stack.ca.ca_cert);
    command
}

#[test]
#[cfg_attr(
    any(
        missing = "git",
        missing = "kubectl",
        missing = "terraform",
        missing = "skopeo",
        missing = "docker-registry",
        missing = "aws",
        missing = "moto_server"
    ),
    ignore = "needs git, kubectl, terraform, skopeo, docker-registry, aws, moto_server: one is not installed"
)]
fn setup_wires_every_tool_once_and_undo_restores_every_byte() {
    for needed in ["git", "kubectl", "terraform", "skopeo", "docker-registry", "aws", "moto_server"] {
        if !require_tool(needed) {
            return;
        }
    }
    let stack = Stack::builder().all().start();
    let moto = super::aws::Moto::start();
    let gate = mayfly_devstack::AwsStsGate::start(stack.runtime(), &stack.issuer, &moto.url).unwrap();
    let registry = super::oci::Registry::start(&stack);
    user_files(&stack, &moto.url);
    stack.write_config(&routes(&stack, &registry.host, &gate.url));
    let before = snapshot(&stack.home);

    let out = setup(&stack, &[], &[]);
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    for file in
        [".gitconfig", ".cargo/config.toml", ".kube/config", ".aws/config", ".docker/config.json", ".terraformrc"]
    {
        assert!(report.contains(&stack.home.join(file).display().to_string()), "{file} in:\n{report}");
    }
    // The git server listens on a port of its own: libgit2 callers would not find the helper.
    let host = stack.git_host();
    assert!(
        report.contains(&format!("https://{host}: libgit2-based callers look up the helper without the port")),
        "{report}"
    );
    let wired = managed(&stack.home);
    assert_eq!(wired.len(), MANAGED.len(), "every managed file exists: {wired:?}");
    stack.assert_no_tokens_on_disk();

    // git: clone and push org/app.
    stack.git_ok(&stack.work, &["clone", &stack.repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    stack.commit_file(&app, "setup.txt");
    stack.git_ok(&app, &["push", "origin", "main"]);
    // cargo: publish to the auth-required registry named in the user's own config.
    let krate = super::cargo::package_for(&stack, "mayfly-hello", "0.1.0", "mayfly-dev", None);
    let mut cargo = super::cargo::toolchain_cargo(
        &stack,
        &krate,
        &["publish", "--registry", "mayfly-dev", "--no-verify", "--allow-dirty"],
    );
    ok("cargo publish", &cargo.env("CARGO_HOME", stack.home.join(".cargo")).output().unwrap());
    // kubectl: the user's own context, now with mayfly's user.
    let version = ok("kubectl", &tool(&stack, "kubectl", &stack.work, &["get", "--raw", "/version"]).output().unwrap());
    assert!(version.contains("gitVersion"), "{version}");
    // terraform: a module from the token-checking registry.
    let tf = stack.work.join("tf");
    std::fs::create_dir_all(&tf).unwrap();
    let host = stack.registry().base_url.trim_start_matches("https://");
    std::fs::write(
        tf.join("main.tf"),
        format!(
            "module \"greeting\" {{\n  source  = \"{host}/{}\"\n  version = \"1.0.0\"\n}}\n",
            mayfly_devstack::MODULE
        ),
    )
    .unwrap();
    let mut terraform = tool(&stack, "terraform", &tf, &["init", "-input=false", "-no-color"]);
    ok("terraform init", &terraform.env("CHECKPOINT_DISABLE", "1").output().unwrap());
    // skopeo: push an image and inspect it (the helpers are on PATH, as setup asked).
    let layout = super::oci::image_layout(&stack.work);
    let image = format!("docker://{}/test/app:v1", registry.host);
    let copy = ["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", layout.display()), &image];
    ok("skopeo copy", &super::oci::client(&stack, "skopeo", &copy));
    ok("skopeo inspect", &super::oci::client(&stack, "skopeo", &["inspect", "--tls-verify=false", &image]));
    // aws: the profile the user had, now with credential_process.
    let mut aws = tool(&stack, "aws", &stack.work, &["sts", "get-caller-identity", "--profile", "deploy"]);
    aws.env("AWS_SHARED_CREDENTIALS_FILE", stack.dir.path().join("none")).env("AWS_EC2_METADATA_DISABLED", "true");
    let identity = ok("aws sts get-caller-identity", &aws.output().unwrap());
    assert!(identity.contains("assumed-role/deploy"), "{identity}");

    let tools: Vec<String> = stack
        .client_audit()
        .iter()
        .filter(|l| l["outcome"] == "issued")
        .map(|l| l["tool"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["git", "cargo", "kubectl", "terraform", "oci", "aws"] {
        assert!(tools.iter().any(|t| t == expected), "{expected} got a token: {tools:?}");
    }

    // A second run changes nothing.
    let out = setup(&stack, &[], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to change"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(managed(&stack.home), wired);

    // --undo: every file setup touched is as it was; what it created is gone.
    setup(&stack, &["--undo"], &[]);
    let restored = snapshot(&stack.home);
    for (path, bytes) in before.iter().filter(|(p, _)| MANAGED.iter().any(|m| p.ends_with(m))) {
        assert!(restored.get(path) == Some(bytes), "{} restored byte for byte", path.display());
    }
    assert_eq!(before.keys().filter(|p| MANAGED.iter().any(|m| p.ends_with(m))).count(), 4);
    for created in [".docker/config.json", ".terraformrc", ".terraform.d/plugins/terraform-credentials-mayfly"] {
        assert!(std::fs::symlink_metadata(stack.home.join(created)).is_err(), "{created} removed");
    }
    assert!(!stack.home.join(".docker").exists() && !stack.home.join(".terraform.d/plugins").exists());
}

#[test]
fn dry_run_changes_nothing() {
    let stack = Stack::builder().all().start();
    let before = snapshot(&stack.home);
    let out = setup(&stack, &["--dry-run"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("would change"));
    assert_eq!(snapshot(&stack.home), before);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn ci_mode_on_github_actions_hands_git_to_later_steps_and_writes_nothing_into_the_workspace() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    std::fs::write(stack.home.join(".gitconfig"), "[user]\n\tname = ci\n\temail = ci@mayfly.invalid\n").unwrap();
    let runner = stack.dir.path().join("runner");
    std::fs::create_dir_all(&runner).unwrap();
    let (env_file, path_file) = (runner.join("github_env"), runner.join("github_path"));
    let workspace_before = snapshot(&stack.work);
    let github = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_ENV", env_file.to_str().unwrap()),
        ("GITHUB_PATH", path_file.to_str().unwrap()),
        ("GITHUB_WORKSPACE", stack.work.to_str().unwrap()),
    ];
    setup(&stack, &["--ci"], &github);
    assert_eq!(snapshot(&stack.work), workspace_before, "nothing written into the workspace");
    let gitconfig = std::fs::read_to_string(stack.home.join(".gitconfig")).unwrap();
    assert!(!gitconfig.contains("credential"), "git is wired through the environment, not ~/.gitconfig");

    // A later step: the runner applies $GITHUB_ENV, and git works with no other wiring.
    let handed = std::fs::read_to_string(&env_file).unwrap();
    let vars: Vec<(String, String)> =
        handed.lines().map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap()).collect();
    assert!(vars.iter().any(|(k, v)| k == "GIT_CONFIG_COUNT" && v == "3"), "one host, three entries: {handed}");
    assert!(!mayfly_core::contains_jwt(handed.as_bytes()));
    let out = stack
        .git_cmd(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), "later"])
        .envs(vars)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A HOME inside the workspace would put tool configs into it: refused.
    let mut inside = Command::new(bin("mayfly"));
    inside.args(["setup", "--ci"]).env_clear().envs(stack.env()).envs(github);
    inside.env("HOME", stack.work.join("home")).env("XDG_CONFIG_HOME", stack.home.join(".config"));
    stack.write_config(&format!(
        "{}\n[[routes]]\ntool = \"cargo\"\nhost = \"crates.example\"\nidentity = \"ci\"\nexchange = \"sts\"\n",
        stack.route("org/app", &["read"], "ci")
    ));
    let out = inside.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inside the CI workspace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ci_mode_on_azure_pipelines_hands_git_over_in_logging_commands_and_names_the_jobs_identity() {
    let stack = Stack::new();
    let env: Vec<(String, String)> = stack
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("ACTIONS_ID_TOKEN_REQUEST") && k != "GITHUB_ACTIONS")
        .chain([
            ("TF_BUILD".to_owned(), "True".to_owned()),
            ("BUILD_SOURCESDIRECTORY".to_owned(), stack.work.display().to_string()),
            ("SYSTEM_OIDCREQUESTURI".to_owned(), stack.issuer.azure_request_uri()),
        ])
        .collect();
    let workspace_before = snapshot(&stack.work);
    let home_before = snapshot(&stack.home);
    let out = Command::new(bin("mayfly"))
        .args(["setup", "--ci", "--tools", "git"])
        .current_dir(&stack.work)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.lines().any(|l| l == "##vso[task.setvariable variable=GIT_CONFIG_COUNT]3"), "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("##vso[task.")), "only logging commands on stdout: {stdout}");
    let host = stack.issuer.azure_request_uri();
    let host = host.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    assert!(stderr.contains(&format!("mayfly: identity: this job offers azure-pipelines ({host})")), "{stderr}");
    assert_eq!(snapshot(&stack.work), workspace_before, "nothing written into the workspace");
    assert_eq!(snapshot(&stack.home), home_before, "nothing written into HOME");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_dotfile_linked_into_a_dotfiles_repository_stays_a_link_and_undo_restores_its_target() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let dotfiles = stack.dir.path().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    let original = "[user]\n\tname = linked\n";
    std::fs::write(dotfiles.join("gitconfig"), original).unwrap();
    std::fs::remove_file(stack.home.join(".gitconfig")).unwrap();
    std::os::unix::fs::symlink(dotfiles.join("gitconfig"), stack.home.join(".gitconfig")).unwrap();

    setup(&stack, &["--tools", "git"], &[]);
    assert!(std::fs::symlink_metadata(stack.home.join(".gitconfig")).unwrap().file_type().is_symlink());
    let wired = std::fs::read_to_string(dotfiles.join("gitconfig")).unwrap();
    assert!(wired.contains("git-credential-mayfly"), "{wired}");
    stack.git_ok(&stack.work, &["ls-remote", &stack.repo_url("org/app.git")]);

    setup(&stack, &["--undo"], &[]);
    assert!(std::fs::symlink_metadata(stack.home.join(".gitconfig")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(dotfiles.join("gitconfig")).unwrap(), original);
}

#[test]
fn doctor_reports_a_secret_that_setup_copied_for_undo() {
    let stack = Stack::new();
    let docker = stack.home.join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    let secret = "dXNlcjpsb25nLWxpdmVkLXBhc3N3b3JkLTQy";
    std::fs::write(docker.join("config.json"), format!("{{\"auths\":{{\"r.example\":{{\"auth\":\"{secret}\"}}}}}}"))
        .unwrap();
    stack.write_config(&format!(
        "{}\n[[routes]]\ntool = \"oci\"\nhost = \"r.example\"\nidentity = \"ci\"\nexchange = \"sts\"\n",
        stack.default_routes()
    ));
    setup(&stack, &["--tools", "oci"], &[]);
    let out = Command::new(bin("mayfly"))
        .args(["doctor", "--json", "--offline"])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(secret) && !String::from_utf8_lossy(&out.stderr).contains(secret));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let auths: Vec<&serde_json::Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == "docker-auth").collect();
    assert_eq!(auths.len(), 2, "the original and setup's copy: {stdout}");
    assert_eq!(auths[0]["fingerprint"], auths[1]["fingerprint"]);
    let copy = auths.iter().find(|f| f["where"].as_str().unwrap().contains("mayfly/setup/backups")).expect("the copy");
    assert!(copy["fix"].as_str().unwrap().contains("copy of"), "{copy}");
}
