//! The `vault` exchange against a real OpenBao (`bao server -dev`) on loopback: JWT auth
//! at a mount that is not `jwt`, configured with the stack issuer's JWKS, a role bound to
//! the route's audience and the workload's claims; the Vault token reaches a tool inside a
//! `mayfly exec` session, reads a secret with the real `bao` CLI, and revokes itself when
//! the session ends.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mayfly_tests::{Stack, bin, free_port, mayfly_lines, require_tool};
use serde_json::{Value, json};

const ROOT: &str = "mayfly-e2e-root";

/// OpenBao in dev mode, stopped on drop.
struct Bao {
    child: Child,
    addr: String,
    client: reqwest::blocking::Client,
}

impl Bao {
    fn start(stack: &Stack) -> Self {
        let port = free_port();
        let child = Command::new("bao")
            .args(["server", "-dev", &format!("-dev-root-token-id={ROOT}")])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env_clear()
            .env("HOME", &stack.home)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao starts");
        let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
        let bao = Self { child, addr: format!("http://127.0.0.1:{port}"), client };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !bao.client.get(format!("{}/v1/sys/health", bao.addr)).send().is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "bao server -dev did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    /// An API call as root, in a namespace or not; fails the test unless it succeeds.
    fn root(&self, namespace: Option<&str>, path: &str, body: &Value) {
        let mut request = self.client.post(format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", ROOT);
        if let Some(namespace) = namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        let response = request.json(body).send().unwrap();
        let status = response.status();
        assert!(status.is_success(), "{path}: {status} {}", response.text().unwrap_or_default());
    }

    /// JWT auth at `ci-jwt` (in `namespace`, created here, when given) trusting the
    /// stack's issuer, a role `ci` for this repository and audience, and, outside a
    /// namespace, a secret the role's policy may read.
    fn configure(&self, stack: &Stack, audience: &str, namespace: Option<&str>) {
        if let Some(namespace) = namespace {
            self.root(None, &format!("sys/namespaces/{namespace}"), &json!({}));
        }
        let root = |path: &str, body: &Value| self.root(namespace, path, body);
        root("sys/auth/ci-jwt", &json!({"type": "jwt"}));
        root(
            "auth/ci-jwt/config",
            &json!({"jwks_url": format!("{}/.well-known/jwks.json", stack.issuer.issuer()), "bound_issuer": stack.issuer.issuer()}),
        );
        root("sys/policies/acl/ci", &json!({"policy": "path \"secret/data/app\" { capabilities = [\"read\"] }"}));
        root(
            "auth/ci-jwt/role/ci",
            &json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": [audience],
                "bound_claims": {"repository": "org/app"},
                "token_policies": ["ci"],
                "token_ttl": "10m",
            }),
        );
        if namespace.is_none() {
            root("secret/data/app", &json!({"data": {"password": "opened-by-vault"}}));
        }
    }

    /// Whether a token accessor still names a live token.
    fn accessor_alive(&self, accessor: &str) -> bool {
        let response = self
            .client
            .post(format!("{}/v1/auth/token/lookup-accessor", self.addr))
            .header("X-Vault-Token", ROOT)
            .json(&json!({"accessor": accessor}))
            .send()
            .unwrap();
        response.status().is_success()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stack, OpenBao, and a client config with a `vault` exchange (role `role`, in
/// `namespace` when given) and a git route for Vault's own host.
fn setup(role: &str, namespace: Option<&str>) -> (Stack, Bao) {
    setup_for("git", role, namespace)
}

/// [`setup`] with a route of `tool` for Vault's own host.
fn setup_for(tool: &str, role: &str, namespace: Option<&str>) -> (Stack, Bao) {
    let stack = Stack::builder().start();
    let bao = Bao::start(&stack);
    // `bao server -dev` keeps its root token in `~/.vault-token`: gone, so a test sees
    // whether a CLI writes one.
    let _ = std::fs::remove_file(stack.home.join(".vault-token"));
    bao.configure(&stack, &bao.addr, namespace);
    let host = bao.addr.trim_start_matches("http://");
    let namespace = namespace.map(|n| format!("namespace = \"{n}\"\n")).unwrap_or_default();
    stack.write_config(&format!(
        "[exchanges.vault]\nkind = \"vault\"\ntoken_endpoint = \"{addr}\"\nmount = \"ci-jwt\"\nrole = \"{role}\"\n{namespace}\n\
         [[routes]]\ntool = \"{tool}\"\nprotocol = \"http\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"vault\"\n",
        addr = bao.addr
    ));
    (stack, bao)
}

fn exec(stack: &Stack, session: &str, bao: &Bao, script: &str) -> Output {
    run(stack, bao, bin("mayfly"), &["exec", "--session", session, "--", "sh", "-c", script])
}

/// `program` with `args`, the stack's environment and `VAULT_ADDR` at the server, no
/// `VAULT_TOKEN`, in the work directory.
fn run(stack: &Stack, bao: &Bao, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("VAULT_ADDR", &bao.addr)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `git-credential-mayfly ACTION` with this request on stdin.
fn helper(stack: &Stack, action: &str, request: &str) -> Output {
    assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg(action)
        .env_clear()
        .envs(stack.env())
        .write_stdin(request.to_owned())
        .output()
        .unwrap()
}

/// Gets the Vault token the way a tool does, reads the secret with it, and prints its accessor.
fn script(bao: &Bao) -> String {
    let host = bao.addr.trim_start_matches("http://");
    format!(
        "set -e; VAULT_TOKEN=$(printf 'protocol=http\\nhost={host}\\n\\n' | git credential fill | sed -n 's/^password=//p'); \
         export VAULT_TOKEN; bao kv get -field=password secret/app; echo; \
         echo accessor=$(bao token lookup -format=json | sed -n 's/.*\"accessor\": \"\\([^\"]*\\)\".*/\\1/p')"
    )
}

#[test]
#[cfg_attr(any(missing = "bao", missing = "git"), ignore = "needs bao, git: one is not installed")]
fn a_vault_token_from_jwt_login_reads_a_secret_and_revokes_itself_when_the_session_ends() {
    if !require_tool("bao") || !require_tool("git") {
        return;
    }
    let (stack, bao) = setup("ci", None);
    let out = exec(&stack, "vault-1", &bao, &script(&bao));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // OpenBao checked the ID token against the issuer's keys, the role's audience and claims.
    assert!(stdout.lines().any(|l| l == "opened-by-vault"), "the secret was read: {stdout}");
    let accessor = stdout.lines().find_map(|l| l.strip_prefix("accessor=")).filter(|a| !a.is_empty());
    let accessor = accessor.expect("the session printed the token's accessor");

    // The audit: issued for git at Vault's host, then revoked at the session's end, and the
    // token is gone at Vault.
    let lines: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["session"] == "vault-1").collect();
    let issued = lines.iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!(issued["token_id"], accessor, "the audit names the token by its accessor: {issued}");
    assert_eq!(issued["scope"], format!("vault:{}", bao.addr.trim_start_matches("http://")));
    assert!(lines.iter().any(|l| l["outcome"] == "revoked" && l["fingerprint"] == issued["fingerprint"]), "{lines:?}");
    assert!(!bao.accessor_alive(accessor), "revoke-self ran at the session's end");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hvs."), "no token on stderr");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(any(missing = "bao", missing = "git"), ignore = "needs bao, git: one is not installed")]
fn erase_revokes_the_vault_token() {
    if !require_tool("bao") || !require_tool("git") {
        return;
    }
    erase_revokes_in(None);
}

#[test]
#[cfg_attr(any(missing = "bao", missing = "git"), ignore = "needs bao, git: one is not installed")]
fn a_login_in_a_namespace_sends_x_vault_namespace_and_revokes_there() {
    if !require_tool("bao") || !require_tool("git") {
        return;
    }
    // The mount exists only in the namespace: a login without the header finds no mount.
    // (A namespaced token names its namespace itself, so revoke-self would reach it either way.)
    erase_revokes_in(Some("team-a"));
}

/// Gets a token through the git helper, checks it is live at Vault (in `namespace`), erases
/// it, and checks Vault no longer knows it.
fn erase_revokes_in(namespace: Option<&str>) {
    let (stack, bao) = setup("ci", namespace);
    let host = bao.addr.trim_start_matches("http://");
    let get = helper(&stack, "get", &format!("protocol=http\nhost={host}\n"));
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    let token = mayfly_tests::password_of(&String::from_utf8_lossy(&get.stdout));
    let lookup = |token: &str| {
        let request = bao.client.get(format!("{}/v1/auth/token/lookup-self", bao.addr)).header("X-Vault-Token", token);
        let request = match namespace {
            Some(namespace) => request.header("X-Vault-Namespace", namespace),
            None => request,
        };
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(lookup(&token), 200);
    let erase =
        helper(&stack, "erase", &format!("protocol=http\nhost={host}\nusername=x-access-token\npassword={token}\n"));
    assert!(erase.status.success(), "{}", String::from_utf8_lossy(&erase.stderr));
    assert_eq!(lookup(&token), 403, "erase revoked the token at Vault");
}

#[test]
#[cfg_attr(any(missing = "bao", missing = "git"), ignore = "needs bao, git: one is not installed")]
fn a_role_vault_refuses_is_one_line_with_vaults_own_words() {
    if !require_tool("bao") || !require_tool("git") {
        return;
    }
    let (stack, bao) = setup("deploy", None);
    let host = bao.addr.trim_start_matches("http://");
    let out = helper(&stack, "get", &format!("protocol=http\nhost={host}\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("password="), "no credential: {stdout}");
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("exchange `vault` refused: ") && lines[0].contains("role \"deploy\" could not be found"),
        "{lines:?}"
    );
}

#[test]
#[cfg_attr(missing = "bao", ignore = "needs bao, which is not installed")]
fn explain_knows_the_vault_kind_and_its_exchange_mode_logs_in_then_revokes() {
    if !require_tool("bao") {
        return;
    }
    let (stack, bao) = setup("ci", None);
    let out = Command::new(bin("mayfly"))
        .args(["explain", "git", &bao.addr, "--exchange"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("(vault, ") && text.contains("can revoke its tokens"), "{text}");
    assert!(text.contains(&format!("audience   {}", bao.addr)), "{text}");
    assert!(!text.contains("hvs."), "the token is never shown: {text}");
    let issued = stack.client_audit().into_iter().find(|l| l["outcome"] == "issued").expect("a real login");
    let accessor = issued["token_id"].as_str().expect("the token's accessor");
    assert!(!bao.accessor_alive(accessor), "revoked at once");
}

/// `bao` as [`run`] runs it.
fn bao_cli(stack: &Stack, bao: &Bao, args: &[&str]) -> Output {
    run(stack, bao, "bao", args)
}

/// The token helper wired by `mayfly setup`: `bao kv get` works with no token anywhere,
/// `bao login` keeps nothing, and the helper's `erase` revokes.
#[test]
#[cfg_attr(missing = "bao", ignore = "needs bao, which is not installed")]
fn the_bao_cli_gets_its_token_from_the_token_helper_and_never_stores_one() {
    if !require_tool("bao") {
        return;
    }
    let (stack, bao) = setup_for("vault", "ci", None);
    // `mayfly setup` names the helper in both CLIs' configs.
    let helper = bin("vault-token-helper-mayfly");
    let out = run(&stack, &bao, bin("mayfly"), &["setup", "--tools", "vault"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [".vault", ".bao"] {
        let text = std::fs::read_to_string(stack.home.join(file)).unwrap();
        assert_eq!(text, format!("token_helper = {:?}\n", helper.display().to_string()), "{file}");
    }
    let out = bao_cli(&stack, &bao, &["kv", "get", "-field=password", "secret/app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "opened-by-vault");
    let issued: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["outcome"] == "issued").collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(
        (issued[0]["tool"].as_str(), issued[0]["scope"].as_str()),
        (Some("vault"), Some(&*format!("vault:{}", bao.addr.trim_start_matches("http://"))))
    );
    let accessor = issued[0]["token_id"].as_str().unwrap().to_owned();
    assert!(bao.accessor_alive(&accessor));
    // The helper reads the CLI's own command line: an `-address` naming the same server is
    // taken, one naming another gets no token.
    let address = format!("-address={}", bao.addr);
    let out = bao_cli(&stack, &bao, &["kv", "get", &address, "-field=password", "secret/app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bao_cli(&stack, &bao, &["kv", "get", "-address=http://127.0.0.1:1", "secret/app"]);
    assert!(!out.status.success());
    let issued = stack.client_audit().into_iter().filter(|l| l["outcome"] == "issued").count();
    assert_eq!(issued, 1, "no token for another address");

    // A login's token is refused by the helper, so the CLI keeps it nowhere (it says so,
    // and shows that login's own token "for your records").
    let out = bao_cli(&stack, &bao, &["login", "-no-print", ROOT]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("never stores one"), "{stderr}");
    assert!(!stack.home.join(".vault-token").exists(), "no token file");
    let out = bao_cli(&stack, &bao, &["token", "lookup", "-format=json"]);
    let lookup: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(lookup["data"]["accessor"], accessor.as_str(), "still the route's token, not the login's");

    // The CLI runs no `erase` (not even for `token revoke -self`); run by hand, it revokes
    // at OpenBao, and the next command gets a fresh token.
    let erase =
        Command::new(&helper).arg("erase").env_clear().envs(stack.env()).env("VAULT_ADDR", &bao.addr).output().unwrap();
    assert!(erase.status.success() && erase.stdout.is_empty(), "{}", String::from_utf8_lossy(&erase.stderr));
    assert!(!bao.accessor_alive(&accessor), "erase revoked the token");
    let out = bao_cli(&stack, &bao, &["kv", "get", "-field=password", "secret/app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stack.home.join(".vault-token").exists());
    stack.assert_no_tokens_on_disk();
    let out = run(&stack, &bao, bin("mayfly"), &["setup", "--undo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stack.home.join(".vault").exists() && !stack.home.join(".bao").exists(), "undo removed both");
}

/// Inside `mayfly exec` the session names the token helper itself: `bao kv get` works
/// with no config and no token, and the token is revoked when the session ends.
#[test]
#[cfg_attr(missing = "bao", ignore = "needs bao, which is not installed")]
fn a_session_wires_bao_to_the_token_helper() {
    if !require_tool("bao") {
        return;
    }
    let (stack, bao) = setup_for("vault", "ci", None);
    let script = "set -e; test -z \"$VAULT_TOKEN\"; bao kv get -field=password secret/app; echo; \
         echo accessor=$(bao token lookup -format=json | sed -n 's/.*\"accessor\": \"\\([^\"]*\\)\".*/\\1/p')";
    let out = exec(&stack, "vault-helper", &bao, script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l == "opened-by-vault"), "{stdout}");
    let accessor = stdout.lines().find_map(|l| l.strip_prefix("accessor=")).filter(|a| !a.is_empty()).unwrap();
    assert!(!bao.accessor_alive(accessor), "revoked at the session's end");
    assert!(!stack.home.join(".vault-token").exists());
    stack.assert_no_tokens_on_disk();
}
