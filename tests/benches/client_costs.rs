//! What a helper costs around its exchange: a cold `get` beside the exchange's own time, a
//! refresh beside a cold `get` (on loopback, and with the exchange 10 ms away), and a
//! session's end with 1, 10 and 30 tokens beside one with none. Each pair runs
//! interleaved, and the medians are reported with their ratio.
//!
//! Run through `bench/run.sh`, which builds the release binaries.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mayfly_tests::{Options, Stack, bin};

/// Runs per measured command.
const RUNS: usize = 15;

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// One `git-credential-mayfly get` for a repository in a session, which must answer.
fn get(stack: &Stack, session: &str, path: &str) -> Duration {
    let request = format!("protocol=https\nhost={}\npath={path}\n", stack.git_host());
    let started = Instant::now();
    let mut child = Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .env("MAYFLY_SESSION", session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("password="));
    took
}

/// `mayfly exec --session SESSION -- /bin/true`: mostly the session's end.
fn end(stack: &Stack, session: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--", "/bin/true"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    took
}

/// Sleeps until 0.6 s before the expiry of the token the session was issued: inside its
/// one-second refresh margin, not yet expired.
fn sleep_until_inside_margin(stack: &Stack, session: &str) {
    let audit = stack.client_audit();
    let issued = audit.iter().find(|l| l["session"] == session && l["outcome"] == "issued").expect("issued");
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let expires = time::OffsetDateTime::parse(issued["expires"].as_str().unwrap(), rfc3339).unwrap();
    let wait = expires - Duration::from_millis(600) - time::OffsetDateTime::now_utc();
    std::thread::sleep(wait.try_into().unwrap_or_default());
}

/// Waits (up to five seconds) for the session's replaced token to be revoked by the
/// detached copy a refresh started.
fn wait_for_revocation(stack: &Stack, session: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let audit = stack.client_audit();
        if audit.iter().any(|l| l["session"] == session && l["outcome"] == "revoked") {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let lines: Vec<_> = stack.client_audit().into_iter().filter(|l| l["session"] == session).collect();
    panic!("the refresh of {session} revoked no token within five seconds: {lines:#?}");
}

fn report(what: &str, a: (&str, f64), b: (&str, f64)) {
    println!("{what}: {} {:.2} ms   {} {:.2} ms   ratio {:.2}", a.0, a.1, b.0, b.1, a.1 / b.1);
}

/// Median refresh and cold `get`, in ms. Both are measured after the same idle and one
/// unmeasured get, in alternating order, and each waits for the refresh's detached
/// revocation to finish, so neither pays for the other.
fn refresh_and_cold(short: &Stack, label: &str) -> (f64, f64) {
    let (mut refreshes, mut colds) = (Vec::new(), Vec::new());
    for i in 0..RUNS.min(10) {
        let session = format!("{label}-refresh-{i}");
        get(short, &session, "org/app.git");
        sleep_until_inside_margin(short, &session);
        // The first process after an idle pays for waking the machine: not measured.
        get(short, &format!("{label}-wake-{i}"), "org/app.git");
        let refresh = || {
            let took = get(short, &session, "org/app.git");
            wait_for_revocation(short, &session);
            took
        };
        let cold = || get(short, &format!("{label}-cold-{i}"), "org/app.git");
        if i % 2 == 0 {
            refreshes.push(refresh());
            colds.push(cold());
        } else {
            colds.push(cold());
            refreshes.push(refresh());
        }
    }
    (median(refreshes), median(colds))
}

/// A TCP relay on loopback to `upstream` that delivers every chunk `one_way` after it
/// arrived, in both directions (chunks queue, so a flight split across reads is delayed
/// once): a server that far away. Returns its `host:port`.
fn delaying_relay(upstream: &str, one_way: Duration) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let upstream = upstream.trim_end_matches('/').to_owned();
    let pass = move |mut from: TcpStream, mut to: TcpStream| {
        let (send, queue) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        std::thread::spawn(move || {
            for (due, chunk) in queue {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
        let mut buffer = vec![0; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if send.send((Instant::now() + one_way, buffer[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    };
    std::thread::spawn(move || {
        for client in listener.incoming().filter_map(Result::ok) {
            let Ok(server) = TcpStream::connect(&upstream) else { continue };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { continue };
            std::thread::spawn(move || pass(client, server));
            std::thread::spawn(move || pass(server2, client2));
        }
    });
    address
}

fn main() {
    let stack = Stack::new();
    let client = || stack.https_client();
    let audience = stack.git_server().base_url.clone();
    // Warm the subject token and the binaries' pages.
    get(&stack, "warm", "org/app.git");

    // A cold get (a session never seen: no cached token) beside the exchange alone, on a
    // fresh connection from this process.
    let (mut gets, mut exchanges) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        gets.push(get(&stack, &format!("cold-{i}"), "org/app.git"));
        let http = client();
        let started = Instant::now();
        mayfly_tests::exchange_token(&http, &stack.sts.url, &stack.issuer, &audience, "repo:org/app:read");
        exchanges.push(started.elapsed());
    }
    let (get_ms, exchange_ms) = (median(gets), median(exchanges));
    report("cold get / exchange", ("cold get", get_ms), ("exchange", exchange_ms));
    println!("cold get minus the exchange: {:.2} ms", get_ms - exchange_ms);

    // A refresh (the cached token inside its margin: exchange again, the old one handed
    // to a detached revocation) beside a cold get. Two-second tokens: a one-second margin,
    // entered 0.6 s before the token's expiry (whole seconds). On loopback, and again with
    // the exchange 10 ms away (a relay delaying each direction 5 ms), where the copy a
    // refresh starts overlaps the wait for the network as it would in CI.
    let short = Stack::with(Options { max_ttl: "2s", ..Options::default() });
    get(&short, "warm", "org/app.git");
    let (refreshes, colds) = refresh_and_cold(&short, "loopback");
    report("refresh / cold get", ("refresh", refreshes), ("cold get", colds));
    let relay = delaying_relay(short.sts.url.trim_start_matches("https://"), Duration::from_millis(5));
    let config = std::fs::read_to_string(short.home.join(".config/mayfly/config.toml")).unwrap();
    short.write_config_text(&config.replace(&short.sts.url, &format!("https://{relay}")));
    get(&short, "warm-relay", "org/app.git");
    let (refreshes, colds) = refresh_and_cold(&short, "remote");
    report("refresh / cold get, exchange 10 ms away", ("refresh", refreshes), ("cold get", colds));

    // A session's end with N tokens beside one with none: N repositories under `org/app`,
    // each its own token, all with the one scope the exchange grants.
    let route = stack.route("org/app", &["read"], "ci");
    assert!(route.contains("exchange = \"sts\""), "{route}");
    stack
        .write_config(&route.replace("exchange = \"sts\"", "exchange = \"sts\"\nscope = \"repo:org/app:{operation}\""));
    for n in [1, 10, 30] {
        let (mut full, mut empty) = (Vec::new(), Vec::new());
        for round in 0..5 {
            let session = format!("end-{n}-{round}");
            for k in 0..n {
                get(&stack, &session, &format!("org/app/r{k}.git"));
            }
            full.push(end(&stack, &session));
            let audit = stack.client_audit();
            let revoked = audit.iter().filter(|l| l["session"] == session.as_str() && l["outcome"] == "revoked");
            assert_eq!(revoked.count(), n, "every token of the session was revoked");
            empty.push(end(&stack, &format!("none-{n}-{round}")));
        }
        report(&format!("session end, {n} token(s) / none"), ("with", median(full)), ("none", median(empty)));
    }
}
