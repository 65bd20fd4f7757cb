//! The `hf` shim: the real `hf upload` and `hf download` (huggingface_hub) against the Hub
//! stand-in, through a `hf` link to `mayfly-shim` first on `PATH` and a git route to the
//! Hub's trusted publishing exchange. The token is scoped to the one repository the
//! command names, lives only in hf's environment, and never replaces nor leaks through a
//! caller's own token; commands it cannot pin to one repository are refused before any
//! exchange.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mayfly_core::Fingerprint;
use mayfly_devstack::{HuggingFaceHub, RecordedRequest};
use mayfly_tests::{Stack, bin, mayfly_lines, require_tool};

use super::shims::{all_output, files_holding};

/// The `sub` of the stack's ID tokens.
const SUBJECT: &str = "repo:org/app:ref:refs/heads/main";
/// A caller's own Hub token, which mayfly must neither use nor let through to its route.
const CALLER_TOKEN: &str = "hf_caller0000000000000000000000000000";
/// What `acme/weights` holds for downloads.
const WEIGHTS: &[(&str, &[u8])] = &[("config.json", b"{\"layers\": 2}\n"), ("shards/part-0.bin", &[0, 1, 2, 255, 254])];

/// A Hub where the stack's workload publishes `acme/model`, `datasets/acme/data` and
/// (read-only) `acme/weights`, and someone else `acme/other`; a git route to it through a
/// `huggingface` exchange; and a `hf` shim first on `PATH`.
struct HubFixture {
    stack: Stack,
    hub: HuggingFaceHub,
    shims: PathBuf,
}

impl HubFixture {
    fn start() -> Self {
        let stack = Stack::new();
        let hub = HuggingFaceHub::start(stack.runtime(), stack.dir.path().join("hub"), &stack.ca, &stack.issuer)
            .expect("the Hub");
        hub.create_repo("acme/model", SUBJECT, false).unwrap();
        hub.create_repo("datasets/acme/data", SUBJECT, false).unwrap();
        hub.create_repo_with_files("acme/weights", SUBJECT, true, WEIGHTS).unwrap();
        hub.create_repo("acme/other", "repo:someone/else:ref:refs/heads/main", false).unwrap();
        stack.write_config(&format!(
            "[exchanges.hf]\nkind = \"huggingface\"\ntoken_endpoint = \"{}\"\nca_file = \"{}\"\ntimeout = \"5s\"\n\n[[routes]]\ntool = \"git\"\nhost = \"{}\"\nidentity = \"ci\"\nexchange = \"hf\"\n",
            hub.token_url(),
            stack.ca.ca_cert.display(),
            hub.host(),
        ));
        let shims = stack.dir.path().join("shims");
        std::fs::create_dir_all(&shims).unwrap();
        std::os::unix::fs::symlink(bin("mayfly-shim"), shims.join("hf")).unwrap();
        Self { stack, hub, shims }
    }

    /// `hf ARGS` through the shim in the work directory, against `endpoint`, trusting the
    /// stack's CA, with these extra variables.
    fn hf_at(&self, endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!("{}:{}", self.shims.display(), std::env::var("PATH").unwrap());
        Command::new("hf")
            .args(args)
            .current_dir(&self.stack.work)
            .env_clear()
            .envs(self.stack.env())
            .env("PATH", path)
            .env("HF_ENDPOINT", endpoint)
            .env("SSL_CERT_FILE", &self.stack.ca.ca_cert)
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .envs(env.iter().copied())
            .output()
            .expect("hf runs")
    }

    /// `hf ARGS` against the Hub.
    fn hf(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.hf_at(&self.hub.base_url, args, env)
    }

    /// Writes a file in the work directory.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.stack.work.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The `resource` of each exchange the Hub was asked for.
    fn exchanged(&self) -> Vec<String> {
        let exchanges = self.hub.requests().into_iter().filter(|r| r.path == "/oauth/token");
        exchanges.map(|r| r.json()["resource"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// The Hub's API calls (the exchange and hf's public agent look-up left out), each with
    /// the repository its bearer token was minted for: `None` without a token the Hub
    /// minted.
    fn api_calls(&self) -> Vec<(RecordedRequest, Option<String>)> {
        let resources: BTreeMap<String, String> = self
            .hub
            .minted()
            .into_iter()
            .filter_map(|token| Some((format!("Bearer {}", Fingerprint::of(&token)), self.hub.resource_of(&token)?)))
            .collect();
        self.hub
            .requests()
            .into_iter()
            .filter(|r| r.path != "/oauth/token" && r.path != "/api/agent-harnesses")
            .map(|r| {
                let resource = r.header("authorization").and_then(|a| resources.get(a).cloned());
                (r, resource)
            })
            .collect()
    }

    /// Every API call carried a token minted for `resource`, and some were made.
    fn assert_every_call_for(&self, resource: &str) {
        let calls = self.api_calls();
        assert!(!calls.is_empty(), "hf reached the Hub");
        for (request, granted) in &calls {
            assert_eq!(granted.as_deref(), Some(resource), "{} {}", request.method, request.path);
        }
    }

    /// The audit's `issued` lines, as (scope, operation).
    fn issued(&self) -> Vec<(String, String)> {
        let audit = self.stack.client_audit();
        let issued = audit.iter().filter(|l| l["outcome"] == "issued");
        issued
            .map(|l| (l["scope"].as_str().unwrap_or("").into(), l["operation"].as_str().unwrap_or("").into()))
            .collect()
    }

    /// No token the Hub minted is in `output`, in any file the stack wrote, or in the audit
    /// log; no JWT-shaped bytes on disk either.
    fn assert_no_hub_tokens_leaked(&self, output: &Output) {
        let all = all_output(output);
        for token in self.hub.minted() {
            assert!(!all.contains(&token), "a Hub token in hf's output");
            for dir in [self.stack.dir.path(), self.stack.runtime_dir.path()] {
                assert_eq!(files_holding(dir, &token), Vec::<PathBuf>::new(), "a Hub token on disk");
            }
        }
        let audit = std::fs::read_to_string(self.stack.home.join(".local/state/mayfly/audit.jsonl")).unwrap();
        assert!(!audit.contains("hf_jwt_"), "no Hub token in the audit log");
        self.stack.assert_no_tokens_on_disk();
    }
}

/// The bytes of every file under `dir` (hf's `.cache` left out), by path relative to it.
fn tree_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if relative == ".cache" {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, into);
            } else {
                into.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

fn expected(files: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    files.iter().map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec())).collect()
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "{}", all_output(out));
}

#[test]
#[cfg_attr(missing = "hf", ignore = "needs hf, which is not installed")]
fn hf_upload_sends_a_file_and_a_folder_with_a_token_for_the_one_repository() {
    if !require_tool("hf") {
        return;
    }
    let fixture = HubFixture::start();
    fixture.write("model.bin", b"weights\n");
    // A caller's own tokens stay the caller's: the Hub sees only the one mayfly minted.
    let own = [("HF_TOKEN", CALLER_TOKEN), ("HUGGING_FACE_HUB_TOKEN", CALLER_TOKEN)];
    let out = fixture.hf(&["upload", "acme/model", "model.bin"], &own);
    assert_success(&out);
    assert_eq!(fixture.exchanged(), ["acme/model"], "one exchange, for the repository");
    fixture.assert_every_call_for("acme/model");
    let calls: Vec<(String, String)> =
        fixture.api_calls().into_iter().map(|(r, _)| (r.method.clone(), r.path.clone())).collect();
    assert!(calls.contains(&("POST".into(), "/api/models/acme/model/commit/main".into())), "{calls:?}");
    assert_eq!(fixture.hub.files("acme/model"), expected(&[("model.bin", b"weights\n")]));
    assert_eq!(fixture.issued(), [("acme/model".to_owned(), "write".to_owned())]);
    let caller = format!("Bearer {}", Fingerprint::of(CALLER_TOKEN));
    assert!(fixture.hub.requests().iter().all(|r| r.header("authorization") != Some(caller.as_str())));
    fixture.assert_no_hub_tokens_leaked(&out);

    fixture.write("folder/config.json", b"{}\n");
    fixture.write("folder/sub/notes.txt", b"notes\n");
    let out = fixture.hf(&["upload", "acme/model", "folder", "run-1"], &own);
    assert_success(&out);
    let files = fixture.hub.files("acme/model");
    assert_eq!(files.get("run-1/config.json").map(Vec::as_slice), Some(&b"{}\n"[..]), "{files:?}");
    assert_eq!(files.get("run-1/sub/notes.txt").map(Vec::as_slice), Some(&b"notes\n"[..]), "{files:?}");
    let exchanged = fixture.exchanged();
    assert!((1..=2).contains(&exchanged.len()) && exchanged.iter().all(|r| r == "acme/model"), "{exchanged:?}");
    fixture.assert_every_call_for("acme/model");
    assert!(fixture.hub.requests().iter().all(|r| r.header("authorization") != Some(caller.as_str())));
    fixture.assert_no_hub_tokens_leaked(&out);
}

#[test]
#[cfg_attr(missing = "hf", ignore = "needs hf, which is not installed")]
fn hf_download_fetches_the_repository_with_a_read_token_that_cannot_upload() {
    if !require_tool("hf") {
        return;
    }
    let fixture = HubFixture::start();
    let out = fixture.hf(&["download", "acme/weights", "--local-dir", "snapshot"], &[]);
    assert_success(&out);
    assert_eq!(tree_of(&fixture.stack.work.join("snapshot")), expected(WEIGHTS), "the bytes match");
    assert_eq!(fixture.exchanged(), ["acme/weights"]);
    fixture.assert_every_call_for("acme/weights");
    let resolved = fixture.api_calls().into_iter().filter(|(r, _)| r.path.contains("/resolve/")).count();
    assert!(resolved >= WEIGHTS.len(), "each file came from the Hub over HTTP");
    let issued = fixture.issued();
    assert!(!issued.is_empty() && issued.iter().all(|i| i == &("acme/weights".into(), "read".into())), "{issued:?}");

    let out = fixture.hf(&["download", "acme/weights", "shards/part-0.bin", "--local-dir", "one"], &[]);
    assert_success(&out);
    assert_eq!(tree_of(&fixture.stack.work.join("one")), expected(&WEIGHTS[1..]));
    fixture.assert_every_call_for("acme/weights");
    fixture.assert_no_hub_tokens_leaked(&out);

    // The publisher only reads: the Hub refuses the upload its token cannot make.
    fixture.write("model.bin", b"weights\n");
    let out = fixture.hf(&["upload", "acme/weights", "model.bin"], &[]);
    assert!(!out.status.success());
    assert!(all_output(&out).contains("403 Forbidden"), "{}", all_output(&out));
    assert_eq!(fixture.hub.files("acme/weights"), expected(WEIGHTS), "nothing written");
    let commits = fixture.hub.requests().into_iter().filter(|r| r.path.ends_with("/commit/main")).count();
    assert_eq!(commits, 0, "the Hub refused before any commit");
    fixture.assert_no_hub_tokens_leaked(&out);
}

#[test]
#[cfg_attr(missing = "hf", ignore = "needs hf, which is not installed")]
fn a_value_hf_would_drop_from_argv_cannot_turn_the_download_to_another_repository() {
    if !require_tool("hf") {
        return;
    }
    let fixture = HubFixture::start();
    // hf drops a bare `--json` before click parses argv: as given, hf would read
    // `--revision acme/weights` and download `acme/other` with a token for acme/weights.
    let out = fixture.hf(&["download", "--revision", "--json", "acme/weights", "acme/other", "--local-dir", "x"], &[]);
    assert_eq!(fixture.exchanged(), ["acme/weights"]);
    fixture.assert_every_call_for("acme/weights");
    for (request, _) in fixture.api_calls() {
        let path = request.path.as_str();
        assert!(
            path.starts_with("/api/models/acme/weights/") || path.starts_with("/acme/weights/"),
            "hf asked for another repository: {} {path}",
            request.method
        );
    }
    assert!(fixture.hub.files("acme/other").is_empty());
    fixture.assert_no_hub_tokens_leaked(&out);
}

#[test]
#[cfg_attr(missing = "hf", ignore = "needs hf, which is not installed")]
fn a_dataset_upload_asks_for_the_dataset_resource() {
    if !require_tool("hf") {
        return;
    }
    let fixture = HubFixture::start();
    fixture.write("rows.csv", b"a,b\n1,2\n");
    let out = fixture.hf(&["upload", "acme/data", "rows.csv", "--repo-type", "dataset"], &[]);
    assert_success(&out);
    assert_eq!(fixture.exchanged(), ["datasets/acme/data"]);
    fixture.assert_every_call_for("datasets/acme/data");
    assert_eq!(fixture.hub.files("datasets/acme/data"), expected(&[("rows.csv", b"a,b\n1,2\n")]));
    assert!(fixture.hub.files("acme/data").is_empty(), "not a model repository");
}

#[test]
#[cfg_attr(missing = "hf", ignore = "needs hf, which is not installed")]
fn uploads_the_shim_cannot_pin_to_one_repository_are_refused_before_any_exchange() {
    if !require_tool("hf") {
        return;
    }
    let fixture = HubFixture::start();
    fixture.write("model.bin", b"weights\n");
    fixture.write("outside.txt", b"not for the Hub\n");
    fixture.write("leaky/ok.txt", b"ok\n");
    std::os::unix::fs::symlink(fixture.stack.work.join("outside.txt"), fixture.stack.work.join("leaky/link.txt"))
        .unwrap();
    let refused: [&[&str]; 5] = [
        &["upload", "acme/model", "/proc/self/environ", "env.txt"],
        &["upload", "acme/model", "leaky"],
        &["upload", "acme/model", "model.bin", "--every", "5"],
        &["upload", "acme/model", "model.bin", "--token", "x"],
        &["upload", "datasets/acme/data", "model.bin"],
    ];
    // The same shim uploads what it can pin, so a refusal below is the shim's choice.
    assert_success(&fixture.hf(&["upload", "acme/model", "model.bin"], &[]));
    let (seen, issued, files) = (fixture.hub.requests().len(), fixture.issued(), fixture.hub.files("acme/model"));
    for args in refused {
        let out = fixture.hf(args, &[]);
        assert!(!out.status.success(), "hf {args:?} was refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for hf {args:?}: {stderr}");
        assert!(lines[0].starts_with("mayfly: "), "{stderr}");
        assert_eq!(fixture.hub.requests().len(), seen, "nothing reached the Hub for hf {args:?}");
    }
    assert_eq!(fixture.issued(), issued, "no token issued for a refused command");
    assert_eq!(fixture.hub.files("acme/model"), files);
    assert!(fixture.hub.files("datasets/acme/data").is_empty());
}

#[test]
#[cfg_attr(missing = "hf", ignore = "needs hf, which is not installed")]
fn a_repository_whose_publisher_does_not_match_is_refused_by_the_hub() {
    if !require_tool("hf") {
        return;
    }
    let fixture = HubFixture::start();
    fixture.write("model.bin", b"weights\n");
    let out = fixture.hf(&["upload", "acme/other", "model.bin"], &[]);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lines[0].contains("invalid_grant"), "{lines:?}");
    assert_eq!(fixture.exchanged(), ["acme/other"]);
    assert!(fixture.api_calls().is_empty(), "hf never ran without a token");
    assert!(fixture.hub.files("acme/other").is_empty());
}

#[test]
#[cfg_attr(missing = "hf", ignore = "needs hf, which is not installed")]
fn without_a_route_hf_runs_untouched_with_the_callers_own_token() {
    if !require_tool("hf") {
        return;
    }
    let fixture = HubFixture::start();
    let unrouted = HuggingFaceHub::start(
        fixture.stack.runtime(),
        fixture.stack.dir.path().join("unrouted"),
        &fixture.stack.ca,
        &fixture.stack.issuer,
    )
    .expect("a second Hub");
    unrouted.create_repo_with_files("acme/weights", SUBJECT, true, WEIGHTS).unwrap();
    let out = fixture.hf_at(
        &unrouted.base_url,
        &["download", "acme/weights", "config.json", "--local-dir", "plain"],
        &[("HF_TOKEN", CALLER_TOKEN)],
    );
    // The caller's token is not one the Hub minted: hf itself fails, with the Hub's 401.
    assert!(!out.status.success());
    assert!(mayfly_lines(&out.stderr).is_empty(), "{}", all_output(&out));
    assert!(all_output(&out).contains("401"), "{}", all_output(&out));
    let requests = unrouted.requests();
    assert!(requests.iter().any(|r| r.path.contains("/resolve/")), "hf ran and reached the Hub: {requests:?}");
    let caller = format!("Bearer {}", Fingerprint::of(CALLER_TOKEN));
    assert!(requests.iter().any(|r| r.header("authorization") == Some(caller.as_str())), "hf sent the caller's own");
    for request in &requests {
        assert!(request.path != "/oauth/token", "no exchange for a Hub with no route");
        let authorization = request.header("authorization");
        assert!(authorization.is_none() || authorization == Some(caller.as_str()), "{request:?}");
    }
    assert!(fixture.hub.requests().is_empty(), "the routed Hub was not asked either");
    assert!(unrouted.minted().is_empty() && fixture.hub.minted().is_empty());
}
