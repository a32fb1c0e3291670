//! One client connection's limits: how many may be open, how long one may sit idle, and how
//! long a response may wait on a client that takes nothing. hyper has no idle timeout for a
//! server connection and no notion of a stalled response, so the gateway keeps both here.
//!
//! - **`server.max_connections`** (default 10 000): a connection accepted beyond it is
//!   answered by hyper with 503 `TooManyConnections` (`Retry-After: 1`, `Connection: close`
//!   on HTTP/1.1) to its first request, in HTTP/1.1 or HTTP/2 as the client speaks, and closed;
//!   a client that sends no request within [`REFUSAL_DEADLINE`] is simply closed. At most
//!   [`MAX_REFUSING`] refusals are answered at once; beyond that a connection is closed at
//!   once. Every refusal is counted (`client_connections_refused`).
//! - **`server.idle_timeout`** (default 60 s): a connection with no request in progress for
//!   that long is closed: between keep-alive requests, an HTTP/2 connection with no stream
//!   open (its PING acks do not count), and a connection that never sends a byte (counted from
//!   the accept). A request is in progress from the moment hyper hands its head to the gateway
//!   until its response body has been sent or dropped, so a slow upstream, a long upload or an
//!   endless egress stream is never cut by it. (On HTTP/1.1 hyper's own `header_read_timeout`
//!   also bounds the wait for the next request head, so the shorter of the two applies there.)
//!   An upgraded connection (a WebSocket tunnel) is never idle-closed. The close is a clean
//!   end of the connection (the read side reports end of file to hyper, which closes it).
//! - **`server.write_idle_timeout`** (default 60 s): a response the client takes nothing of
//!   for that long closes the connection, counted as `write_stalled` (the socket accepted no
//!   byte: the client stopped reading) or `stream_stalled` (a response body handed a frame to
//!   hyper and was not asked for the next one: an HTTP/2 stream whose flow-control window the
//!   client keeps shut, or an HTTP/1.1 response hyper cannot pass on). The upstream request is
//!   dropped with the connection. A stream that waits for its *upstream* (an egress stream
//!   with nothing to say) is not stalled: only waiting on the client counts. A stalled stream
//!   is found within 1.25 × the timeout. On HTTP/2 the whole connection is closed, not just
//!   the stream: hyper offers no way to reset one stream from outside, and a client that
//!   starves one stream's window is not a client whose other streams deserve a slot.
//! - **HTTP/2** ([`http2_limits`]): `max_concurrent_streams`, `max_frame_size`, the header
//!   list size (above the gateway's own header limits, so those are answered in JSON), and the
//!   rapid-reset defences: a client that opens and resets more than
//!   `max_pending_accept_reset_streams` streams before the gateway takes them, or makes the
//!   gateway reset more than `max_local_error_reset_streams`, gets `GOAWAY ENHANCE_YOUR_CALM`.
//!
//! How: [`Watched`] wraps the connection's socket. A timer it polls from its read side decides
//! when the connection is idle (the read side then reports end of file) or stalled (reads
//! and writes then fail); a second timer runs while a write is pending. [`Activity`] is what
//! the socket wrapper shares with the service: [`Tracked`] counts a request from its call to
//! its response, and [`WatchedBody`] from there until the response body is done, recording
//! when it last handed a frame to hyper and was not yet asked for the next.
//!
//! Not here: the header-read timeout (hyper's), the upload idle timeout (`limits`, 408), the
//! listener and its accept loop (`server`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http::{header, HeaderValue, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::body;
use crate::config::{Http2Config, ServerConfig};
use crate::errors::GatewayError;
use crate::limits::{CloseReason, ConnectionMetrics};

/// Longest a refused connection is kept to answer its first request.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(2);

/// Refusals answered at once; beyond, a connection over the limit is closed without a word.
pub const MAX_REFUSING: usize = 64;

/// Sets the HTTP/2 limits of `[server.http2]` on a connection builder. The header list size
/// is kept above the gateway's own header limits (`max_header_bytes`, `max_uri_bytes`), so
/// that an oversized request is refused by the gateway in JSON and not by h2.
pub fn http2_limits(builder: &mut auto::Builder<TokioExecutor>, server: &ServerConfig) {
    let Http2Config {
        max_concurrent_streams,
        max_frame_size,
        max_pending_accept_reset_streams,
        max_local_error_reset_streams,
    } = server.http2;
    let header_list = 4 * (server.max_header_bytes + server.max_uri_bytes);
    builder
        .http2()
        .max_concurrent_streams(max_concurrent_streams)
        .max_frame_size(max_frame_size)
        .max_header_list_size(u32::try_from(header_list).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(max_pending_accept_reset_streams)
        .max_local_error_reset_streams(max_local_error_reset_streams);
}

/// Answers a connection over `server.max_connections`: 503 `TooManyConnections` to its
/// first request, then closed (see the module doc).
pub fn refuse(
    stream: TcpStream,
    builder: auto::Builder<TokioExecutor>,
    limit: usize,
    refusing: &Arc<Semaphore>,
) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    let service = hyper::service::service_fn(move |request: http::Request<_>| {
        let mut response = GatewayError::too_many_connections(limit).into_response();
        if request.version() < http::Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    });
    tokio::spawn(async move {
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, connection).await;
        drop(permit);
    });
}

/// What a connection's socket wrapper and its requests share.
#[derive(Debug)]
pub struct Activity {
    /// The accept: times below are milliseconds after it.
    epoch: Instant,
    /// Requests in progress (from the service call until the response body is done).
    active: AtomicUsize,
    /// When the last request ended (or the accept).
    last_end_ms: AtomicU64,
    /// A `101` was answered: the connection is a tunnel now.
    upgraded: AtomicBool,
    /// The response bodies in progress.
    bodies: Mutex<Vec<Weak<Progress>>>,
    /// Set when a response body starts or a request ends, so the socket's timer is set again
    /// (it may be set for a far deadline that no longer applies); `waker` wakes the
    /// connection to do so.
    rearm: AtomicBool,
    waker: AtomicWaker,
}

/// One response body's progress: since when it waits on the client to take a frame
/// ([`NOT_WAITING`] while it is being polled or waits for its upstream).
#[derive(Debug)]
struct Progress {
    waiting_since_ms: AtomicU64,
}

const NOT_WAITING: u64 = u64::MAX;

/// What the timer found.
enum Verdict {
    Close(CloseReason),
    CheckAt(Instant),
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            bodies: Mutex::new(Vec::new()),
            rearm: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            activity: self.clone(),
        }
    }

    fn watch_body(&self) -> Arc<Progress> {
        // A body starts out waiting on the client: hyper has its head, and on HTTP/2 it does
        // not poll the body at all while the stream's window is shut.
        let progress = Arc::new(Progress {
            waiting_since_ms: AtomicU64::new(self.now_ms()),
        });
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies.retain(|b| b.strong_count() > 0);
        bodies.push(Arc::downgrade(&progress));
        drop(bodies);
        self.rearm();
        progress
    }

    /// Has the socket's timer set again at its next poll (and wakes the connection for it).
    fn rearm(&self) {
        self.rearm.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Since when the longest-waiting response body waits on the client.
    fn oldest_waiting_ms(&self) -> Option<u64> {
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies.retain(|b| b.strong_count() > 0);
        bodies
            .iter()
            .filter_map(Weak::upgrade)
            .map(|p| p.waiting_since_ms.load(Ordering::Acquire))
            .filter(|&t| t != NOT_WAITING)
            .min()
    }

    fn verdict(&self, idle: Duration, write_idle: Duration) -> Verdict {
        let now = Instant::now();
        if self.upgraded.load(Ordering::Acquire) {
            // A tunnel has no requests; its socket's write timer still applies.
            return Verdict::CheckAt(now + idle);
        }
        if self.active.load(Ordering::Acquire) == 0 {
            let idle_until = self.at(self.last_end_ms.load(Ordering::Acquire)) + idle;
            return if now >= idle_until {
                Verdict::Close(CloseReason::Idle)
            } else {
                Verdict::CheckAt(idle_until)
            };
        }
        match self.oldest_waiting_ms() {
            Some(since) if now >= self.at(since) + write_idle => {
                Verdict::Close(CloseReason::StreamStalled)
            }
            Some(since) => Verdict::CheckAt(self.at(since) + write_idle),
            None => Verdict::CheckAt(now + (write_idle / 4).max(Duration::from_millis(1))),
        }
    }
}

/// A request in progress, until dropped.
#[derive(Debug)]
struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = self.activity.now_ms();
        self.activity.last_end_ms.fetch_max(now, Ordering::AcqRel);
        self.activity.active.fetch_sub(1, Ordering::AcqRel);
        self.activity.rearm();
    }
}

pin_project! {
    /// The service's future for one request: the request counts as in progress from the
    /// call, and its response body is wrapped in a [`WatchedBody`] that carries on counting.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F> Tracked<F> {
    pub fn new(activity: &Arc<Activity>, inner: F) -> Self {
        Tracked {
            inner,
            guard: Some(activity.begin()),
        }
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<body::Response, E>>,
{
    type Output = Result<http::Response<WatchedBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        let progress = guard.as_ref().map(|guard| {
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                guard.activity.upgraded.store(true, Ordering::Release);
            }
            guard.activity.watch_body()
        });
        Poll::Ready(Ok(response.map(|inner| WatchedBody {
            inner,
            watch: guard.zip(progress),
        })))
    }
}

/// A response body that keeps its request counted as in progress until it is done or
/// dropped, and records whether it waits on the client (see the module doc).
pub struct WatchedBody {
    inner: body::Body,
    watch: Option<(RequestGuard, Arc<Progress>)>,
}

impl WatchedBody {
    /// Records that the body waits on the client from now on (`true`) or not (`false`).
    fn waiting_on_client(&self, waiting: bool) {
        if let Some((guard, progress)) = &self.watch {
            let since = if waiting {
                guard.activity.now_ms()
            } else {
                NOT_WAITING
            };
            progress.waiting_since_ms.store(since, Ordering::Release);
        }
    }
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // Handed to hyper: from now on it is the client's turn.
            Poll::Ready(Some(Ok(_))) => self.waiting_on_client(true),
            // Waiting for the upstream.
            Poll::Pending => self.waiting_on_client(false),
            Poll::Ready(_) => {
                // The response is done: the request ends here, not when hyper drops the body.
                self.watch = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A client connection's socket, with the idle and write-idle timers (see the module doc).
    pub struct Watched<IO> {
        #[pin]
        io: IO,
        activity: Arc<Activity>,
        metrics: ConnectionMetrics,
        idle: Duration,
        write_idle: Duration,
        check: Pin<Box<Sleep>>,
        write_timer: Option<Pin<Box<Sleep>>>,
        write_pending: bool,
        closed: Option<CloseReason>,
    }
}

impl<IO> Watched<IO> {
    pub fn new(
        io: IO,
        activity: Arc<Activity>,
        server: &ServerConfig,
        metrics: ConnectionMetrics,
    ) -> Self {
        let check = Box::pin(tokio::time::sleep(server.idle_timeout));
        Watched {
            io,
            activity,
            metrics,
            idle: server.idle_timeout,
            write_idle: server.write_idle_timeout,
            check,
            write_timer: None,
            write_pending: false,
            closed: None,
        }
    }
}

fn closed_error(reason: CloseReason) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connection closed by the gateway: {}", reason.as_str()),
    )
}

impl<IO> Watched<IO> {
    /// Runs the idle/stall timer; `Some` once the connection is to be closed.
    fn poll_check(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<CloseReason> {
        let this = self.project();
        if let Some(reason) = *this.closed {
            return Some(reason);
        }
        this.activity.waker.register(cx.waker());
        let mut due = this.activity.rearm.swap(false, Ordering::AcqRel);
        while due || this.check.as_mut().poll(cx).is_ready() {
            due = false;
            match this.activity.verdict(*this.idle, *this.write_idle) {
                Verdict::Close(reason) => {
                    tracing::info!(reason = reason.as_str(), "closing a client connection");
                    this.metrics.closed(reason);
                    *this.closed = Some(reason);
                    return Some(reason);
                }
                Verdict::CheckAt(at) => this.check.as_mut().reset(at),
            }
        }
        None
    }

    /// After a write found the socket full: fails once it has stayed full for the timeout.
    fn poll_write_stall(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let write_idle = *this.write_idle;
        if !*this.write_pending {
            *this.write_pending = true;
            let deadline = Instant::now() + write_idle;
            match this.write_timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => *this.write_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(timer) = this.write_timer.as_mut() else {
            return Poll::Pending;
        };
        ready!(timer.as_mut().poll(cx));
        let reason = CloseReason::WriteStalled;
        tracing::info!(
            reason = reason.as_str(),
            "closing a client connection: it took nothing for {}",
            humantime::format_duration(write_idle)
        );
        this.metrics.closed(reason);
        *this.closed = Some(reason);
        Poll::Ready(Err(closed_error(reason)))
    }

    fn write_outcome<T>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(result) => {
                *self.as_mut().project().write_pending = false;
                Poll::Ready(result)
            }
            Poll::Pending => match self.poll_write_stall(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Pending,
            },
        }
    }

    fn refuse_write(&self) -> Option<io::Error> {
        match self.closed {
            Some(reason @ (CloseReason::WriteStalled | CloseReason::StreamStalled)) => {
                Some(closed_error(reason))
            }
            _ => None,
        }
    }
}

impl<IO: AsyncRead> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.as_mut().poll_check(cx) {
            // End of file: hyper closes an idle connection cleanly.
            Some(CloseReason::Idle) => Poll::Ready(Ok(())),
            Some(reason) => Poll::Ready(Err(closed_error(reason))),
            None => self.project().io.poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.refuse_write() {
            return Poll::Ready(Err(error));
        }
        let outcome = self.as_mut().project().io.poll_write(cx, buf);
        self.write_outcome(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.refuse_write() {
            return Poll::Ready(Err(error));
        }
        let outcome = self.as_mut().project().io.poll_write_vectored(cx, bufs);
        self.write_outcome(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.refuse_write() {
            return Poll::Ready(Err(error));
        }
        let outcome = self.as_mut().project().io.poll_flush(cx);
        self.write_outcome(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = self.as_mut().project().io.poll_shutdown(cx);
        self.write_outcome(cx, outcome)
    }
}
