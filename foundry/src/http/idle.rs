//! A connection closed after a while without traffic. hyper bounds how long a request's head may
//! take once its first byte has come, but not a connection that sends nothing at all, nor one
//! kept alive with nothing more to ask: without this, each holds a task and a file for as long
//! as its client likes.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// `inner`, failing its read with `TimedOut` once nothing has been read or written for `timeout`.
pub(crate) struct Idle<I> {
    inner: I,
    timeout: Duration,
    /// The last traffic: read from the clock on each, and compared only when the timer fires,
    /// so that traffic, on the request path, never touches the timer.
    last: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<I> Idle<I> {
    pub(crate) fn new(inner: I, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            last: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Traffic: the idle time starts again.
    fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the connection has been idle for its whole timeout; when the timer fires early
    /// (there was traffic since it was set), it is set again for the new end.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        while self.deadline.as_mut().poll(cx).is_ready() {
            let end = self.last + self.timeout;
            if end <= Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(end);
        }
        false
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Idle<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.idle_too_long(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Idle<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
