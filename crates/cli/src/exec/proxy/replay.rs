//! Request bodies that can be sent again: when the upstream answers `401` to a cached
//! token, the proxy gets a fresh one and sends the request once more, body and all. A body
//! up to [`MAX_REPLAY`] is read whole first and kept until the answer comes; a larger one
//! is streamed as it arrives and cannot be sent again.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Frame;
use hyper::header;

use super::Body;

/// The most of a request body the proxy keeps to send it again after a refused token.
pub(super) const MAX_REPLAY: usize = 32 << 20;

/// The reason given when a refused token's request cannot be sent again: what happened,
/// then why not and what to do.
pub(super) fn not_sent_again(what: &str) -> String {
    format!(
        "{what}; the request's body (over {} MiB) could not be sent again with a fresh one: run the command again",
        MAX_REPLAY >> 20
    )
}

/// A request's body, read as far as the proxy keeps it.
pub(super) enum Replay {
    /// The whole body: sent as often as needed.
    Whole(Bytes),
    /// Over the cap: sent once, streamed (the part already read first).
    Once(Option<Body>),
}

impl Replay {
    /// A request's body as it came: empty (and so sent again at no cost) when the request
    /// declares none (no `Transfer-Encoding`, no or a zero `Content-Length`), else a stream.
    pub(super) fn new(body: Body, headers: &header::HeaderMap) -> Self {
        let empty = !headers.contains_key(header::TRANSFER_ENCODING)
            && headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
        if empty { Self::Whole(Bytes::new()) } else { Self::Once(Some(body)) }
    }

    /// Reads `body` whole when it fits under `cap` (and its `Content-Length`, if any, says it
    /// does); otherwise keeps what was read in front of the rest of the stream.
    pub(super) async fn read(mut body: Body, headers: &header::HeaderMap, cap: usize) -> Result<Self, hyper::Error> {
        let declared =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared == Some(0) && !headers.contains_key(header::TRANSFER_ENCODING) {
            return Ok(Self::Whole(Bytes::new()));
        }
        if declared.is_some_and(|n| n > cap as u64) {
            return Ok(Self::Once(Some(body)));
        }
        let mut read = bytes::BytesMut::new();
        loop {
            let Some(frame) = body.frame().await else { return Ok(Self::Whole(read.freeze())) };
            // Trailers are not kept: no client of the routed tools sends them.
            let Ok(data) = frame?.into_data() else { continue };
            read.extend_from_slice(&data);
            if read.len() > cap {
                let prefixed = Prefixed { first: Some(read.freeze()), rest: body };
                return Ok(Self::Once(Some(BodyExt::boxed(prefixed))));
            }
        }
    }

    /// True when the body can be sent again.
    pub(super) fn replayable(&self) -> bool {
        matches!(self, Self::Whole(_))
    }

    /// The body for one attempt: the whole body again, or the stream the first time (an
    /// empty body after that, which no caller sends).
    pub(super) fn body(&mut self) -> Body {
        match self {
            Self::Whole(bytes) => Full::new(bytes.clone()).map_err(|never| match never {}).boxed(),
            Self::Once(body) => body.take().unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed()),
        }
    }
}

/// What was read, then the rest of the stream.
struct Prefixed {
    first: Option<Bytes>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let mut hint = self.rest.size_hint();
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        hint.set_lower(hint.lower() + first);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that arrives in these chunks.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
        }
    }

    fn boxed(chunks: &[&'static [u8]]) -> Body {
        BodyExt::boxed(Chunks(chunks.iter().map(|c| Bytes::from_static(c)).collect()))
    }

    async fn all(body: Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[test]
    fn a_body_under_the_cap_is_sent_again_whole_and_one_over_it_once_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let headers = header::HeaderMap::new();
            let mut small = Replay::read(boxed(&[b"ab", b"cd"]), &headers, 4).await.unwrap();
            assert!(small.replayable());
            assert_eq!(all(small.body()).await, b"abcd");
            assert_eq!(all(small.body()).await, b"abcd", "the second attempt sends the same body");

            let mut large = Replay::read(boxed(&[b"ab", b"cd", b"e", b"fg"]), &headers, 4).await.unwrap();
            assert!(!large.replayable());
            assert_eq!(all(large.body()).await, b"abcdefg", "what was read comes first, then the rest");
            assert_eq!(all(large.body()).await, b"");

            // A declared length over the cap is not read at all before sending.
            let mut headers = header::HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("5"));
            let mut declared = Replay::read(boxed(&[b"abcde"]), &headers, 4).await.unwrap();
            assert!(!declared.replayable());
            assert_eq!(all(declared.body()).await, b"abcde");
            headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("0"));
            assert!(Replay::read(boxed(&[]), &headers, 4).await.unwrap().replayable());
            // A request that declares no body is sent again without reading anything.
            assert!(Replay::new(boxed(&[]), &headers).replayable());
            assert!(Replay::new(boxed(&[]), &header::HeaderMap::new()).replayable());
            headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("3"));
            assert!(!Replay::new(boxed(&[b"abc"]), &headers).replayable());
        });
    }
}
