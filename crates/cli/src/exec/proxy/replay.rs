//! Request bodies that can be sent again: when the upstream answers `401` to a cached
//! token, the proxy gets a fresh one and sends the request once more, body and all. A body
//! up to [`MAX_REPLAY`] is read whole first and kept until the answer comes; a larger one
//! is streamed as it arrives and cannot be sent again.
//!
//! Memory: the bytes kept for replay count against [`REPLAY_BUDGET`]. A body with a
//! `Content-Length` reserves it whole before it is read, or is streamed unread when what is
//! left is short; one without takes its share frame by frame, and the prefix it had read
//! when the cap or the budget ran short holds its share until it is sent: only the one
//! frame that found the budget short is read past it, per request. Bodies read
//! whole to find the package they publish count against [`NAMING_BUDGET`] instead, and
//! are the replay body as they are.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// The most of all publish bodies (`cargo publish`, `twine upload`) the proxy reads whole
/// at once to find the package they name; one body is never larger.
pub(super) const NAMING_BUDGET: usize = 256 << 20;

/// How long reading a body for replay may take: a client that stalls (or trickles) after
/// declaring a length would otherwise hold its reservation, and so the budget, for ever.
/// Past it, the reservation beyond what was read goes back and the body is streamed.
pub(super) const REPLAY_READ: Duration = Duration::from_secs(10);

/// How long a publish body may wait for the naming budget, and then how long its reading
/// may take. The semaphore serves waiters in turn, so without a bound a client that stalls
/// (or trickles) would hold the budget, and every publish queued behind it, for ever. The
/// wait is under cargo's default `http.timeout` (30 s without progress), so a queued
/// `cargo publish` gets the proxy's refusal, not curl's timeout; the read moves bytes, so
/// only a whole-body bound applies to it.
const NAMING_WAIT: Duration = Duration::from_secs(20);
const NAMING_READ: Duration = Duration::from_secs(60);
const _: () = assert!(NAMING_WAIT.as_secs() < 30, "a queued cargo publish must get the proxy's refusal");

/// Publish bodies read whole across the whole proxy: the budget's bytes as permits, and
/// the bounds on waiting for them and on reading.
pub(super) struct Naming {
    budget: Arc<Semaphore>,
    size: usize,
    wait: Duration,
    read: Duration,
}

impl Naming {
    pub(super) fn new() -> Self {
        Self::with(NAMING_BUDGET, NAMING_WAIT, NAMING_READ)
    }

    fn with(size: usize, wait: Duration, read: Duration) -> Self {
        Self { budget: Arc::new(Semaphore::new(size)), size, wait, read }
    }

    /// Reads a publish body whole, under the budget: its declared `Content-Length` is
    /// reserved before a byte is read, and held with the body until the request ends. A
    /// body without a length (chunked) is refused rather than reserved in steps: what it
    /// needs is unknown until it ends, a reservation grown in steps can deadlock two
    /// bodies each holding half, and both publish clients send a length. The wait for the
    /// budget and the read are each bounded; on either timeout the reservation goes back at
    /// once. A request that declares no body reserves nothing. The error is one line.
    pub(super) async fn read(&self, body: Body, headers: &header::HeaderMap) -> Result<Replay, String> {
        if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err("a publish body without a Content-Length (chunked) is refused: the proxy reads it whole to find the package, and must know its size first".into());
        }
        let length = match headers.get(header::CONTENT_LENGTH) {
            None => return Ok(Replay::Whole(Bytes::new(), None)),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("the publish body's Content-Length is not a number")?,
        };
        if length == 0 {
            return Ok(Replay::Whole(Bytes::new(), None));
        }
        let permits = u32::try_from(length).ok().filter(|&n| n as usize <= self.size).ok_or_else(|| {
            format!(
                "a publish body of {length} bytes is over the {} MiB the proxy reads to find the package",
                self.size >> 20
            )
        })?;
        let Ok(Ok(permit)) = tokio::time::timeout(self.wait, self.budget.clone().acquire_many_owned(permits)).await
        else {
            return Err(format!(
                "other publishes held the proxy's {} MiB for publish bodies for {} s: run the command again",
                self.size >> 20,
                self.wait.as_secs()
            ));
        };
        let limited = http_body_util::Limited::new(body, permits as usize);
        match tokio::time::timeout(self.read, limited.collect()).await {
            Ok(Ok(collected)) => Ok(Replay::Whole(collected.to_bytes(), Some(permit))),
            Ok(Err(e)) => Err(format!("cannot read the request's body: {e}")),
            Err(_) => Err(format!(
                "the publish body did not arrive whole within {} s: run the command again",
                self.read.as_secs()
            )),
        }
    }
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
    /// does), `budget` has room, and it arrives within [`REPLAY_READ`]; otherwise keeps what
    /// was read (nothing, for a body with a length that does not fit) in front of the rest.
    pub(super) async fn read(
        body: Body,
        headers: &header::HeaderMap,
        cap: usize,
        budget: &Arc<Semaphore>,
    ) -> Result<Self, hyper::Error> {
        Self::read_within(body, headers, cap, budget, REPLAY_READ).await
    }

    async fn read_within(
        mut body: Body,
        headers: &header::HeaderMap,
        cap: usize,
        budget: &Arc<Semaphore>,
        within: Duration,
    ) -> Result<Self, hyper::Error> {
        let declared =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared == Some(0) && !headers.contains_key(header::TRANSFER_ENCODING) {
            return Ok(Self::Whole(Bytes::new(), None));
        }
        if declared.is_some_and(|n| n > cap as u64) {
            return Ok(Self::Over(Some(body)));
        }
        // A declared length is reserved whole before a byte is read: bodies read at once
        // cannot each take part of the budget and all fall short. One that does not fit
        // what is left is streamed unread.
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut reserved = 0;
        if let Some(length) = declared.and_then(|n| u32::try_from(n).ok()) {
            let Ok(permit) = budget.clone().try_acquire_many_owned(length) else {
                return Ok(Self::Over(Some(body)));
            };
            (held, reserved) = (Some(permit), length as usize);
        }
        let deadline = tokio::time::Instant::now() + within;
        let mut read = bytes::BytesMut::new();
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
                // Too slow: the reservation past what was read goes back now, and the
                // prefix holds its share until it is sent.
                if let Some(permit) = held.as_mut() {
                    let unread = permit.num_permits().saturating_sub(read.len());
                    drop(permit.split(unread));
                }
                let prefixed = Prefixed { first: Some(read.freeze()), held, rest: body };
                return Ok(Self::Over(Some(BodyExt::boxed(prefixed))));
            };
            let Some(frame) = frame else { return Ok(Self::Whole(read.freeze(), held)) };
            // Trailers are not kept: no client of the routed tools sends them.
            let Ok(data) = frame?.into_data() else { continue };
            let before = read.len();
            read.extend_from_slice(&data);
            // Without a length, each frame takes its share as it comes.
            let extra = read.len().saturating_sub(reserved.max(before));
            let more = u32::try_from(extra)
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| budget.clone().try_acquire_many_owned(n).ok());
            let fits = read.len() <= cap && (extra == 0 || more.is_some());
            match (&mut held, more) {
                (Some(held), Some(more)) => held.merge(more),
                (held @ None, more) => *held = more,
                (Some(_), None) => {}
            }
            if !fits {
                // The prefix holds its bytes of the budget until it is sent.
                let prefixed = Prefixed { first: Some(read.freeze()), held, rest: body };
                return Ok(Self::Over(Some(BodyExt::boxed(prefixed))));
            }
        }
    }

    /// The bytes read so far: all of a body read whole, else none.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Self::Whole(bytes, _) => bytes,
            Self::Unread(_) | Self::Over(_) => &[],
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
    /// The budget the prefix holds, given back once it is sent.
    held: Option<OwnedSemaphorePermit>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(first) = self.first.take() {
            self.held = None;
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let rest = self.rest.size_hint();
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        // The upper bound first: raising the lower past it panics (an exact hint, from a
        // request's `Content-Length`, has them equal).
        let mut hint = hyper::body::SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint.set_lower(rest.lower() + first);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_bodies::Chunks;

    /// A body that is not ready once before each chunk (and wakes its reader), so bodies
    /// read at once take turns frame by frame; its length unknown.
    struct Interleaved(Chunks, bool);

    impl hyper::body::Body for Interleaved {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            self.1 = !self.1;
            if self.1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Pin::new(&mut self.0).poll_frame(cx)
        }
    }

    fn interleaved(chunks: &[&'static [u8]]) -> Body {
        BodyExt::boxed(Interleaved(Chunks(chunks.iter().map(|c| Bytes::from_static(c)).collect()), false))
    }

    fn boxed(chunks: &[&'static [u8]]) -> Body {
        BodyExt::boxed(Chunks(chunks.iter().map(|c| Bytes::from_static(c)).collect()))
    }

    async fn all(body: Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[test]
    fn a_body_under_the_cap_is_sent_again_whole_and_one_over_it_once_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let headers = header::HeaderMap::new();
            let mut small = Replay::read(boxed(&[b"ab", b"cd"]), &headers, 4, &budget()).await.unwrap();
            assert!(small.replayable());
            assert_eq!(all(small.body()).await, b"abcd");
            assert_eq!(all(small.body()).await, b"abcd", "the second attempt sends the same body");

            let mut large = Replay::read(boxed(&[b"ab", b"cd", b"e", b"fg"]), &headers, 4, &budget()).await.unwrap();
            assert!(!large.replayable());
            let streamed = large.body();
            assert_eq!(hyper::body::Body::size_hint(&streamed).exact(), Some(7), "the prefix and the rest");
            assert_eq!(all(streamed).await, b"abcdefg", "what was read comes first, then the rest");
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
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let headers = header::HeaderMap::new();
            let budget = Arc::new(Semaphore::new(6));
            let first = Replay::read(boxed(&[b"abcd"]), &headers, 100, &budget).await.unwrap();
            assert!(first.replayable());
            assert_eq!(budget.available_permits(), 2);
            // Past the budget, a body under the cap is streamed, in order.
            // The prefix it had read holds its share until it is sent.
            let mut second = Replay::read(boxed(&[b"ab", b"cd"]), &headers, 100, &budget).await.unwrap();
            assert!(!second.replayable() && second.over());
            assert_eq!(budget.available_permits(), 0);
            assert_eq!(all(second.body()).await, b"abcd");
            assert_eq!(budget.available_permits(), 2);
            drop(first);
            assert_eq!(budget.available_permits(), 6, "a finished request gives its bytes back");
            assert!(Replay::read(boxed(&[b"ab", b"cd"]), &headers, 100, &budget).await.unwrap().replayable());
            // Declared lengths are reserved whole: of two bodies read at once, one is kept
            // whole and the other streamed unread, never both cut short.
            let (declared, four) = (Arc::new(Semaphore::new(6)), length("4"));
            let (a, b) = tokio::join!(
                Replay::read(interleaved(&[b"ab", b"cd"]), &four, 100, &declared),
                Replay::read(interleaved(&[b"ef", b"gh"]), &four, 100, &declared)
            );
            let (a, mut b) = (a.unwrap(), b.unwrap());
            assert!(a.replayable() && b.over());
            assert_eq!(declared.available_permits(), 2, "the unread body holds nothing");
            assert_eq!(all(b.body()).await, b"efgh");
            drop(a);
            assert_eq!(declared.available_permits(), 6);
            // A body never read is not one over the cap.
            let mut declared = header::HeaderMap::new();
            declared.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("3"));
            assert!(!Replay::new(boxed(&[b"abc"]), &declared).over());
        });
    }

    fn length(n: &'static str) -> header::HeaderMap {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static(n));
        headers
    }

    /// A body that sends these bytes, if any, then never another.
    struct Stalled(Option<Bytes>);

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            match self.0.take() {
                Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_gives_its_unread_reservation_back_on_time_and_is_streamed() {
        let budget = Arc::new(Semaphore::new(6));
        let four = length("4");
        let stalled = BodyExt::boxed(Stalled(Some(Bytes::from_static(b"ab"))));
        let started = tokio::time::Instant::now();
        let mut slow = Replay::read(stalled, &four, 100, &budget).await.unwrap();
        assert_eq!(started.elapsed(), REPLAY_READ, "given up on at the bound, in paused time");
        assert!(slow.over() && !slow.replayable());
        assert_eq!(budget.available_permits(), 4, "only the prefix read holds its share");
        // Another body is kept for replay meanwhile.
        let other = Replay::read(boxed(&[b"cdef"]), &four, 100, &budget).await.unwrap();
        assert!(other.replayable());
        // The prefix comes first, then the rest of the stream (which never ends here).
        let mut streamed = slow.body();
        let first = streamed.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, b"ab"[..]);
        assert_eq!(budget.available_permits(), 2, "the prefix sent gave its share back");
        drop(other);
        assert_eq!(budget.available_permits(), 6);
    }

    #[tokio::test]
    async fn a_publish_body_over_the_naming_budget_or_without_a_length_is_refused() {
        let naming = Naming::with(4, Duration::from_secs(5), Duration::from_secs(5));
        let over = naming.read(boxed(&[b"abcde"]), &length("5")).await.err().unwrap();
        assert!(over.contains("5 bytes is over"), "{over}");
        let mut chunked = header::HeaderMap::new();
        chunked.insert(header::TRANSFER_ENCODING, header::HeaderValue::from_static("chunked"));
        let refused = naming.read(boxed(&[b"ab"]), &chunked).await.err().unwrap();
        assert!(refused.contains("without a Content-Length"), "{refused}");
        assert_eq!(naming.budget.available_permits(), 4, "a refused body holds nothing");
        // A bodiless request reserves nothing, and is sent again as it is.
        let empty = naming.read(boxed(&[]), &header::HeaderMap::new()).await.unwrap();
        assert!(empty.replayable());
        assert_eq!(naming.budget.available_permits(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_publish_body_or_its_waiter_gives_the_naming_budget_back_on_time() {
        // The proxy's own bounds, in paused time.
        let naming = Naming::with(4, NAMING_WAIT, NAMING_READ);
        let stalled = naming.read(BodyExt::boxed(Stalled(None)), &length("3")).await.err().unwrap();
        assert!(stalled.contains("did not arrive whole within"), "{stalled}");
        assert_eq!(naming.budget.available_permits(), 4, "the timed-out read gave its reservation back");
        // One body holds the budget: the next waits, then gives up, holding nothing.
        let held = naming.read(boxed(&[b"abc"]), &length("3")).await.unwrap();
        let started = tokio::time::Instant::now();
        let waited = naming.read(boxed(&[b"ab"]), &length("2")).await.err().unwrap();
        assert_eq!(started.elapsed(), NAMING_WAIT);
        assert!(waited.contains("other publishes held") && waited.contains("for 20 s"), "{waited}");
        assert_eq!(naming.budget.available_permits(), 1);
        drop(held);
        assert_eq!(naming.budget.available_permits(), 4);
    }

    #[tokio::test]
    async fn concurrent_publish_bodies_within_the_naming_budget_both_pass_and_are_sent_again() {
        let naming = Naming::with(6, Duration::from_secs(5), Duration::from_secs(5));
        let three = length("3");
        let (a, b) = tokio::join!(
            naming.read(interleaved(&[b"ab", b"c"]), &three),
            naming.read(interleaved(&[b"de", b"f"]), &three)
        );
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        assert_eq!(naming.budget.available_permits(), 0, "each holds its length");
        assert_eq!(all(a.body()).await, b"abc");
        assert_eq!(all(a.body()).await, b"abc", "the body is the replay body");
        assert_eq!(all(b.body()).await, b"def");
        drop((a, b));
        assert_eq!(naming.budget.available_permits(), 6);
    }
}
