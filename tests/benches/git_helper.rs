//! `get` latency of `git-credential-mayfly` beside its peers, measured by hyperfine in one
//! run and reported as ratios (absolute times drift between machines; ratios do not).
//!
//! Run through `bench/run.sh`, which installs hyperfine and builds the release binaries.

use std::path::Path;
use std::process::Command;

use mayfly_tests::{Stack, bin};
use serde_json::Value;

fn main() {
    let stack = Stack::new();
    let dir = stack.dir.path().join("bench");
    // git's credential-cache refuses a socket directory others can read.
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir).unwrap();
    let helper = bin("git-credential-mayfly");
    let routed = dir.join("routed.txt");
    let unrouted = dir.join("unrouted.txt");
    let cached = dir.join("cache-input.txt");
    std::fs::write(&routed, format!("capability[]=authtype\ncapability[]=state\nprotocol=https\nhost={}\npath=org/app.git\n", stack.git_host())).unwrap();
    std::fs::write(&unrouted, "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=unconfigured.example.com\npath=org/app.git\n").unwrap();
    std::fs::write(&cached, "protocol=https\nhost=peer.example.com\n").unwrap();

    // Warm mayfly's cache with one real exchange, and git's credential-cache daemon with
    // one stored credential.
    let warm = Command::new(&helper).arg("get").env_clear().envs(stack.env()).stdin(std::fs::File::open(&routed).unwrap()).output().unwrap();
    assert!(warm.status.success() && !warm.stdout.is_empty(), "warm-up failed: {}", String::from_utf8_lossy(&warm.stderr));
    let exec_path = String::from_utf8(Command::new("git").arg("--exec-path").output().unwrap().stdout).unwrap();
    let cache_helper = Path::new(exec_path.trim()).join("git-credential-cache");
    let socket = dir.join("cache.sock");
    let store = format!("printf 'protocol=https\\nhost=peer.example.com\\nusername=u\\npassword=p\\n' | {} --socket {} store", cache_helper.display(), socket.display());
    assert!(Command::new("sh").args(["-c", &store]).env_clear().envs(stack.env()).status().unwrap().success());

    // hyperfine takes one --input per run: one run per command, back to back.
    let cache_get = format!("{} --socket {} get", cache_helper.display(), socket.display());
    let mayfly_get = format!("{} get", helper.display());
    let measure = |name: &str, input: &Path, command: &str| -> f64 {
        let json = dir.join(format!("{}.json", name.replace(['/', ' '], "-")));
        let status = Command::new("hyperfine")
            .args(["-N", "--warmup", "20", "--runs", "300", "--style", "basic", "--export-json"])
            .arg(&json)
            .args(["--input", input.to_str().unwrap(), "-n", name, command])
            .env_clear()
            .envs(stack.env())
            .status()
            .expect("hyperfine is installed (bench/run.sh installs it)");
        assert!(status.success());
        let results: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        results["results"][0]["median"].as_f64().unwrap()
    };
    let cached_get = measure("mayfly cached get", &routed, &mayfly_get);
    let unconfigured = measure("mayfly unconfigured host", &unrouted, &mayfly_get);
    let peer = measure("git credential-cache get", &cached, &cache_get);
    let floor = measure("/bin/true", &cached, "/bin/true");
    assert_eq!(stack.sts_issued(), 1, "every measured mayfly get was a cache hit");
    let _ = Command::new(&cache_helper).args(["--socket", socket.to_str().unwrap(), "exit"]).env_clear().envs(stack.env()).status();

    println!("\nmedians: mayfly cached {:.2} ms, unconfigured {:.2} ms, git credential-cache {:.2} ms, /bin/true {:.2} ms", cached_get * 1e3, unconfigured * 1e3, peer * 1e3, floor * 1e3);
    println!("ratio  cached get / git credential-cache get  = {:.2}  (target <= 1.00)", cached_get / peer);
    println!("ratio  cached get / /bin/true                 = {:.2}", cached_get / floor);
    println!("ratio  unconfigured host / /bin/true          = {:.2}  (target <= 1.15)", unconfigured / floor);
}
