//! Refusing requests whose length two servers could read differently.
//!
//! hyper reads a request with both `Content-Length` and `Transfer-Encoding` as chunked and
//! drops the length before the proxy sees the request, which is safe for hyper but hides
//! a smuggling attempt. This wrapper follows the request stream a client sends (each head,
//! then its body by its framing) and marks the connection when a head carries both; the
//! proxy then answers `400` and closes it instead of forwarding anything. Where it cannot
//! follow (a head too large or malformed, a CONNECT or upgrade), it stops looking and
//! leaves the stream to hyper, which refuses malformed heads itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads larger than this are not followed (hyper refuses them, `431`).
const MAX_HEAD: usize = 512 * 1024;

/// Where in the request stream the next byte belongs.
#[derive(Debug)]
enum Framing {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkEnd,
    Trailers(Vec<u8>),
    /// Not followed any further.
    Off,
}

/// A client stream whose requests are checked for two lengths as hyper reads them.
pub(super) struct Guarded<S> {
    inner: S,
    framing: Framing,
    ambiguous: Arc<AtomicBool>,
}

impl<S> Guarded<S> {
    /// The stream, and the flag that is set (for good) once a request carries two lengths.
    pub(super) fn new(inner: S) -> (Self, Arc<AtomicBool>) {
        let ambiguous = Arc::new(AtomicBool::new(false));
        (Self { inner, framing: Framing::Head(Vec::new()), ambiguous: ambiguous.clone() }, ambiguous)
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.framing {
                Framing::Off => return,
                Framing::Head(head) => {
                    let (&byte, rest) = data.split_first().expect("not empty");
                    data = rest;
                    // Empty lines before a request are skipped, as hyper does.
                    if head.is_empty() && (byte == b'\r' || byte == b'\n') {
                        continue;
                    }
                    head.push(byte);
                    if head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n") {
                        let head = std::mem::take(head);
                        self.framing = self.after_head(&head);
                    } else if head.len() > MAX_HEAD {
                        self.framing = Framing::Off;
                    }
                }
                Framing::Fixed(left) => {
                    let take = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    data = &data[take..];
                    if *left == 0 {
                        self.framing = Framing::Head(Vec::new());
                    }
                }
                Framing::ChunkSize(line) => {
                    let (&byte, rest) = data.split_first().expect("not empty");
                    data = rest;
                    line.push(byte);
                    if byte == b'\n' {
                        let text = String::from_utf8_lossy(line);
                        let size = text.split(';').next().unwrap_or_default().trim();
                        self.framing = match u64::from_str_radix(size, 16) {
                            Ok(0) => Framing::Trailers(Vec::new()),
                            Ok(size) => Framing::ChunkData(size),
                            Err(_) => Framing::Off,
                        };
                    } else if line.len() > 4096 {
                        self.framing = Framing::Off;
                    }
                }
                Framing::ChunkData(left) => {
                    let take = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    data = &data[take..];
                    if *left == 0 {
                        self.framing = Framing::ChunkEnd;
                    }
                }
                Framing::ChunkEnd => {
                    let (&byte, rest) = data.split_first().expect("not empty");
                    data = rest;
                    match byte {
                        b'\r' => {}
                        b'\n' => self.framing = Framing::ChunkSize(Vec::new()),
                        _ => self.framing = Framing::Off,
                    }
                }
                Framing::Trailers(line) => {
                    let (&byte, rest) = data.split_first().expect("not empty");
                    data = rest;
                    line.push(byte);
                    if byte == b'\n' {
                        self.framing = if line.trim_ascii().is_empty() {
                            Framing::Head(Vec::new())
                        } else {
                            Framing::Trailers(Vec::new())
                        };
                    } else if line.len() > MAX_HEAD {
                        self.framing = Framing::Off;
                    }
                }
            }
        }
    }

    /// The framing of the body after a complete head.
    fn after_head(&self, head: &[u8]) -> Framing {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
            return Framing::Off;
        }
        if request.method == Some("CONNECT") {
            return Framing::Off;
        }
        let named = |name: &'static str| -> Vec<&[u8]> {
            request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect()
        };
        if !named("upgrade").is_empty() {
            return Framing::Off;
        }
        let encodings = named("transfer-encoding");
        let lengths = named("content-length");
        if !encodings.is_empty() && (!lengths.is_empty() || encodings.len() > 1) {
            self.ambiguous.store(true, Ordering::SeqCst);
            return Framing::Off;
        }
        if let Some(encoding) = encodings.first() {
            let chunked = String::from_utf8_lossy(encoding).trim().to_ascii_lowercase().ends_with("chunked");
            return if chunked { Framing::ChunkSize(Vec::new()) } else { Framing::Off };
        }
        match lengths.first().map(|l| String::from_utf8_lossy(l).trim().parse::<u64>()) {
            None | Some(Ok(0)) => Framing::Head(Vec::new()),
            Some(Ok(length)) => Framing::Fixed(length),
            Some(Err(_)) => Framing::Off,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = buf.filled()[before..].to_vec();
            self.feed(&fresh);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> (bool, Framing) {
        let (mut guarded, flag) = Guarded::new(());
        for chunk in chunks {
            guarded.feed(chunk);
        }
        (flag.load(Ordering::SeqCst), guarded.framing)
    }

    #[test]
    fn two_lengths_mark_the_connection() {
        let (ambiguous, _) = fed(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"]);
        assert!(ambiguous);
        let (ambiguous, _) =
            fed(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"]);
        assert!(ambiguous);
    }

    #[test]
    fn bodies_are_skipped_by_their_framing() {
        // A body that looks like a smuggled head is a body.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let (ambiguous, framing) = fed(&[head.as_bytes(), &body[..10], &body[10..]]);
        assert!(!ambiguous);
        assert!(matches!(framing, Framing::Head(ref h) if h.is_empty()), "{framing:?}");
        let chunked: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nab\r\nc\r\n0\r\nTrailer: 1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for split in [1, 7, 50, 60, chunked.len() - 3] {
            let (ambiguous, _) = fed(&[&chunked[..split], &chunked[split..]]);
            assert!(ambiguous, "the second request, split at {split}");
        }
        let (ambiguous, framing) = fed(&[
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        assert!(!ambiguous, "a tunnel's bytes are not requests");
        assert!(matches!(framing, Framing::Off));
    }
}
