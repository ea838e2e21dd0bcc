//! The answers the HTTP server gives by itself, in the JSON error shape too.
//!
//! hyper answers a request it cannot parse before any route or layer sees it: 400 for a
//! request that is not valid HTTP/1.1 (a control byte in a header, a malformed request line),
//! 431 for more than 100 header lines or a head larger than its buffer, 414 for a URI too long
//! to parse. Those answers have an empty body, and hyper offers no hook to give them one. So
//! each connection's writes pass through [`JsonProtocolErrors`], which recognises exactly those
//! answers (a 400, 414 or 431 head with `content-length: 0` and no `content-type`, which no
//! answer of the services' own has) and sends the same status with the LOGOS error body instead.
//! Every other write goes through untouched after a comparison of its first ten bytes.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// A listener whose connections answer protocol errors in the JSON error shape.
pub(crate) struct JsonErrorsListener(pub(crate) TcpListener);

impl axum::serve::Listener for JsonErrorsListener {
    type Io = JsonProtocolErrors<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop, with its handling of accept errors.
        let (io, address) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonProtocolErrors::new(io), address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose automatic error answers are rewritten as JSON.
pub(crate) struct JsonProtocolErrors<I> {
    inner: I,
    /// A replacement being written: its bytes, how many are written, and how many of the
    /// caller's bytes it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<I> JsonProtocolErrors<I> {
    pub(crate) fn new(inner: I) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The JSON answer that replaces `head`, when `head` is one of hyper's automatic error answers.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    const START: &[u8] = b"HTTP/1.1 4";
    if !head.starts_with(START) || head.len() < 12 {
        return None;
    }
    let (status, code, message) = match &head[9..12] {
        b"400" => (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1 (a malformed request line or header, such as a control character in a header value)",
        ),
        b"414" => (
            "414 URI Too Long",
            "uri_too_long",
            "the request URI is too long",
        ),
        b"431" => (
            "431 Request Header Fields Too Large",
            "header_fields_too_large",
            "the request has more than 100 header lines, or its head is too large",
        ),
        _ => return None,
    };
    if !contains(head, b"\r\ncontent-length: 0\r\n") || contains(head, b"content-type") {
        return None;
    }
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

impl<I: AsyncWrite + Unpin> JsonProtocolErrors<I> {
    /// Writes the pending replacement out; then it stands for the `consumed` bytes it replaced.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, written, consumed)) = &mut self.pending else {
            return Poll::Ready(Ok(0));
        };
        while *written < bytes.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => *written += n,
            }
        }
        let consumed = *consumed;
        self.pending = None;
        Poll::Ready(Ok(consumed))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonProtocolErrors<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonProtocolErrors<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none()
            && let Some(bytes) = replacement(buf)
        {
            self.pending = Some((bytes, 0, buf.len()));
        }
        if self.pending.is_some() {
            return self.poll_pending(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // An automatic answer is a head alone, in one slice.
        if self.pending.is_none()
            && let Some(first) = bufs.iter().find(|buf| !buf.is_empty())
            && let Some(bytes) = replacement(first)
        {
            self.pending = Some((bytes, 0, first.len()));
        }
        if self.pending.is_some() {
            return self.poll_pending(cx);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_automatic_answers_are_replaced() {
        // (head written, the code of its replacement)
        let cases: [(&[u8], Option<&str>); 6] = [
            (
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
                Some("header_fields_too_large"),
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
                Some("bad_request"),
            ),
            (
                b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
                Some("uri_too_long"),
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
                None,
            ),
            (
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
                None,
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", None),
        ];
        for (head, code) in cases {
            let replaced = replacement(head).map(|bytes| String::from_utf8(bytes).expect("text"));
            assert_eq!(
                replaced.is_some(),
                code.is_some(),
                "{}",
                String::from_utf8_lossy(head)
            );
            if let (Some(replaced), Some(code)) = (replaced, code) {
                let (_, body) = replaced.split_once("\r\n\r\n").expect("a head and a body");
                let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
                assert_eq!(body["error"]["code"], code);
                assert!(replaced.starts_with(&String::from_utf8_lossy(&head[..12]).into_owned()));
            }
        }
    }
}
