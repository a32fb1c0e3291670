//! Connections to one endpoint: a pool of our own over hyper's `client::conn::http1`.
//!
//! - **Reuse, warm first**: idle connections are kept last-in first-out, so the most recently
//!   used (warm, least likely to have been closed by the manager) is taken first. An idle
//!   connection older than `pool_idle_timeout` is closed instead of used; at most
//!   `pool_max_idle_per_endpoint` are kept.
//! - **A cap** ([`PoolLimits::max_connections`]): a semaphore permit per open connection,
//!   held by the connection's task until it closes. At the cap, a request waits for an idle
//!   connection or a free permit — at most `max_pending` requests wait, each at most
//!   `pending_timeout`; beyond either, [`PoolError::Overloaded`] (503 `UpstreamOverloaded`).
//!   This also bounds the gateway's memory when a thousand clients arrive at once.
//! - **Back to the pool** only when the response body was read to its end ([`Returning`]);
//!   a body dropped early closes the connection (HTTP/1 cannot abandon a response).
//!
//! - **Per-core runtimes** (`--workers N`): a connection's task runs on the runtime (worker)
//!   that opened it, so each idle connection remembers its worker, and a request takes an
//!   idle connection of its own worker first; next it opens a new one if the cap allows, and
//!   only then takes another worker's (which works, at the price of two cross-thread
//!   wake-ups per request). The cap and the idle limit stay per endpoint, for all workers.
//!
//! Connecting is the caller's job ([`Checkout::Connect`] hands over the permit), so that a
//! connect failure can be told apart (it is retried on another endpoint, and counted by
//! outlier ejection).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use pin_project_lite::pin_project;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::body::Body;

/// How long a taken idle connection may take to be ready again before it is given up.
const READY_TIMEOUT: Duration = Duration::from_millis(500);

/// The pool's limits, from the upstream's configuration.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub max_pending: usize,
    pub pending_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// Why no connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    Overloaded(&'static str),
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
    /// The worker whose runtime drives the connection.
    worker: usize,
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as the runtime of worker `index` (see `workers`); threads never
/// marked are worker 0.
pub fn set_worker(index: usize) {
    WORKER.with(|worker| worker.set(index));
}

/// The worker whose runtime the calling thread runs.
fn current_worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// One endpoint's connections.
pub struct ConnectionPool {
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    pending: AtomicUsize,
    returned: Notify,
    limits: PoolLimits,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("open", &self.open())
            .field("idle", &self.idle_count())
            .field("pending", &self.pending())
            .finish()
    }
}

/// A connection in a request's hands, with the worker whose runtime drives it (so that it
/// goes back to that worker's share of the idle list).
pub struct Lease {
    pub sender: SendRequest<Body>,
    worker: usize,
}

impl Lease {
    /// A connection just opened by the calling thread's worker.
    pub fn opened_here(sender: SendRequest<Body>) -> Lease {
        Lease {
            sender,
            worker: current_worker(),
        }
    }
}

/// What a request got from the pool.
pub enum Checkout {
    /// A warm connection, ready to send.
    Reused(Lease),
    /// Room for a new connection: connect, and give the permit to the connection's task.
    Connect(OwnedSemaphorePermit),
}

/// Counts a waiting request while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionPool {
    pub fn new(limits: PoolLimits) -> ConnectionPool {
        ConnectionPool {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            pending: AtomicUsize::new(0),
            returned: Notify::new(),
            limits,
        }
    }

    /// Connections open now (idle or busy).
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
    }

    /// Idle connections still open (a closed one waits for the next prune, uncounted).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.iter().filter(|e| !e.sender.is_closed()).count())
            .unwrap_or(0)
    }

    /// Requests waiting for a connection now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The warmest idle connection that is still open and fresh, of worker `worker` only
    /// (`Some`) or of any worker (`None`). Closed and stale ones met on the way are dropped.
    fn pop_idle(&self, worker: Option<usize>) -> Option<Lease> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.limits.idle_timeout;
        let mut at = idle.len();
        while at > 0 {
            at -= 1;
            let entry = &idle[at];
            if entry.sender.is_closed() || entry.since.elapsed() > timeout {
                idle.remove(at);
                continue;
            }
            if worker.is_none_or(|worker| worker == entry.worker) {
                let entry = idle.remove(at);
                return Some(Lease {
                    sender: entry.sender,
                    worker: entry.worker,
                });
            }
        }
        None
    }

    /// A ready idle connection from [`ConnectionPool::pop_idle`].
    async fn ready_idle(&self, worker: Option<usize>) -> Option<Lease> {
        while let Some(mut lease) = self.pop_idle(worker) {
            if lease.sender.is_ready() {
                return Some(lease);
            }
            // Just back from a response: its connection task is finishing up.
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, lease.sender.ready()).await {
                return Some(lease);
            }
        }
        None
    }

    /// Closes idle connections past `pool_idle_timeout` (called periodically).
    pub fn prune(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.limits.idle_timeout;
        idle.retain(|entry| !entry.sender.is_closed() && entry.since.elapsed() <= timeout);
    }

    /// A connection for one request (see the module docs).
    pub async fn checkout(&self) -> Result<Checkout, PoolError> {
        let deadline = Instant::now() + self.limits.pending_timeout;
        let mut waiting = None;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(sender) = self.ready_idle(Some(current_worker())).await {
                return Ok(Checkout::Reused(sender));
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Ok(Checkout::Connect(permit));
            }
            if let Some(sender) = self.ready_idle(None).await {
                return Ok(Checkout::Reused(sender));
            }
            if waiting.is_none() {
                if self.pending.fetch_add(1, Ordering::Relaxed) >= self.limits.max_pending {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    return Err(PoolError::Overloaded(
                        "too many requests waiting for a connection",
                    ));
                }
                waiting = Some(Waiting(&self.pending));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::Overloaded("no connection became free in time"));
            }
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    if let Ok(permit) = permit {
                        return Ok(Checkout::Connect(permit));
                    }
                }
                () = &mut returned => {}
                () = tokio::time::sleep(deadline - now) => {
                    return Err(PoolError::Overloaded("no connection became free in time"));
                }
            }
        }
    }

    /// Keeps `lease` for the next request (its response was read to the end).
    pub fn give_back(&self, lease: Lease) {
        let Lease { sender, worker } = lease;
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() >= self.limits.max_idle {
                // The coldest one goes.
                idle.remove(0);
            }
            idle.push(Idle {
                sender,
                since: Instant::now(),
                worker,
            });
        }
        self.returned.notify_one();
    }
}

pin_project! {
    /// An upstream response body that gives its connection back to the pool when it has been
    /// read to its end.
    pub struct Returning {
        #[pin]
        inner: Incoming,
        slot: Option<(Lease, Arc<ConnectionPool>)>,
    }
}

impl Returning {
    pub fn new(inner: Incoming, lease: Lease, pool: Arc<ConnectionPool>) -> Self {
        let mut body = Returning {
            inner,
            slot: Some((lease, pool)),
        };
        if body.inner.is_end_stream() {
            if let Some((lease, pool)) = body.slot.take() {
                pool.give_back(lease);
            }
        }
        body
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        // The server stops polling once the body says it ended, so the end is seen either
        // way: no more frames, or the last one.
        if frame.is_none() || this.inner.is_end_stream() {
            if let Some((lease, pool)) = this.slot.take() {
                pool.give_back(lease);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_pending: usize) -> PoolLimits {
        PoolLimits {
            max_connections,
            max_pending,
            pending_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle: 8,
        }
    }

    #[tokio::test]
    async fn at_the_cap_requests_wait_and_beyond_max_pending_are_refused() {
        let pool = Arc::new(ConnectionPool::new(limits(1, 1)));
        let Ok(Checkout::Connect(permit)) = pool.checkout().await else {
            panic!("a permit")
        };
        assert_eq!(pool.open(), 1);
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.checkout().await.map(|_| ()) })
        };
        // Poll with a deadline until the waiter is counted, then a third is refused.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.pending() == 0 {
            assert!(Instant::now() < deadline, "the waiter was never counted");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pool.checkout().await.err(),
            Some(PoolError::Overloaded(
                "too many requests waiting for a connection"
            ))
        );
        // A connection closing frees its permit: the waiter gets it.
        drop(permit);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_the_pending_timeout() {
        let pool = ConnectionPool::new(PoolLimits {
            pending_timeout: Duration::from_millis(300),
            ..limits(1, 4)
        });
        let _held = pool.checkout().await.unwrap();
        assert_eq!(
            pool.checkout().await.err(),
            Some(PoolError::Overloaded("no connection became free in time"))
        );
        assert_eq!(pool.pending(), 0);
    }
}
