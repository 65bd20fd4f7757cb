//! The loopback redirect of a browser login (RFC 8252 §7.3): a listener on `127.0.0.1`
//! at a port the system picks, serving exactly one `GET /callback`. Anything else gets a
//! 404 and the listener keeps waiting, up to a bounded number of such requests; it ends at
//! the callback or at its deadline. A minimal HTTP/1.1 reader suffices: one request line
//! and headers, read with a cap on size and time, answered with `Connection: close`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The redirect's path.
pub(crate) const CALLBACK_PATH: &str = "/callback";
/// Requests other than the callback tolerated before giving up (a probe or a stray tab).
const MAX_STRAY: usize = 20;
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Longest a connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting listener looks for a connection.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The listener of one login.
pub(crate) struct Loopback {
    listener: TcpListener,
    redirect_uri: String,
}

/// The redirect as the browser delivered it: its query, and the connection to answer.
pub(crate) struct Callback {
    pub(crate) query: Vec<(String, String)>,
    stream: TcpStream,
}

impl Callback {
    /// The value of a query parameter; a parameter given twice reads as absent, so a
    /// second `state` or `code` cannot shadow the first.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        let mut values = self.query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next()?;
        values.next().is_none().then_some(first)
    }

    /// Answers the browser with a small page and closes the connection.
    pub(crate) fn reply(mut self, ok: bool, message: &str) {
        let (status, title) = if ok { ("200 OK", "Signed in") } else { ("400 Bad Request", "Sign-in failed") };
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>mayfly: {title}</title></head>\
             <body><h1>{title}</h1><p>{}</p></body></html>\n",
            html_escape(message)
        );
        let _ = respond(&mut self.stream, status, &page);
    }
}

impl Loopback {
    /// Binds `127.0.0.1:0` (never all interfaces: only this machine's browser may call).
    pub(crate) fn bind() -> Result<Self, String> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("cannot listen on a loopback port for the browser's redirect: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        Ok(Self { listener, redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}") })
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub(crate) fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the callback until `deadline`, answering anything else with a 404.
    pub(crate) fn wait(&self, deadline: Instant) -> Result<Callback, String> {
        let mut stray = 0;
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Err("no answer from the browser in time; run `mayfly login` again".into());
                    }
                    std::thread::sleep(ACCEPT_POLL);
                    continue;
                }
                Err(e) => return Err(format!("the loopback listener failed: {e}")),
            };
            match read_request(stream, deadline) {
                Some(callback) => return Ok(callback),
                None => {
                    stray += 1;
                    if stray >= MAX_STRAY {
                        return Err(format!(
                            "{stray} requests other than the sign-in's redirect reached the loopback listener; \
                             run `mayfly login` again"
                        ));
                    }
                }
            }
        }
    }
}

/// Reads one request; the callback is returned, anything else answered 404 (`None`).
fn read_request(mut stream: TcpStream, deadline: Instant) -> Option<Callback> {
    let patience = HEAD_TIMEOUT.min(deadline.saturating_duration_since(Instant::now())).max(Duration::from_millis(1));
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(patience)).is_err() {
        return None;
    }
    let _ = stream.set_write_timeout(Some(HEAD_TIMEOUT));
    let started = Instant::now();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || started.elapsed() >= patience {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    match callback_query(&head) {
        Some(query) => Some(Callback { query, stream }),
        None => {
            let _ = respond(&mut stream, "404 Not Found", "Not found\n");
            None
        }
    }
}

/// The query of `GET /callback?...`; `None` for any other request.
fn callback_query(head: &[u8]) -> Option<Vec<(String, String)>> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method != "GET" || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        return None;
    }
    Some(url::form_urlencoded::parse(query.as_bytes()).into_owned().collect())
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let kind = if body.starts_with("<!doctype") { "text/html" } else { "text/plain" };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Write)
}

fn html_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(port: u16, request: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn strays_get_404_and_the_callback_ends_the_wait() {
        let loopback = Loopback::bind().unwrap();
        let port: u16 = loopback.redirect_uri().split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
        assert_eq!(loopback.redirect_uri(), format!("http://127.0.0.1:{port}/callback"));
        let client = std::thread::spawn(move || {
            let stray = get(port, "GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n");
            let post = get(port, "POST /callback?code=c HTTP/1.1\r\nHost: x\r\n\r\n");
            let done = get(port, "GET /callback?code=c&state=s&state=t HTTP/1.1\r\nHost: x\r\n\r\n");
            (stray, post, done)
        });
        let callback = loopback.wait(Instant::now() + Duration::from_secs(10)).unwrap();
        assert_eq!(callback.param("code"), Some("c"));
        assert_eq!(callback.param("state"), None, "a repeated parameter reads as absent");
        callback.reply(true, "You can close this tab <now>.");
        let (stray, post, done) = client.join().unwrap();
        assert!(stray.starts_with("HTTP/1.1 404"), "{stray}");
        assert!(post.starts_with("HTTP/1.1 404"), "{post}");
        assert!(done.starts_with("HTTP/1.1 200") && done.contains("close this tab &lt;now&gt;."), "{done}");
    }

    #[test]
    fn the_wait_ends_at_its_deadline_or_after_too_many_strays() {
        let loopback = Loopback::bind().unwrap();
        let started = Instant::now();
        let err = loopback.wait(Instant::now() + Duration::from_millis(200)).err().unwrap();
        assert!(err.contains("in time"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let port: u16 = loopback.redirect_uri()[17..].split('/').next().unwrap().parse().unwrap();
        let client = std::thread::spawn(move || {
            for _ in 0..MAX_STRAY {
                get(port, "GET / HTTP/1.1\r\n\r\n");
            }
        });
        let err = loopback.wait(Instant::now() + Duration::from_secs(10)).err().unwrap();
        assert!(err.starts_with("20 requests other than"), "{err}");
        client.join().unwrap();
    }
}
