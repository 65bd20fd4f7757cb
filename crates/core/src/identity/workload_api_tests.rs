use super::*;

/// `JWTSVIDResponse{svids: [{spiffe_id: "spiffe://x/y", svid: "h.p.s", hint: "internal"}]}`
/// as protobuf writes it: field 1 (length-delimited) holding the `JWTSVID`, whose fields
/// 1, 2 and 3 are length-delimited strings.
const ONE_SVID: &[u8] = b"\x0a\x1f\x0a\x0cspiffe://x/y\x12\x05h.p.s\x1a\x08internal";

#[test]
fn requests_are_the_bytes_protobuf_writes() {
    assert_eq!(encode_request(&["sts"], None), b"\x0a\x03sts");
    assert_eq!(encode_request(&["sts"], Some("")), b"\x0a\x03sts", "an empty proto3 string is not written");
    assert_eq!(
        encode_request(&["a", "b"], Some("spiffe://example.org/ci")),
        b"\x0a\x01a\x0a\x01b\x12\x17spiffe://example.org/ci"
    );
    let long = "a".repeat(300);
    let encoded = encode_request(&[&long], None);
    assert_eq!(&encoded[..3], b"\x0a\xac\x02", "300 as a two-byte varint");
    assert_eq!(frame(b"\x0a\x03sts"), b"\x00\x00\x00\x00\x05\x0a\x03sts");
}

#[test]
fn responses_are_read_field_by_field() {
    let svids = decode_response(ONE_SVID).unwrap();
    assert_eq!(svids, [JwtSvid { spiffe_id: "spiffe://x/y".into(), svid: "h.p.s".into(), hint: "internal".into() }]);
    assert!(decode_response(b"").unwrap().is_empty());
    // Unknown fields of every proto3 wire type are skipped, in both messages.
    let mut extended = b"\x20\x96\x01\x2d\x01\x02\x03\x04\x31\x01\x02\x03\x04\x05\x06\x07\x08\x3a\x01z".to_vec();
    extended.extend_from_slice(b"\x0a\x14\x20\x01\x12\x05h.p.s\x0a\x09spiffe://");
    let svids = decode_response(&extended).unwrap();
    assert_eq!((svids[0].spiffe_id.as_str(), svids[0].svid.as_str()), ("spiffe://", "h.p.s"));
    assert_eq!(format!("{:?}", svids[0]), r#"JwtSvid { spiffe_id: "spiffe://", hint: "", .. }"#, "no token in Debug");
}

#[test]
fn garbage_is_refused_not_misread() {
    for (bytes, why) in [
        (&b"\x0a"[..], "a varint runs past the end"),
        (b"\x0a\x05ab", "a field runs past the end"),
        (b"\x0b", "wire type 3 is not one proto3 writes"),
        (b"\x0a\x02\x12\x80", "a varint runs past the end"),
        (b"\x0a\x03\x12\x01\xff", "`svid` is not UTF-8"),
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "a varint is longer than ten bytes"),
        (b"<html>", "wire type 4 is not one proto3 writes"),
    ] {
        assert_eq!(decode_response(bytes).unwrap_err(), why, "{bytes:?}");
    }
}

fn answer(headers: &[(&'static str, &str)], body: Vec<u8>, trailers: &[(&'static str, &str)]) -> Answer {
    let map = |pairs: &[(&'static str, &str)]| {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect::<http::HeaderMap>()
    };
    let trailers = (!trailers.is_empty()).then(|| map(trailers));
    Answer { status: 200, headers: map(headers), body, trailers }
}

const GRPC: (&str, &str) = ("content-type", "application/grpc");

#[test]
fn answers_are_read_as_grpc() {
    let ok = answer(&[GRPC], frame(ONE_SVID), &[("grpc-status", "0")]);
    assert_eq!(read_answer(&ok).unwrap()[0].svid, "h.p.s");
    // A trailers-only answer: the status comes in the headers.
    let refused = answer(&[GRPC, ("grpc-status", "7"), ("grpc-message", "no identity issued")], Vec::new(), &[]);
    assert_eq!(read_answer(&refused).unwrap_err(), CallError::Refused("PermissionDenied (no identity issued)".into()));
    let encoded = answer(&[GRPC], Vec::new(), &[("grpc-status", "3"), ("grpc-message", "bad%20header%0A%1B[31mred")]);
    assert_eq!(
        read_answer(&encoded).unwrap_err(),
        CallError::Refused("InvalidArgument (bad header\u{fffd}\u{fffd}[31mred)".into()),
        "percent-decoded, and never a control character"
    );
    let unknown = answer(&[GRPC], Vec::new(), &[("grpc-status", "99")]);
    assert_eq!(read_answer(&unknown).unwrap_err(), CallError::Refused("status 99".into()));
}

#[test]
fn answers_that_are_not_grpc_are_garbage() {
    let garbage = |a: Answer| match read_answer(&a) {
        Err(CallError::Garbage(why)) => why,
        other => panic!("{other:?}"),
    };
    let mut html = answer(&[("content-type", "text/html")], b"<html>".to_vec(), &[]);
    assert_eq!(
        garbage(answer(&[("content-type", "text/html")], b"<html>".to_vec(), &[])),
        "no `content-type: application/grpc`: not a gRPC server"
    );
    html.status = 404;
    assert_eq!(garbage(html), "HTTP status 404, not a gRPC answer");
    assert_eq!(garbage(answer(&[GRPC], frame(ONE_SVID), &[])), "no `grpc-status`");
    assert_eq!(garbage(answer(&[GRPC], Vec::new(), &[("grpc-status", "0")])), "no message");
    let mut short = frame(ONE_SVID);
    short.pop();
    assert_eq!(
        garbage(answer(&[GRPC], short, &[("grpc-status", "0")])),
        "the message's length prefix does not match its body"
    );
    let mut compressed = frame(ONE_SVID);
    compressed[0] = 1;
    assert_eq!(
        garbage(answer(&[GRPC], compressed, &[("grpc-status", "0")])),
        "a compressed message, though none was offered"
    );
    assert_eq!(
        garbage(answer(&[GRPC], frame(b"\x0b"), &[("grpc-status", "0")])),
        "wire type 3 is not one proto3 writes"
    );
}

#[test]
fn addresses_follow_the_workload_endpoint_spec() {
    assert_eq!(Endpoint::parse("unix:///run/spire/agent.sock"), Ok(Endpoint::Unix("/run/spire/agent.sock".into())));
    assert_eq!(Endpoint::parse("unix:/run/spire/agent.sock"), Ok(Endpoint::Unix("/run/spire/agent.sock".into())));
    assert_eq!(Endpoint::parse("tcp://127.0.0.1:8000"), Ok(Endpoint::Tcp("127.0.0.1:8000".parse().unwrap())));
    assert_eq!(Endpoint::parse("tcp://[::1]:8000"), Ok(Endpoint::Tcp("[::1]:8000".parse().unwrap())));
    assert_eq!(Endpoint::parse("tcp://169.254.1.2:8000/"), Ok(Endpoint::Tcp("169.254.1.2:8000".parse().unwrap())));
    for (text, why) in [
        ("/run/spire/agent.sock", "not an address"),
        ("unix://host/run/agent.sock", "a `unix` address has no host"),
        ("unix:///", "a `unix` address needs an absolute socket path"),
        ("unix:///run/a.sock?x=1", "only a scheme and a path or address may be set"),
        ("unix:///run/a.sock#f", "only a scheme and a path or address may be set"),
        ("tcp://localhost:8000", "a `tcp` address needs an IP address, not a name"),
        ("tcp://127.0.0.1", "a `tcp` address needs a port"),
        ("tcp://127.0.0.1:8000/foo", "a `tcp` address has no path"),
        ("tcp://user@127.0.0.1:8000", "only a scheme and a path or address may be set"),
        ("http://127.0.0.1:8000", "the scheme is not `unix` or `tcp`"),
        ("tcp://10.0.0.1:8000", "`10.0.0.1` is not a loopback or link-local address"),
    ] {
        let err = Endpoint::parse(text).unwrap_err();
        assert!(err.starts_with(why), "{text}: {err}");
    }
}

/// A loopback TCP Workload API answering one call with `ONE_SVID`, reporting the request's
/// security header and body.
/// What the server saw: the security header and the request body.
type Seen = (Option<String>, Vec<u8>);

fn tcp_server() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<Seen>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (seen, told) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(stream).await.unwrap();
            let (request, mut respond) = connection.accept().await.unwrap().unwrap();
            let (parts, mut body) = request.into_parts();
            let mut data = Vec::new();
            while let Some(chunk) = body.data().await {
                data.extend_from_slice(&chunk.unwrap());
            }
            let header = parts.headers.get(SECURITY_HEADER.0).map(|v| v.to_str().unwrap().to_owned());
            seen.send((header, data)).unwrap();
            let response = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
            let mut stream = respond.send_response(response, false).unwrap();
            stream.send_data(Bytes::from(frame(ONE_SVID)), false).unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            stream.send_trailers(trailers).unwrap();
            // Serve the connection until the client is done with it.
            while connection.accept().await.is_some() {}
        });
    });
    (address, told)
}

#[test]
fn a_call_over_loopback_tcp_carries_the_header_and_reads_the_answer() {
    let (address, told) = tcp_server();
    let request = frame(&encode_request(&["sts"], None));
    let answer = call(&Endpoint::Tcp(address), request.clone()).unwrap();
    assert_eq!(read_answer(&answer).unwrap()[0].spiffe_id, "spiffe://x/y");
    assert_eq!(told.recv().unwrap(), (Some("true".to_owned()), request));
}
