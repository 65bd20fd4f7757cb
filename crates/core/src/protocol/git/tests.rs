use super::*;

fn issued(scheme: Scheme) -> Issued {
    Issued {
        token: Secret::new("tok.en"),
        expires_at: Some(1_767_225_600),
        token_id: Some("jti-9".into()),
        scheme,
        username: "x-access-token".into(),
        from_cache: false,
    }
}

#[test]
fn parses_what_git_2_47_sends() {
    let input = b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=git.example.com:8443\npath=org/app.git\nwwwauth[]=Bearer realm=\"x\"\nwwwauth[]=Basic realm=\"y=z\"\n";
    let request = parse(input).unwrap();
    assert_eq!(request.protocol, "https");
    assert_eq!(request.host, "git.example.com:8443");
    assert_eq!(request.path.as_deref(), Some("org/app.git"));
    assert!(request.has_capability("authtype") && request.has_capability("state"));
    assert_eq!(request.wwwauth, vec!["Bearer realm=\"x\"", "Basic realm=\"y=z\""]);
}

#[test]
fn reads_to_eof_or_blank_line_and_ignores_unknown_keys() {
    let request = parse(b"protocol=https\nhost=h\nfuture_key=1\n\nhost=evil\n").unwrap();
    assert_eq!(request.host, "h");
    let request = parse(b"protocol=https\nhost=h").unwrap();
    assert_eq!(request.host, "h");
}

#[test]
fn list_keys_clear_on_empty_value_and_scalars_take_the_last() {
    let request =
        parse(b"protocol=https\nhost=h\nwwwauth[]=a\nwwwauth[]=\nwwwauth[]=b\nusername=u1\nusername=u2\n").unwrap();
    assert_eq!(request.wwwauth, vec!["b"]);
    assert_eq!(request.username.as_deref(), Some("u2"));
}

#[test]
fn hostile_inputs_are_refused() {
    let long = format!("protocol=https\nhost=h\nwwwauth[]={}\n", "a".repeat(MAX_LINE));
    let cases: Vec<(&[u8], ParseError)> = vec![
        (b"protocol=https\nhost=good.example\rhost=evil.example\n", ParseError::CarriageReturn(2)),
        (b"protocol=https\r\nhost=h\r\n", ParseError::CarriageReturn(1)),
        (b"protocol=https\nhost=h\0evil\n", ParseError::Nul(2)),
        (b"protocol=https\nhost=h\nhost=evil\n", ParseError::Duplicate("host")),
        (b"protocol=https\nprotocol=http\nhost=h\n", ParseError::Duplicate("protocol")),
        (b"protocol=https\nhost=h\npath=a\npath=b\n", ParseError::Duplicate("path")),
        (b"protocol=https\nhost=evil.example%0ahost=good.example\n", ParseError::EncodedControl("host")),
        (b"protocol=https\nhost=h\npath=x%0Dhost=y\n", ParseError::EncodedControl("path")),
        (b"protocol=https\nhost=h\nbare-token-line\n", ParseError::NoEquals(3)),
        (b"protocol=https\nhost=h\n=value\n", ParseError::BadKey(3)),
        (b"protocol=https\nhost=h\nke y=v\n", ParseError::BadKey(3)),
        (b"host=h\n", ParseError::MissingProtocol),
        (b"protocol=https\n", ParseError::MissingHost),
        (b"protocol=https\nhost=h\npassword=\xff\n", ParseError::NotUtf8(3)),
        (long.as_bytes(), ParseError::LineTooLong(3)),
    ];
    for (input, expected) in cases {
        assert_eq!(parse(input).unwrap_err(), expected, "{:?}", String::from_utf8_lossy(&input[..input.len().min(80)]));
    }
    let huge = vec![b'a'; MAX_INPUT + 1];
    assert_eq!(parse(&huge).unwrap_err(), ParseError::TooLarge);
}

#[test]
fn errors_never_echo_values() {
    let err = parse(b"protocol=https\nhost=h\npassword=s3cr3t\0\n").unwrap_err().to_string();
    assert!(!err.contains("s3cr3t"), "{err}");
    let err = parse(b"protocol=https\nhost=h\nghp_tokenlinewithoutequals\n").unwrap_err().to_string();
    assert!(!err.contains("ghp_"), "{err}");
}

#[test]
fn long_header_cannot_smuggle_a_host() {
    // git's t0303 "not confused by long header".
    let input = format!(
        "protocol=https\nhost=example.com\nwwwauth[]=basic realm={}host=victim.example.com\n",
        "a".repeat(1001)
    );
    let request = parse(input.as_bytes()).unwrap();
    assert_eq!(request.host, "example.com");
}

#[test]
fn modern_answer_is_ephemeral_bearer_with_expiry_and_state() {
    let request = parse(b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=h\n").unwrap();
    let out = String::from_utf8(answer(&request, &issued(Scheme::Bearer)).unwrap()).unwrap();
    assert_eq!(
        out,
        "capability[]=authtype\ncapability[]=state\nauthtype=Bearer\ncredential=tok.en\nephemeral=1\nstate[]=mayfly.token_id=jti-9\npassword_expiry_utc=1767225600\n"
    );
}

#[test]
fn modern_basic_answer_encodes_username_and_token() {
    let request = parse(b"capability[]=authtype\nprotocol=https\nhost=h\n").unwrap();
    let out = String::from_utf8(answer(&request, &issued(Scheme::Basic)).unwrap()).unwrap();
    let expected = STANDARD.encode("x-access-token:tok.en");
    assert_eq!(
        out,
        format!(
            "capability[]=authtype\nauthtype=Basic\ncredential={expected}\nephemeral=1\npassword_expiry_utc=1767225600\n"
        )
    );
}

#[test]
fn legacy_answer_without_capability_is_username_password() {
    let request = parse(b"protocol=https\nhost=h\n").unwrap();
    let out = String::from_utf8(answer(&request, &issued(Scheme::Bearer)).unwrap()).unwrap();
    assert_eq!(out, "username=x-access-token\npassword=tok.en\npassword_expiry_utc=1767225600\n");
    assert!(!out.contains("url="));
}

#[test]
fn answers_refuse_values_with_line_breaks() {
    let request = parse(b"protocol=https\nhost=h\n").unwrap();
    let mut bad = issued(Scheme::Bearer);
    bad.token = Secret::new("tok\nurl=https://evil");
    assert_eq!(answer(&request, &bad).unwrap_err(), WriteError("password"));
    bad.token = Secret::new("tok\rx");
    assert!(answer(&request, &bad).is_err());
}

fn run(args: &[&str], input: &[u8], env: Env) -> (i32, Vec<u8>) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let code = serve(&args, &mut &input[..], &mut out, env, &|| panic!("no ancestry for unrouted requests"));
    (code, out)
}

fn empty_config_env() -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let env = Env::from_pairs([("MAYFLY_CONFIG", config.display().to_string())]);
    (dir, env)
}

#[test]
fn store_unknown_and_unrouted_requests_print_nothing() {
    let (_dir, env) = empty_config_env();
    for action in ["store", "erase", "get", "capability", "frobnicate"] {
        let (code, out) = run(&[action], b"protocol=https\nhost=git.example.com\npassword=p\n", env.clone());
        assert_eq!((code, out.as_slice()), (0, &b""[..]), "{action}");
    }
    let (code, out) = run(&["get"], b"protocol=cert\nhost=\npath=/etc/cert.p12\n", env.clone());
    assert_eq!((code, out.len()), (0, 0));
}

#[test]
fn malformed_requests_print_nothing_and_fail() {
    let (_dir, env) = empty_config_env();
    for input in
        [&b"protocol=https\nhost=a\rb\n"[..], b"host=h\n", b"protocol=https\nhost=\n", b"protocol=https\nhost=a@b\n"]
    {
        let (code, out) = run(&["get"], input, env.clone());
        assert_eq!(code, 1);
        assert!(out.is_empty());
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn line() -> impl Strategy<Value = Vec<u8>> {
        let keys = prop::sample::select(vec![
            "protocol",
            "host",
            "path",
            "username",
            "password",
            "wwwauth[]",
            "capability[]",
            "state[]",
            "x",
        ]);
        let value = prop::collection::vec(prop::sample::select(b"ab.:/=%0aAdD\r\n\0\xff \x1b".to_vec()), 0..12);
        (keys, value).prop_map(|(k, v)| {
            let mut line = format!("{k}=").into_bytes();
            line.extend(v);
            line.push(b'\n');
            line
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever git (or an attacker) sends, the parser answers without panicking, and an
        /// accepted request never carries a byte that could start or end a protocol line.
        #[test]
        fn parser_never_panics_and_accepts_only_clean_fields(lines in prop::collection::vec(line(), 0..8), raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut input: Vec<u8> = lines.concat();
            input.extend(raw);
            if let Ok(request) = parse(&input) {
                for value in [Some(&request.protocol), Some(&request.host), request.path.as_ref(), request.username.as_ref()].into_iter().flatten() {
                    prop_assert!(!value.contains(['\r', '\n', '\0']));
                }
                for value in [Some(&request.protocol), Some(&request.host), request.path.as_ref()].into_iter().flatten() {
                    prop_assert!(!value.to_ascii_lowercase().contains("%0a"));
                }
            }
        }
    }
}

#[test]
fn each_refusal_gets_gits_answer() {
    let quit = |line: &str| Reply { code: 1, stdout: "quit=1\n".into(), stderr: Some(line.into()) };
    let answers: Vec<Reply> = crate::protocol::every_refusal().iter().map(refuse).collect();
    assert_eq!(
        answers,
        [
            Reply::default(),
            quit(
                "git did not send the repository path for https://h.example; tokens are bound to one repository, so set `git config --global credential.https://h.example.useHttpPath true`"
            ),
            quit("no token for https://h.example/org/app (git write): route `r` does not allow write"),
            Reply::line("the request is malformed"),
            Reply::default(),
        ]
    );
}
