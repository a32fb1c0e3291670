//! The process's memory settings: the allocator and how it gives memory back (issue 12).
//!
//! - **Allocator**: mimalloc (cargo feature `mimalloc`, on by default). The request path makes
//!   many small, short-lived allocations; under callgrind glibc's malloc cost 11 % more
//!   instructions per proxied request (127k against 112k). `--no-default-features` builds
//!   with the system allocator instead.
//! - **No transparent huge pages** ([`settle`]): with THP on (`madvise`, Debian's default),
//!   mimalloc asks for huge pages on its eagerly committed arenas, and every 2 MiB page
//!   touched is resident whole. Measured with `bench/rss.py` (one worker, 1,000 clients):
//!   baseline 20.8 → 13.4 MB, 1,000 idle keep-alive clients 53.0 → 36.1 MB. The request path
//!   gains nothing from huge pages at these sizes.
//! - **Freed memory goes back at once** ([`settle`], mimalloc only): mimalloc's `purge_delay`
//!   is 0, so pages freed when clients leave are returned to the OS right away instead of
//!   after a delay that only a later allocation would act on (an idle gateway never did:
//!   after 1,000 clients left, RSS stayed at their peak, 54 MB, against 21 MB with 0).
//!   `MIMALLOC_PURGE_DELAY` in the environment still wins.
//!
//! Deliberately not here: buffer sizes (hyper's, see `server` and `proxy::upstream`).

/// Applies the settings above; call first thing in `main`, before any thread starts.
pub fn settle() {
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process; its result
    // is ignored (an old kernel without it simply keeps THP).
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    #[cfg(feature = "mimalloc")]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // `mi_option_purge_delay` in mimalloc's C enum (stable across versions: retired
        // options keep their slots); the Rust bindings have no name for it yet.
        const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: sets a plain integer option; mimalloc reads it when it purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}
