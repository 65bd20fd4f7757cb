//! Request bodies for the proxy's tests.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;

/// A body that arrives in these chunks, its length exact (as a request's `Content-Length`
/// makes it).
pub(super) struct Chunks(pub(super) VecDeque<Bytes>);

impl Chunks {
    /// `count` frames of `size` bytes, as a client's upload comes.
    pub(super) fn of(count: usize, size: usize) -> Self {
        let frame = Bytes::from(vec![0u8; size]);
        Self(std::iter::repeat_n(frame, count).collect())
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
    }
}
