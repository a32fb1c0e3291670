//! Per-core runtimes for `--workers N` (N ≥ 2): what nginx's workers and pingora do.
//!
//! The thread that starts the gateway runs a current-thread tokio runtime and is worker 0;
//! [`Workers::spawn`] starts N − 1 more OS threads, each running a current-thread runtime of
//! its own. Every worker accepts on its own `SO_REUSEPORT` listener bound to the same address
//! (the kernel spreads new connections over them) and serves them with the same current
//! snapshot (`server::Current`), so a reload reaches every worker at once. A connection, and
//! every task it spawns (its upstream connections included), stays on the worker that
//! accepted it: no work stealing and no cross-thread wake-ups on the request path.
//!
//! What is shared across workers is shared through the snapshot and is thread-safe: the rate
//! limiters (one budget per key for the whole process: a burst of N is N across all cores),
//! the token cache, the upstreams' pools (each worker takes its own idle connections first,
//! see `proxy::pool`), health and outlier state, metrics.
//!
//! Deliberately on worker 0 only: the admin listener, reloads, the configuration watcher and
//! the runtime's background work (key-set refreshes, health checks, the limiter's sweeper).
//! Their timers live there; what they produce is read by every worker.
//!
//! A worker's runtime stops when the gateway has drained ([`Workers::stop`]); a worker that
//! is blocked by a long CPU-bound request delays only the connections it accepted (as with
//! nginx's workers) — the trade for a request path without stealing.

use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// One extra runtime's thread and how to stop it.
struct Thread {
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

/// The extra per-core runtimes (none: the gateway serves on the caller's runtime only).
#[derive(Default)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Mutex<Vec<Thread>>,
}

impl Workers {
    /// No extra runtimes: everything is served by the runtime the gateway starts on.
    pub fn none() -> Workers {
        Workers::default()
    }

    /// Starts `extra` threads, each with a current-thread runtime (workers 1..=extra; the
    /// caller's thread is worker 0).
    pub fn spawn(extra: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(extra);
        let mut threads = Vec::with_capacity(extra);
        for index in 1..=extra {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let join = std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    crate::proxy::pool::set_worker(index);
                    // The runtime makes progress only while this thread is inside `block_on`.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            threads.push(Thread { stop, join });
        }
        Ok(Workers {
            handles,
            threads: Mutex::new(threads),
        })
    }

    /// The extra runtimes (worker 0, the caller's, is not among them).
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// How many runtimes serve clients: the caller's and the extra ones.
    pub fn count(&self) -> usize {
        self.handles.len() + 1
    }

    /// Stops the extra runtimes (dropping whatever tasks they still hold) and waits for their
    /// threads.
    pub async fn stop(&self) {
        let threads: Vec<Thread> = self
            .threads
            .lock()
            .map(|mut threads| threads.drain(..).collect())
            .unwrap_or_default();
        for thread in threads {
            let _ = thread.stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_their_own_threads_and_stop_with_the_workers() {
        let workers = Workers::spawn(2).unwrap();
        assert_eq!(workers.count(), 3);
        let mut names = Vec::new();
        for handle in workers.handles() {
            let name = handle
                .spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap();
            names.push(name.unwrap_or_default());
        }
        assert_eq!(names, ["gateway-worker-1", "gateway-worker-2"]);
        workers.stop().await;
        // A stopped runtime runs nothing more.
        assert!(workers.handles()[0].spawn(async {}).await.is_err());
    }
}
