//! The time an upstream gets to answer, by endpoint class, and whose fault it was when the
//! time ran out.
//!
//! Streams (`egress`, `query`, `logs`, …) and ingress have no timeout; compiler calls get
//! 300 s, slow operations 120 s, everything else the upstream's `request_timeout`. The timer
//! covers everything before the response *headers* — reading a body kept for a retry,
//! waiting for a connection, connecting, sending, and reading an error body to normalize it;
//! a response body then streams without a deadline.
//!
//! When the timer fires before the client finished sending its body, the client was the slow
//! one: 408 `RequestTimeout`. Otherwise 504 `UpstreamTimeout`, and if an endpoint had the
//! request at that moment, the timeout counts as that endpoint's failure towards its ejection
//! (`[upstreams.outlier] consecutive_5xx`): a manager that accepts and never answers leaves
//! rotation like one that answers 504. Either way the upstream request is dropped, which
//! closes its connection.
//!
//! `[upstreams.retry] try_timeout` bounds one try of a request that may be sent again (see
//! `retry`): past it the endpoint is blamed the same way and the request goes to another one
//! while the budget and the request's own deadline allow.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::body::BodyProgress;
use crate::catalog::EndpointClass;
use crate::errors::GatewayError;

/// A request's deadline for its response headers.
pub struct Deadline {
    limit: Duration,
    at: Instant,
    upstream: Arc<str>,
    progress: Option<BodyProgress>,
}

impl Deadline {
    /// The deadline of a request of `class` to `upstream`, starting now; `None` for streams
    /// and ingress.
    pub fn start(
        class: EndpointClass,
        request_timeout: Duration,
        upstream: Arc<str>,
        progress: Option<BodyProgress>,
    ) -> Option<Deadline> {
        class.timeout(request_timeout).map(|limit| Deadline {
            limit,
            at: Instant::now() + limit,
            upstream,
            progress,
        })
    }

    /// Whether the client was still sending its body: then the timeout is the client's.
    pub fn client_is_slow(progress: Option<&BodyProgress>) -> bool {
        progress.is_some_and(|p| !p.is_complete())
    }

    /// The answer once the deadline passed.
    pub fn expired(&self) -> GatewayError {
        expired(&self.upstream, self.progress.as_ref(), self.limit)
    }

    /// Runs `work` under the deadline. On expiry the endpoint `waiting` names (if any, and if
    /// the client is not the slow one) is passed to `blame`.
    pub async fn run<T>(
        deadline: Option<&Deadline>,
        waiting: &Waiting,
        work: impl Future<Output = Result<T, GatewayError>>,
        blame: impl FnOnce(usize),
    ) -> Result<T, GatewayError> {
        let Some(deadline) = deadline else {
            return work.await;
        };
        match tokio::time::timeout_at(deadline.at, work).await {
            Ok(result) => result,
            Err(_) => {
                if !Deadline::client_is_slow(deadline.progress.as_ref()) {
                    if let Some(index) = waiting.get() {
                        blame(index);
                    }
                }
                Err(deadline.expired())
            }
        }
    }

    /// The end of one try that starts now: `try_timeout` from now, never past the deadline.
    pub fn try_ends(deadline: Option<&Deadline>, try_timeout: Option<Duration>) -> Option<Instant> {
        // Streams have no deadline, and a try of one is never repeated anyway.
        let at = deadline?.at;
        try_timeout.map(|t| at.min(Instant::now() + t))
    }
}

/// 408 if the client was still sending its body, else 504.
pub fn expired(upstream: &str, progress: Option<&BodyProgress>, limit: Duration) -> GatewayError {
    if Deadline::client_is_slow(progress) {
        GatewayError::request_timeout(limit)
    } else {
        GatewayError::upstream_timeout(upstream, limit)
    }
}

/// Which endpoint has the request and owes the answer right now, if any.
pub struct Waiting(AtomicUsize);

impl Default for Waiting {
    fn default() -> Self {
        Waiting::new()
    }
}

impl Waiting {
    const NONE: usize = usize::MAX;

    pub fn new() -> Waiting {
        Waiting(AtomicUsize::new(Self::NONE))
    }

    pub fn set(&self, index: usize) {
        self.0.store(index, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.0.store(Self::NONE, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<usize> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&i| i != Self::NONE)
    }
}
