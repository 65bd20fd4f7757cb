//! The hf shim's command-line reading, staging and environment.

use std::cell::Cell;
use std::ffi::OsString;
use std::path::Path;

use super::*;
use crate::protocol::shim::Runner;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn parsed(args: &[&str]) -> Result<Option<Command>, Refusal> {
    parse(&strings(args), &Env::default())
}

fn refused(args: &[&str]) -> String {
    match parsed(args) {
        Err(Refusal::Failed(why)) => why,
        other => panic!("{args:?} was not refused: {other:?}"),
    }
}

#[test]
fn upload_writes_and_download_reads_the_named_repository() {
    let up = parsed(&["upload", "acme/model", "weights.bin", "--commit-message", "x"]).unwrap().unwrap();
    assert_eq!(
        (up.operation, up.resource.as_str(), up.hub.as_str()),
        (Operation::Write, "acme/model", "https://huggingface.co/")
    );
    let down = parsed(&["download", "acme/model", "config.json", "a/b.json", "--local-dir", "out"]).unwrap().unwrap();
    assert_eq!((down.operation, down.resource.as_str()), (Operation::Read, "acme/model"));
    for (args, resource) in [
        (&["upload", "acme/data", ".", "--repo-type", "dataset"][..], "datasets/acme/data"),
        (&["download", "--type=space", "acme/demo"], "spaces/acme/demo"),
        (&["download", "acme/k", "--repo-type=kernel"], "kernels/acme/k"),
        (&["download", "acme/m", "--repo-type", "dataset", "--repo-type", "model"], "acme/m"),
        (&["upload", "--private", "--create-pr", "acme/x.y_z-1", "f"], "acme/x.y_z-1"),
        (&["download", "--", "acme/m", "config.json"], "acme/m"),
    ] {
        assert_eq!(parsed(args).unwrap().unwrap().resource, resource, "{args:?}");
    }
}

#[test]
fn other_commands_and_help_get_no_token() {
    for args in [
        &[][..],
        &["auth", "whoami"],
        &["repos", "create", "acme/x"],
        &["--version"],
        &["-v", "upload", "acme/x"],
        &["upload", "--help"],
        &["download", "acme/x", "-h"],
        &["cp", "a", "hf://acme/x"],
    ] {
        assert_eq!(parsed(args), Ok(None), "{args:?}");
    }
}

#[test]
fn tokens_unknown_options_and_schedules_are_refused() {
    assert!(refused(&["upload", "acme/x", "f", "--token", "hf_x"]).contains("`--token` is not taken"));
    assert!(refused(&["download", "--token=hf_x", "acme/x"]).contains("`--token` is not taken"));
    assert!(refused(&["upload", "acme/x", "--every", "5"]).contains("`--every` is not taken"));
    assert!(refused(&["upload", "acme/x", "--every=0.1"]).contains("`--every` is not taken"));
    assert!(refused(&["upload", "acme/x", "--local-dir", "d"]).contains("the option `--local-dir` is not taken"));
    assert!(refused(&["download", "acme/x", "--commit-message", "m"]).contains("`--commit-message` is not taken"));
    assert!(refused(&["download", "acme/x", "-q"]).contains("`-q` is not taken"));
    assert!(refused(&["download", "acme/x", "--tok", "t"]).contains("`--tok` is not taken"));
    assert!(refused(&["upload", "acme/x", "--create-pr=yes"]).contains("takes no value"));
    assert!(refused(&["download", "acme/x", "--revision"]).contains("has no value"));
    assert!(refused(&["download", "acme/x", "--repo-type", "Model"]).contains("not model, dataset, space or kernel"));
    assert!(refused(&["download", "acme/x", "--repo-type=bucket"]).contains("not model, dataset, space or kernel"));
    assert!(refused(&["upload", "acme/x", "a", "b", "c"]).contains("REPO_ID [LOCAL_PATH] [PATH_IN_REPO]"));
    assert!(refused(&["download", "--include", "*.json"]).contains("no repository named"));
}

#[test]
fn repository_ids_are_exactly_ns_slash_name() {
    assert!(refused(&["download", "datasets/acme/data"]).contains("`--repo-type dataset`"));
    assert!(refused(&["upload", "spaces/acme/demo", "."]).contains("`--repo-type space`"));
    assert!(refused(&["download", "models/acme/m"]).contains("`--repo-type model`"));
    assert!(refused(&["download", "hf://datasets/acme/data"]).contains("not an hf:// URI"));
    for bad in [
        "acme",
        "acme/x/y",
        "acme/..",
        "../x",
        "acme/a..b",
        "acme/%2e%2e",
        "acme/x%2fy",
        "acme//x",
        "/acme/x",
        "acme/x/",
        ".acme/x",
        "acme/x y",
        "acme/x?y",
        "",
    ] {
        assert!(refused(&["download", "--", bad]).contains("is not a repository id"), "{bad}");
    }
}

#[test]
fn the_hub_is_hf_endpoint_or_the_staging_hub() {
    let hub =
        |pairs: &[(&str, &str)]| parse(&strings(&["download", "acme/x"]), &Env::from_pairs(pairs.iter().copied()));
    assert_eq!(
        hub(&[("HF_ENDPOINT", "https://127.0.0.1:8443")]).unwrap().unwrap().hub.as_str(),
        "https://127.0.0.1:8443/"
    );
    assert_eq!(
        hub(&[("HF_ENDPOINT", "https://hub.example/mirror/")]).unwrap().unwrap().hub.as_str(),
        "https://hub.example/mirror/"
    );
    assert_eq!(hub(&[("HF_ENDPOINT", "")]).unwrap().unwrap().hub.as_str(), "https://huggingface.co/");
    let staging = hub(&[("HF_ENDPOINT", "https://hub.example"), ("HUGGINGFACE_CO_STAGING", "yes")]);
    assert_eq!(staging.unwrap().unwrap().hub.as_str(), "https://hub-ci.huggingface.co/", "as the library picks it");
    let not_staging = hub(&[("HF_ENDPOINT", "https://hub.example"), ("HUGGINGFACE_CO_STAGING", "0")]);
    assert_eq!(not_staging.unwrap().unwrap().hub.as_str(), "https://hub.example/");
    for bad in ["ftp://hub.example", "https://user@hub.example", "hub.example", "https://hub.example/?x=1"] {
        assert!(hub(&[("HF_ENDPOINT", bad)]).is_err(), "{bad}");
    }
}

#[test]
fn upload_paths_default_as_hf_2_4_resolves_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model"), "m").unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/w.bin"), "w").unwrap();
    let paths = |args: &[&str]| {
        let command = parse(&strings(args), &Env::default()).unwrap().unwrap();
        upload_paths(&command, dir.path())
    };
    let upload = |local: &str, in_repo: &str| Upload { local: local.into(), path_in_repo: in_repo.into() };
    assert_eq!(paths(&["upload", "acme/model"]), Ok(upload("model", "model")), "the file named as the repository");
    assert_eq!(paths(&["upload", "acme/data"]), Ok(upload("data", ".")), "the folder named as the repository");
    assert_eq!(paths(&["upload", "acme/x", "data/w.bin"]), Ok(upload("data/w.bin", "w.bin")), "a file keeps its name");
    assert_eq!(paths(&["upload", "acme/x", "data"]), Ok(upload("data", ".")), "a folder goes to the root");
    assert_eq!(paths(&["upload", "acme/x", "data", "sub/dir"]), Ok(upload("data", "sub/dir")));
    let missing = paths(&["upload", "acme/absent"]).unwrap_err().to_string();
    assert!(missing.contains("`absent` is not a file or folder here"), "{missing}");
    for glob in ["*.bin", "data/w?.bin", "data/[w].bin"] {
        let why = paths(&["upload", "acme/x", glob]).unwrap_err().to_string();
        assert!(why.contains("not taken as a pattern"), "{why}");
    }
    // hf takes a path that exists literally, glob characters and all.
    std::fs::write(dir.path().join("w[1].bin"), "w").unwrap();
    assert_eq!(paths(&["upload", "acme/x", "w[1].bin"]), Ok(upload("w[1].bin", "w[1].bin")));
    assert_eq!(paths(&["upload", "acme/x", "data/"]), Ok(upload("data/", ".")));
    for not_a_folder in ["model/", "absent/"] {
        let why = paths(&["upload", "acme/x", not_a_folder]).unwrap_err().to_string();
        assert!(why.contains("ends in `/` but is not a folder"), "{why}");
    }
}

/// The argv hf runs with for `args`: the staged copy `/stage/f` for an upload.
fn hf_argv(args: &[&str]) -> Vec<String> {
    let command = parsed(args).unwrap().unwrap();
    let argv = match command.operation {
        Operation::Write => staged_args(&command, Path::new("/stage/f"), "in/repo"),
        _ => command.download_argv(),
    };
    argv.into_iter().map(|a| a.into_string().unwrap()).collect()
}

#[test]
fn hf_runs_with_options_as_name_value_tokens_then_a_double_dash_and_the_positionals() {
    let args = ["upload", "--repo-type", "dataset", "acme/x", "--commit-message=m", "local", "--private"];
    assert_eq!(
        hf_argv(&args),
        ["upload", "--repo-type=dataset", "--commit-message=m", "--private", "--", "acme/x", "/stage/f", "in/repo"]
    );
    let args = ["download", "acme/x", "a.json", "--local-dir", "out", "--", "b.json"];
    assert_eq!(hf_argv(&args), ["download", "--local-dir=out", "--", "acme/x", "a.json", "b.json"]);
}

#[test]
fn a_value_that_looks_like_an_option_stays_the_options_value() {
    // A `--` given as a value is the value: `--every=0.5` after it stays a positional
    // (refused: PATH_IN_REPO cannot begin with `-`), never an option hf would read.
    let why = refused(&["upload", "--commit-message", "--", "acme/x", "f", "--", "--every=0.5"]);
    assert!(why.contains("cannot begin with `-`"), "{why}");
    assert_eq!(
        hf_argv(&["upload", "--commit-message", "--", "acme/x", "f"]),
        ["upload", "--commit-message=--", "--", "acme/x", "/stage/f", "in/repo"]
    );
    // hf drops a bare `--json` before click reads argv: `--revision --json` would make
    // hf download the next word. As one token, it is the revision.
    assert_eq!(
        hf_argv(&["download", "--revision", "--json", "acme/allowed", "evil/target"]),
        ["download", "--revision=--json", "--", "acme/allowed", "evil/target"]
    );
    for flag in ["-q", "--quiet", "--format", "--no-truncate"] {
        let argv = hf_argv(&["download", "--include", flag, "acme/allowed", "x"]);
        assert_eq!(argv, ["download", &format!("--include={flag}"), "--", "acme/allowed", "x"]);
    }
}

#[test]
fn paths_in_the_repository_cannot_begin_with_a_dash() {
    for args in [
        &["upload", "acme/x", "f", "--", "-odd"][..],
        &["download", "acme/x", "--", "--json"],
        &["download", "acme/x", "-"],
    ] {
        assert!(refused(args).contains("cannot begin with `-`"), "{args:?}");
    }
    assert_eq!(hf_argv(&["upload", "acme/x", "-"]), ["upload", "--", "acme/x", "/stage/f", "in/repo"]);
}

/// [`stage`] in the system's temporary directory.
fn stage_in(local: &str, cwd: &Path) -> Result<(tempfile::TempDir, std::path::PathBuf), Refusal> {
    stage(local, cwd, &std::env::temp_dir())
}

/// The files under `dir`, relative, with their contents.
fn tree(dir: &Path) -> Files {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_folder_is_staged_as_a_private_copy_of_its_regular_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub/.git")).unwrap();
    std::fs::create_dir_all(data.join(".cache/huggingface")).unwrap();
    std::fs::write(data.join("a.txt"), "a").unwrap();
    std::fs::write(data.join("sub/b.bin"), "b").unwrap();
    std::fs::write(data.join(".cache/keep"), "k").unwrap();
    // hf leaves these out of every upload, so the copy does too, links and all.
    std::os::unix::fs::symlink("/proc/self/environ", data.join("sub/.git/env")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", data.join(".cache/huggingface/env")).unwrap();
    let (stage_dir, copy) = stage_in("data", dir.path()).unwrap();
    assert_eq!(copy, stage_dir.path().join("data"));
    assert_eq!(std::fs::metadata(stage_dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
    let expected = [("a.txt", "a"), (".cache/keep", "k"), ("sub/b.bin", "b")];
    let mut expected: Files = expected.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())).collect();
    expected.sort();
    assert_eq!(tree(&copy), expected);
    let kept = stage_dir.path().to_owned();
    drop(stage_dir);
    assert!(!kept.exists(), "the staging directory goes with hf's exit");
    let (_dir, one) = stage_in("data/sub/b.bin", dir.path()).unwrap();
    assert_eq!(std::fs::read(&one).unwrap(), b"b");
    assert_eq!(one.file_name().unwrap(), "b.bin");
    let (_dir, here) = stage_in(".", &data.join("sub")).unwrap();
    assert_eq!(tree(&here), [("b.bin".to_owned(), b"b".to_vec())]);
    // A folder that holds the temporary directory is copied without the copy.
    let (inside, copy) = stage(".", &data.join("sub"), &data.join("sub")).unwrap();
    assert!(inside.path().starts_with(data.join("sub")));
    assert_eq!(tree(&copy), [("b.bin".to_owned(), b"b".to_vec())]);
}

#[test]
fn links_devices_fifos_and_kernel_files_are_not_staged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("ok"), "ok").unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", data.join("env.txt")).unwrap();
    let why = stage_in("data", dir.path()).unwrap_err().to_string();
    assert!(why.contains("`data/env.txt` is a symbolic link"), "{why}");
    std::fs::remove_file(data.join("env.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), data.join("loop")).unwrap();
    let why = stage_in("data", dir.path()).unwrap_err().to_string();
    assert!(why.contains("`data/loop` is a symbolic link"), "{why}");
    std::fs::remove_file(data.join("loop")).unwrap();
    let fifo = data.join("pipe");
    nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).unwrap();
    let why = stage_in("data", dir.path()).unwrap_err().to_string();
    assert!(why.contains("`data/pipe` is a FIFO"), "{why}");
    let why = stage_in("data/pipe", dir.path()).unwrap_err().to_string();
    assert!(why.contains("`data/pipe` is a FIFO"), "{why}");
    std::fs::remove_file(&fifo).unwrap();
    let socket = std::os::unix::net::UnixListener::bind(data.join("sock")).unwrap();
    let why = stage_in("data", dir.path()).unwrap_err().to_string();
    assert!(why.contains("`data/sock` is a socket"), "{why}");
    drop(socket);
    std::fs::remove_file(data.join("sock")).unwrap();
    std::os::unix::fs::symlink(&data, dir.path().join("link")).unwrap();
    for top in ["link", "link/", "link/."] {
        let why = stage_in(top, dir.path()).unwrap_err().to_string();
        assert!(why.contains("is a symbolic link"), "{top}: {why}");
    }
    for special in ["/proc/self/environ", "/proc/self/root/proc/self/environ", "/dev/null", "/dev/fd/0", "/sys/kernel"]
    {
        let why = stage_in(special, dir.path()).unwrap_err().to_string();
        assert!(why.contains("which is not uploaded"), "{special}: {why}");
    }
    assert!(stage_in("data", dir.path()).is_ok(), "the folder stages once only regular files are left");
}

#[test]
fn open_regular_refuses_a_link_and_a_kernel_file_by_what_it_opened() {
    // The race: the entry was a regular file when checked, and is a link when opened.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("env.txt")).unwrap();
    let parent = nix::dir::Dir::open(dir.path(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    let why = open_regular(&parent, OsStr::new("env.txt")).unwrap_err();
    assert!(why.contains("is a symbolic link"), "{why}");
    // And a kernel file reached another way is refused by what the descriptor is on.
    let proc = nix::dir::Dir::open("/proc/self", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    let why = open_regular(&proc, OsStr::new("environ")).unwrap_err();
    assert!(why.contains("kernel file system"), "{why}");
    std::fs::write(dir.path().join("ok"), "ok").unwrap();
    assert!(open_regular(&parent, OsStr::new("ok")).is_ok());
}

#[test]
fn the_token_goes_in_hf_token_with_the_hub_pinned_and_python_quiet() {
    let hub = url::Url::parse("https://127.0.0.1:8443/").unwrap();
    let vars = token_vars(&hub, "hf_jwt_x".into());
    assert_eq!(
        vars,
        [
            ("HF_TOKEN".to_owned(), "hf_jwt_x".to_owned()),
            ("HF_ENDPOINT".to_owned(), "https://127.0.0.1:8443".to_owned()),
            ("PYTHONNOUSERSITE".to_owned(), "1".to_owned()),
        ]
    );
    let env = Env::from_pairs([
        ("PYTHONPATH", "/evil"),
        ("PYTHONSTARTUP", "/evil.py"),
        ("PYTHONWARNINGS", "ignore::evil.Warning"),
        ("PYTHONHOME", "/evil"),
        ("HF_HOME", "/home/u/.hf"),
        ("PATH", "/bin"),
        ("SSL_CERT_FILE", "/ca.pem"),
    ]);
    let gone = unset(&env);
    for name in [
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONWARNINGS",
        "PYTHONHOME",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE",
        "HF_OIDC_ID_TOKEN",
        "HUGGINGFACE_CO_STAGING",
    ] {
        assert!(gone.iter().any(|g| g == name), "{name} stays");
    }
    // The caller's trust store and proxy stay (the same user is not a boundary: README);
    // `SSLKEYLOGFILE` goes from every step that holds a token (`process::environ`).
    for name in ["HF_HOME", "PATH", "SSL_CERT_FILE", "HF_TOKEN"] {
        assert!(!gone.iter().any(|g| g == name), "{name} goes");
    }
}

type Vars = Vec<(String, String)>;
/// Files, relative, with their contents.
type Files = Vec<(String, Vec<u8>)>;

/// Records what would run, and reads the staged upload while "hf" runs.
#[derive(Default)]
struct Recorder {
    ran: Vec<(Step, Vars, Files)>,
    execed: Vec<(Step, Vars)>,
}

impl Runner for Recorder {
    fn run(&mut self, step: &Step, vars: &[(String, String)]) -> Result<i32, String> {
        let staged = Path::new(&step.args[step.args.len() - 2]).to_owned();
        let files =
            if staged.is_dir() { tree(&staged) } else { vec![(String::new(), std::fs::read(&staged).unwrap())] };
        self.ran.push((step.clone(), vars.to_vec(), files));
        Ok(3)
    }
    fn output(&mut self, _: &Step, _: &[(String, String)]) -> Option<String> {
        None
    }
    fn exec(&mut self, steps: &[Step], vars: &[(String, String)]) -> String {
        self.execed.push((steps[0].clone(), vars.to_vec()));
        "execed".into()
    }
}

/// A config with a git route for `host` to a Hugging Face exchange, and the env naming it.
fn routed(dir: &Path, host: &str, pairs: &[(&str, &str)]) -> Env {
    let config = dir.join("config.toml");
    let text = format!(
        "[identities.ci]\nkind = \"github-actions\"\n\n[exchanges.hf]\nkind = \"huggingface\"\n\n\
         [[routes]]\ntool = \"git\"\nhost = \"{host}\"\nidentity = \"ci\"\nexchange = \"hf\"\n"
    );
    std::fs::write(&config, text).unwrap();
    let mut all = vec![("MAYFLY_CONFIG".to_owned(), config.display().to_string())];
    all.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Env::from_pairs(all)
}

fn hf_step(args: &[&str]) -> Step {
    Step {
        program: "/opt/hf/bin/hf".into(),
        args: args.iter().map(OsString::from).collect(),
        dir: None,
        unset: Vec::new(),
    }
}

#[test]
fn an_upload_runs_on_the_staged_copy_with_the_token_and_a_download_execs_with_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), "weights").unwrap();
    let env = routed(dir.path(), "hub.example", &[("HF_ENDPOINT", "https://hub.example"), ("PYTHONPATH", "/evil")]);
    let asked = std::cell::RefCell::new(Vec::new());
    let mint = |need: &Need| {
        asked.borrow_mut().push((need.operation, need.package.clone(), need.registry.to_string()));
        Ok(Some(token_vars(&need.registry, "hf_jwt_x".into())))
    };
    let mut runner = Recorder::default();
    let upload = hf_step(&["upload", "acme/model", "w.bin", "--repo-type", "dataset"]);
    assert_eq!(run(&upload, &env, dir.path(), &mint, &mut runner), Ok(Some(3)));
    let (step, vars, files) = &runner.ran[0];
    assert_eq!(files, &[(String::new(), b"weights".to_vec())], "hf reads the copy");
    assert_eq!(&step.args[..4], &["upload", "--repo-type=dataset", "--", "acme/model"].map(OsString::from));
    assert_eq!(step.args[5], "w.bin", "the file keeps its name in the repository");
    assert!(!Path::new(&step.args[4]).exists(), "the copy is gone once hf exits");
    assert!(step.unset.iter().any(|v| v == "PYTHONPATH") && step.unset.iter().any(|v| v == "HF_OIDC_RESOURCE"));
    assert!(vars.contains(&("HF_ENDPOINT".into(), "https://hub.example".into())));
    let download = hf_step(&["download", "acme/model", "config.json"]);
    let result = run(&download, &env, dir.path(), &mint, &mut runner);
    assert_eq!(result, Err(Refusal::Failed("execed".into())), "hf replaces the shim");
    assert_eq!(runner.execed[0].0.args, ["download", "--", "acme/model", "config.json"].map(OsString::from));
    assert!(runner.execed[0].1.contains(&("HF_TOKEN".into(), "hf_jwt_x".into())));
    assert_eq!(
        asked.into_inner(),
        [
            (Operation::Write, Some("datasets/acme/model".into()), "https://hub.example/".into()),
            (Operation::Read, Some("acme/model".into()), "https://hub.example/".into()),
        ]
    );
}

#[test]
fn unrouted_hubs_run_untouched_and_refusals_mint_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), "weights").unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("env.txt")).unwrap();
    let minted = Cell::new(0);
    let mint = |_: &Need| {
        minted.set(minted.get() + 1);
        Ok(Some(Vec::new()))
    };
    let mut runner = Recorder::default();
    let elsewhere = routed(dir.path(), "hub.example", &[("HF_ENDPOINT", "https://other.example")]);
    let upload = hf_step(&["upload", "acme/model", "w.bin"]);
    assert_eq!(run(&upload, &elsewhere, dir.path(), &mint, &mut runner), Ok(None), "no route: hf as it is");
    let default_hub = routed(dir.path(), "hub.example", &[]);
    assert_eq!(run(&upload, &default_hub, dir.path(), &mint, &mut runner), Ok(None), "huggingface.co has no route");
    let token = hf_step(&["upload", "acme/model", "w.bin", "--token", "hf_x"]);
    assert_eq!(run(&token, &elsewhere, dir.path(), &mint, &mut runner), Ok(None), "hf's own options, unrouted");
    let env = routed(dir.path(), "hub.example", &[("HF_ENDPOINT", "https://hub.example")]);
    assert_eq!(run(&hf_step(&["auth", "whoami"]), &env, dir.path(), &mint, &mut runner), Ok(None));
    for args in [
        &["upload", "acme/model", "env.txt", "env.txt"][..],
        &["upload", "acme/model", "/proc/self/environ", "env.txt"],
        &["upload", "acme/model", "w.bin", "--token", "hf_x"],
        &["download", "datasets/acme/data"],
    ] {
        let result = run(&hf_step(args), &env, dir.path(), &mint, &mut runner);
        assert!(matches!(result, Err(Refusal::Failed(_))), "{args:?}: {result:?}");
    }
    assert_eq!(minted.get(), 0, "nothing was minted");
    assert!(runner.ran.is_empty() && runner.execed.is_empty());
}

#[test]
fn the_hf_shim_is_wanted_for_git_routes_to_a_hugging_face_exchange_only() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_hf(dir.path());
    let path = bin.display().to_string();
    let shim = dir.path().join("mayfly-shim");
    let config = |exchange: &str| {
        let text = format!(
            "[identities.ci]\nkind = \"github-actions\"\n\n[exchanges.x]\n{exchange}\n\n\
             [[routes]]\ntool = \"git\"\nhost = \"hub.example\"\nidentity = \"ci\"\nexchange = \"x\"\n"
        );
        crate::Config::parse(&text, Path::new("t.toml")).unwrap()
    };
    let hugging_face = config("kind = \"huggingface\"");
    assert_eq!(super::super::wanted(&hugging_face, &path, &shim), ["hf"]);
    let other = config("kind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example/token\"");
    assert!(super::super::wanted(&other, &path, &shim).is_empty(), "a git route to another exchange");
}

#[test]
fn the_shim_runs_other_hf_commands_as_they_are_and_refuses_before_running_hf() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_hf(dir.path());
    let pairs = [("HF_ENDPOINT", "https://hub.example"), ("PATH", bin.to_str().unwrap()), ("PYTHONPATH", "/p")];
    let env = routed(dir.path(), "hub.example", &pairs);
    let shim = dir.path().join("mayfly-shim");
    let run = |args: &[&str], runner: &mut Recorder| {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        super::super::run(super::super::Family::Hf, &args, env.clone(), dir.path(), &shim, &Vec::new, runner)
    };
    let mut runner = Recorder::default();
    assert_eq!(run(&["auth", "whoami"], &mut runner), Err(Refusal::Failed("execed".into())));
    let (step, vars) = &runner.execed[0];
    assert_eq!((step.program.clone(), step.args.clone()), (bin.join("hf"), vec!["auth".into(), "whoami".into()]));
    assert!(vars.is_empty() && step.unset.is_empty(), "untouched: {vars:?} {:?}", step.unset);
    let mut runner = Recorder::default();
    let refused = run(&["upload", "acme/x", "--token=hf_x"], &mut runner);
    assert!(matches!(&refused, Err(Refusal::Failed(why)) if why.contains("`--token` is not taken")), "{refused:?}");
    assert!(runner.execed.is_empty() && runner.ran.is_empty(), "hf did not run");
}

/// A directory in `dir` holding an executable `hf`.
fn fake_hf(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("hf"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(bin.join("hf"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}
