//! `get` latency of `git-credential-mayfly` beside its peers, measured by hyperfine in one
//! run and reported as ratios (absolute times drift between machines; ratios do not).
//!
//! Run through `bench/run.sh`, which installs hyperfine and builds the release binaries.

use std::path::Path;
use std::process::Command;

use mayfly_tests::{Stack, bin};
use serde_json::Value;

/// Rounds per comparison, and runs per command in each round.
const ROUNDS: usize = 7;
const RUNS: &str = "200";

fn main() {
    let stack = Stack::new();
    let dir = stack.dir.path().join("bench");
    // git's credential-cache refuses a socket directory others can read.
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir).unwrap();
    let helper = bin("git-credential-mayfly");
    let routed = dir.join("routed.txt");
    let unrouted = dir.join("unrouted.txt");
    let request = format!(
        "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost={}\npath=org/app.git\n",
        stack.git_host()
    );
    std::fs::write(&routed, &request).unwrap();
    std::fs::write(
        &unrouted,
        "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=unconfigured.example.com\npath=org/app.git\n",
    )
    .unwrap();

    // Warm mayfly's cache with one real exchange, and git's credential-cache daemon with
    // one stored credential.
    let warm = Command::new(&helper)
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .stdin(std::fs::File::open(&routed).unwrap())
        .output()
        .unwrap();
    assert!(
        warm.status.success() && !warm.stdout.is_empty(),
        "warm-up failed: {}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let exec_path = String::from_utf8(Command::new("git").arg("--exec-path").output().unwrap().stdout).unwrap();
    let cache_helper = Path::new(exec_path.trim()).join("git-credential-cache");
    let socket = dir.join("cache.sock");
    // The same request both helpers answer from memory: one input file serves both.
    let store = format!(
        "printf 'protocol=https\\nhost={}\\npath=org/app.git\\nusername=u\\npassword=p\\n' | {} --socket {} store",
        stack.git_host(),
        cache_helper.display(),
        socket.display()
    );
    assert!(Command::new("sh").args(["-c", &store]).env_clear().envs(stack.env()).status().unwrap().success());

    // With MAYFLY_BENCH_CALLGRIND=FILE, also count the instructions of one cached get:
    // repeatable where wall-clock times are not.
    if let Ok(out) = std::env::var("MAYFLY_BENCH_CALLGRIND") {
        let status = Command::new("valgrind")
            .args(["--tool=callgrind", &format!("--callgrind-out-file={out}")])
            .arg(&helper)
            .arg("get")
            .env_clear()
            .envs(stack.env())
            .stdin(std::fs::File::open(&routed).unwrap())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("valgrind is installed");
        assert!(status.success());
    }

    // hyperfine takes one --input per run, so each comparison is a pair sharing its input
    // (/bin/true ignores it). Timing on shared machines drifts within seconds, so each pair
    // runs in several short rounds and the ratio reported is the median of the rounds'.
    let cache_get = format!("{} --socket {} get", cache_helper.display(), socket.display());
    let mayfly_get = format!("{} get", helper.display());
    let measure = |label: &str, input: &Path, commands: [(&str, &str); 2]| -> (f64, f64, f64) {
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            let json = dir.join(format!("{label}-{round}.json"));
            let mut hyperfine = Command::new("hyperfine");
            hyperfine
                .args(["-N", "--warmup", "20", "--runs", RUNS, "--style", "none", "--export-json"])
                .arg(&json)
                .arg("--input")
                .arg(input);
            for (name, command) in commands {
                hyperfine.args(["-n", name, command]);
            }
            let status = hyperfine
                .env_clear()
                .envs(stack.env())
                .status()
                .expect("hyperfine is installed (bench/run.sh installs it)");
            assert!(status.success());
            let results: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            let [a, b] = [0, 1].map(|i| results["results"][i]["median"].as_f64().unwrap());
            rounds.push((a / b, a, b));
        }
        rounds.sort_by(|x, y| x.0.total_cmp(&y.0));
        rounds[rounds.len() / 2]
    };
    let (cached_ratio, cached_get, peer) =
        measure("cached", &routed, [("mayfly cached get", &mayfly_get), ("git credential-cache get", &cache_get)]);
    let (unconfigured_ratio, unconfigured, floor) =
        measure("unconfigured", &unrouted, [("mayfly unconfigured host", &mayfly_get), ("/bin/true", "/bin/true")]);
    let floor_bin = std_floor(&dir);
    let floor_cmd = floor_bin.display().to_string();
    let (std_ratio, unconfigured_again, std_floor) =
        measure("std-floor", &unrouted, [("mayfly unconfigured host", &mayfly_get), ("std-only reader", &floor_cmd)]);
    assert_eq!(stack.sts_issued(), 1, "every measured mayfly get was a cache hit");
    let _ = Command::new(&cache_helper)
        .args(["--socket", socket.to_str().unwrap(), "exit"])
        .env_clear()
        .envs(stack.env())
        .status();

    println!("\nmedian round ({ROUNDS} rounds of {RUNS} runs per command):");
    println!("  mayfly cached get {:.3} ms   git credential-cache get {:.3} ms", cached_get * 1e3, peer * 1e3);
    println!("  mayfly unconfigured host {:.3} ms   /bin/true {:.3} ms", unconfigured * 1e3, floor * 1e3);
    println!("ratio  cached get / git credential-cache get = {cached_ratio:.2}  (target <= 1.00)");
    println!(
        "  mayfly unconfigured host {:.3} ms   std-only reader {:.3} ms",
        unconfigured_again * 1e3,
        std_floor * 1e3
    );
    println!("ratio  unconfigured host / /bin/true         = {unconfigured_ratio:.2}");
    println!("ratio  unconfigured host / std-only reader   = {std_ratio:.2}  (target <= 1.15)");
}

/// The floor an unconfigured `get` is held to: a Rust program that uses only std, reads
/// its request from stdin and exits, built the way install.sh builds the helpers (the
/// same static-pie flags, optimisation, LTO, abort on panic, stripped), so the ratio
/// measures mayfly's own work and not the cost of starting any Rust binary.
fn std_floor(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("floor.rs");
    std::fs::write(
        &source,
        "use std::io::Read;\nfn main() {\n    let mut request = String::new();\n    let _ = std::io::stdin().read_to_string(&mut request);\n    std::hint::black_box(&request);\n}\n",
    )
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let flags = Command::new("sh").arg(root.join("release/rustflags.sh")).output().unwrap();
    assert!(flags.status.success());
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().unwrap().stdout).unwrap();
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned();
    let out = dir.join("std-floor");
    let status = Command::new("rustc")
        .args(["--edition", "2024", "-C", "opt-level=3", "-C", "lto=fat", "-C", "codegen-units=1", "-C", "panic=abort"])
        .args(["-C", "strip=symbols", "--target", &host])
        .args(String::from_utf8(flags.stdout).unwrap().split_whitespace())
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("rustc is installed");
    assert!(status.success(), "the std-only floor builds");
    out
}
