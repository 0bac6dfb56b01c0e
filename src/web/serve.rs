//! The HTTP/1.1 listener: a cap on connections served at once, a deadline for
//! each request head, and hyper's own error answers given the JSON error body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::error::{ErrorBody, ErrorCode, ErrorDetail};

/// The largest request head (request line and headers) read; larger is a 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Limits on slow and many clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a request's head may take to arrive, counted from when the
    /// server waits for it: on a kept-alive connection, from the previous
    /// answer, so it is also how long an idle connection stays open.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive in full (then 408).
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: super::state::DEFAULT_BODY_TIMEOUT,
            max_connections: 1024,
        }
    }
}

/// Serves `app` until `shutdown` resolves, then lets open requests finish.
/// At most `limits.max_connections` connections are served at once: the next
/// one is accepted when one closes (until then it waits in the backlog).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful
            .watch(builder.serve_connection(TokioIo::new(JsonErrors::new(stream)), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection whose outgoing bytes are passed through, except hyper's own
/// answers to requests it could not read (a malformed or oversized head):
/// those carry no body, and get the contract's JSON error body here, the one
/// place they can (hyper offers no hook). Every answer of the application has
/// a body, so an answer of one of these statuses without one is hyper's.
struct JsonErrors<S> {
    inner: S,
    /// A replacement being written, how much of it is out, and the length of
    /// the write it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonErrors<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The answer hyper made itself, with a JSON body; `None` for anything else.
pub fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let head_only = text.ends_with("\r\n\r\n") && text.matches("\r\n\r\n").count() == 1;
    let (code, message) = match rest.get(..3)? {
        "400" => (
            ErrorCode::InvalidRequest,
            "the request could not be read as HTTP/1.1",
        ),
        "408" => (
            ErrorCode::RequestTimeout,
            "the request did not arrive in time",
        ),
        "413" => (
            ErrorCode::PayloadTooLarge,
            "the request body is larger than the limit",
        ),
        "414" => (
            ErrorCode::UriTooLong,
            "the request's URI is longer than the limit",
        ),
        "431" => (
            ErrorCode::HeadersTooLarge,
            "the request's headers are larger than the limit (16 KiB)",
        ),
        _ => return None,
    };
    let lines: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
    let empty = lines[1..]
        .iter()
        .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if !head_only || !empty {
        return None;
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
            lag: None,
        },
    })
    .ok()?;
    let mut out = format!("{}\r\n", lines[0]);
    for line in &lines[1..] {
        let name = line.split(':').next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("connection")
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(
        "content-type: application/json\r\ncache-control: no-store\r\n\
         x-content-type-options: nosniff\r\nconnection: close\r\n",
    );
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len() + 1));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    Some(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match with_json_body(buf) {
                Some(replacement) => this.pending = Some((replacement, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let (replacement, written, stands_for) =
            this.pending.as_mut().expect("a replacement is pending");
        while *written < replacement.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &replacement[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let stands_for = *stands_for;
        this.pending = None;
        Poll::Ready(Ok(stands_for))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each answer's head as one buffer, which
    // is what `with_json_body` recognises.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_error_answers_get_the_json_error_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 06:00:00 GMT\r\n\r\n";
        let replaced = String::from_utf8(with_json_body(head).unwrap()).unwrap();
        let (head, body) = replaced.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains("date: Wed"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large");
    }

    #[test]
    fn answers_with_a_body_or_another_status_pass_unchanged() {
        assert!(
            with_json_body(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none()
        );
        assert!(with_json_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            with_json_body(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none()
        );
    }
}
