//! Request bodies that can be sent again: when the upstream answers `401` to a cached
//! token, the proxy gets a fresh one and sends the request once more, body and all. A body
//! up to [`MAX_REPLAY`] is read whole first and kept until the answer comes; a larger one
//! is streamed as it arrives and cannot be sent again.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Frame;
use hyper::header;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Body;

/// The most of a request body the proxy keeps to send it again after a refused token.
pub(super) const MAX_REPLAY: usize = 32 << 20;

/// The most of all requests' bodies the proxy keeps at once to send them again: past it,
/// bodies are streamed as they come (and cannot be sent again).
pub(super) const REPLAY_BUDGET: usize = 64 << 20;

/// The bytes kept for replay across the whole proxy, as permits of one semaphore.
pub(super) fn budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(REPLAY_BUDGET))
}

/// The reason given when a refused token's request cannot be sent again: what happened,
/// then why not and what to do.
pub(super) fn not_sent_again(what: &str) -> String {
    format!(
        "{what}; the request's body (over {} MiB, or more than the proxy keeps at once) could not be sent again with a fresh one: run the command again",
        MAX_REPLAY >> 20
    )
}

/// A request's body, read as far as the proxy keeps it.
pub(super) enum Replay {
    /// The whole body: sent as often as needed (with its share of the budget, if any).
    Whole(
        Bytes,
        // Held, never read: its bytes go back to the budget when the request ends.
        #[expect(dead_code, reason = "a permit is held, not read")] Option<OwnedSemaphorePermit>,
    ),
    /// Not read at all: sent once, streamed.
    Unread(Option<Body>),
    /// Over the cap or the budget: sent once, streamed (the part already read first).
    Over(Option<Body>),
}

impl Replay {
    /// A request's body as it came: empty (and so sent again at no cost) when the request
    /// declares none (no `Transfer-Encoding`, no or a zero `Content-Length`), else a stream.
    pub(super) fn new(body: Body, headers: &header::HeaderMap) -> Self {
        let empty = !headers.contains_key(header::TRANSFER_ENCODING)
            && headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
        if empty { Self::Whole(Bytes::new(), None) } else { Self::Unread(Some(body)) }
    }

    /// A body read whole for another reason (the package it names), kept as it is.
    pub(super) fn whole(bytes: Bytes) -> Self {
        Self::Whole(bytes, None)
    }

    /// Reads a body not yet read, when it fits under `cap` and in what is left of
    /// `budget`; anything else is returned as it is.
    pub(super) async fn keep(
        self,
        headers: &header::HeaderMap,
        cap: usize,
        budget: &Arc<Semaphore>,
    ) -> Result<Self, hyper::Error> {
        match self {
            Self::Unread(Some(stream)) => Self::read(stream, headers, cap, budget).await,
            other => Ok(other),
        }
    }

    /// Reads `body` whole when it fits under `cap` (and its `Content-Length`, if any, says it
    /// does) and `budget` has room; otherwise keeps what was read in front of the rest.
    pub(super) async fn read(
        mut body: Body,
        headers: &header::HeaderMap,
        cap: usize,
        budget: &Arc<Semaphore>,
    ) -> Result<Self, hyper::Error> {
        let declared =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared == Some(0) && !headers.contains_key(header::TRANSFER_ENCODING) {
            return Ok(Self::Whole(Bytes::new(), None));
        }
        if declared.is_some_and(|n| n > cap as u64) {
            return Ok(Self::Over(Some(body)));
        }
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut read = bytes::BytesMut::new();
        loop {
            let Some(frame) = body.frame().await else { return Ok(Self::Whole(read.freeze(), held)) };
            // Trailers are not kept: no client of the routed tools sends them.
            let Ok(data) = frame?.into_data() else { continue };
            read.extend_from_slice(&data);
            let more = u32::try_from(data.len()).ok().and_then(|n| budget.clone().try_acquire_many_owned(n).ok());
            let fits = read.len() <= cap && (data.is_empty() || more.is_some());
            match (&mut held, more) {
                (Some(held), Some(more)) => held.merge(more),
                (held @ None, more) => *held = more,
                (Some(_), None) => {}
            }
            if !fits {
                drop(held);
                let prefixed = Prefixed { first: Some(read.freeze()), rest: body };
                return Ok(Self::Over(Some(BodyExt::boxed(prefixed))));
            }
        }
    }

    /// True when the body can be sent again.
    pub(super) fn replayable(&self) -> bool {
        matches!(self, Self::Whole(..))
    }

    /// True when the body was over the cap or the budget (not merely never read).
    pub(super) fn over(&self) -> bool {
        matches!(self, Self::Over(_))
    }

    /// The body for one attempt: the whole body again, or the stream the first time (an
    /// empty body after that, which no caller sends).
    pub(super) fn body(&mut self) -> Body {
        match self {
            Self::Whole(bytes, _) => Full::new(bytes.clone()).map_err(|never| match never {}).boxed(),
            Self::Unread(body) | Self::Over(body) => {
                body.take().unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed())
            }
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
            let mut small = Replay::read(boxed(&[b"ab", b"cd"]), &headers, 4, &budget()).await.unwrap();
            assert!(small.replayable());
            assert_eq!(all(small.body()).await, b"abcd");
            assert_eq!(all(small.body()).await, b"abcd", "the second attempt sends the same body");

            let mut large = Replay::read(boxed(&[b"ab", b"cd", b"e", b"fg"]), &headers, 4, &budget()).await.unwrap();
            assert!(!large.replayable());
            assert_eq!(all(large.body()).await, b"abcdefg", "what was read comes first, then the rest");
            assert_eq!(all(large.body()).await, b"");

            // A declared length over the cap is not read at all before sending.
            let mut headers = header::HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("5"));
            let mut declared = Replay::read(boxed(&[b"abcde"]), &headers, 4, &budget()).await.unwrap();
            assert!(!declared.replayable());
            assert_eq!(all(declared.body()).await, b"abcde");
            headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("0"));
            assert!(Replay::read(boxed(&[]), &headers, 4, &budget()).await.unwrap().replayable());
            // A request that declares no body is sent again without reading anything.
            assert!(Replay::new(boxed(&[]), &headers).replayable());
            assert!(Replay::new(boxed(&[]), &header::HeaderMap::new()).replayable());
            headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("3"));
            assert!(!Replay::new(boxed(&[b"abc"]), &headers).replayable());
        });
    }

    #[test]
    fn bodies_kept_for_replay_share_one_budget_and_give_it_back() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let headers = header::HeaderMap::new();
            let budget = Arc::new(Semaphore::new(6));
            let first = Replay::read(boxed(&[b"abcd"]), &headers, 100, &budget).await.unwrap();
            assert!(first.replayable());
            assert_eq!(budget.available_permits(), 2);
            // Past the budget, a body under the cap is streamed, in order, and holds nothing.
            let mut second = Replay::read(boxed(&[b"ab", b"cd"]), &headers, 100, &budget).await.unwrap();
            assert!(!second.replayable() && second.over());
            assert_eq!(budget.available_permits(), 2);
            assert_eq!(all(second.body()).await, b"abcd");
            drop(first);
            assert_eq!(budget.available_permits(), 6, "a finished request gives its bytes back");
            assert!(Replay::read(boxed(&[b"ab", b"cd"]), &headers, 100, &budget).await.unwrap().replayable());
            // A body never read is not one over the cap.
            let mut declared = header::HeaderMap::new();
            declared.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("3"));
            assert!(!Replay::new(boxed(&[b"abc"]), &declared).over());
        });
    }
}
