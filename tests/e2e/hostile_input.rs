//! Every helper, fed malformed and hostile input while routes that could mint a token are
//! configured: a clear error, no token on stdout, never a panic.

use std::process::Output;

use mayfly_tests::{Stack, bin};

struct Case {
    helper: &'static str,
    args: Vec<String>,
    stdin: Vec<u8>,
    env: Vec<(&'static str, String)>,
}

fn case(helper: &'static str, args: &[&str], stdin: &[u8]) -> Case {
    Case { helper, args: args.iter().map(|a| a.to_string()).collect(), stdin: stdin.to_vec(), env: Vec::new() }
}

fn run(stack: &Stack, case: &Case) -> Output {
    assert_cmd::Command::new(bin(case.helper))
        .args(&case.args)
        .env_clear()
        .envs(stack.env())
        .envs(case.env.iter().cloned())
        .write_stdin(case.stdin.clone())
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap()
}

#[test]
fn every_helper_refuses_hostile_input_without_leaking_or_panicking() {
    let stack = Stack::builder().all().start();
    let big = vec![b'a'; 2 << 20];
    let kube_host = stack.kube().base_url.clone();
    let registry_host = stack.registry().base_url.trim_start_matches("https://").to_owned();
    let index = stack.cargo().index_url.clone();
    let exec_info = |server: &str| {
        format!(
            r#"{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{{"cluster":{{"server":"{server}"}}}}}}"#
        )
    };
    let mut cases = vec![
        case(
            "git-credential-mayfly",
            &["get"],
            format!("protocol=https\nhost={}\rhost=evil\n", stack.git_host()).as_bytes(),
        ),
        case("git-credential-mayfly", &["get"], &big),
        case("terraform-credentials-mayfly", &["get", &format!("{registry_host}\u{1b}[2J")], b""),
        case("terraform-credentials-mayfly", &["get", &format!("{registry_host}/evil")], b""),
        case("terraform-credentials-mayfly", &["teleport", &registry_host], b""),
        case("terraform-credentials-mayfly", &["store", &registry_host], &big),
        case("terraform-credentials-mayfly", &[], b""),
        case("mayfly-aws-credential", &["deploy\nx"], b""),
        case("mayfly-aws-credential", &["a", "b"], b""),
        case("mayfly-kube-credential", &["--server"], b""),
        case("docker-credential-mayfly", &["teleport"], b""),
        case("docker-credential-mayfly", &["store"], br#"{"ServerURL":"r","Username":"u","Secret":"s"}"#),
        case("mayfly-kube-credential", &["--bogus", &kube_host], b""),
    ];
    for info in [
        "{not json".to_owned(),
        "x".repeat(100_000),
        exec_info(&format!("{kube_host}\\u0000")),
        exec_info("https://evil.example@127.0.0.1:1"),
    ] {
        let mut kube = case("mayfly-kube-credential", &[], b"");
        kube.env.push(("KUBERNETES_EXEC_INFO", info));
        cases.push(kube);
    }
    for case in &cases {
        let out = run(&stack, case);
        let shown = format!("{} {:?}", case.helper, case.args);
        assert_eq!(out.status.code(), Some(1), "{shown}: exit {:?}", out.status);
        // The docker protocol puts a request's error text on stdout, one line; the others,
        // and docker for what is not a request of its protocol, print nothing there.
        let stdout_lines = String::from_utf8_lossy(&out.stdout).lines().count();
        let expected = usize::from(case.helper == "docker-credential-mayfly" && case.args == ["store"]);
        assert!(
            stdout_lines == expected && !mayfly_core::contains_jwt(&out.stdout),
            "{shown}: printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{shown}: {stderr}");
        assert!(
            stderr.starts_with("mayfly: ")
                && !stderr.contains('\u{1b}')
                && !mayfly_core::contains_jwt(stderr.as_bytes()),
            "{shown}: {stderr}"
        );
    }

    // docker: control characters and oversize URLs get the not-found text, never a token.
    for input in [format!("{}\r\nevil", stack.oci_port()).into_bytes(), big.clone(), b"127.0.0.1:1\x1b[2J".to_vec()] {
        let out = run(&stack, &case("docker-credential-mayfly", &["get"], &input));
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "credentials not found in native keychain\n");
    }

    // cargo keeps the session open: every bad line gets an `Err`, never a token.
    let mut lines = vec![
        "{not json".to_owned(),
        "x".repeat(2 << 20),
        format!(r#"{{"v":1,"registry":{{"index-url":"{index}\u0000"}},"kind":"get","operation":"read"}}"#),
        format!(r#"{{"v":1,"registry":{{"index-url":"{index}"}},"kind":"get","operation":"launch"}}"#),
        format!(
            r#"{{"v":1,"registry":{{"index-url":"{index}"}},"kind":"get","operation":"publish","name":"../../etc"}}"#
        ),
        format!(
            r#"{{"v":1,"registry":{{"index-url":"{index}"}},"kind":"get","operation":"publish","name":"evil\nname"}}"#
        ),
    ];
    lines.push(String::new());
    let out = run(&stack, &case("cargo-credential-mayfly", &["--cargo-plugin"], lines.join("\n").as_bytes()));
    assert_eq!(out.status.code(), Some(0));
    let answers: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers[0], serde_json::json!({"v": [1]}));
    assert!(answers.len() > 1 && answers[1..].iter().all(|a| a.get("Err").is_some()), "{answers:?}");
    assert_eq!(stack.sts_issued(), 0, "nothing hostile reached the exchange");
}
