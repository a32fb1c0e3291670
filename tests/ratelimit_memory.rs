//! Bounded memory: a million distinct keys against a limiter that may hold a tenth of them,
//! then a sweep, on a fake clock.
//!
//! Past `max_keys` the limiter keeps no new key: newcomers share one overflow budget (so they
//! get 429s once it is spent) while the keys it holds keep their own, and it asks for an early
//! sweep. The assertions are on keys held and decisions, never on time or RSS; the VmRSS
//! figures (this test runs alone in its binary) are printed for the record only.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use pipeline_gateway::config::ratelimit::Rate;
use pipeline_gateway::ratelimit::LocalLimiter;

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn key(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

#[test]
fn a_million_distinct_keys_past_max_keys_hold_the_cap_and_are_swept_back_down() {
    const KEYS: u32 = 1_000_000;
    const MAX_KEYS: u32 = 100_000;
    const BURST: u32 = 40;
    let clock = FakeRelativeClock::default();
    let limiter: LocalLimiter<IpAddr, FakeRelativeClock> = LocalLimiter::new(
        Rate::parse("20/s").unwrap(),
        BURST,
        MAX_KEYS as usize,
        clock.clone(),
    );
    let before = vm_rss_kib();

    // Up to the cap, every key gets its own budget.
    for i in 0..MAX_KEYS {
        let decision = limiter.decide(&key(i));
        assert!(decision.allowed, "key {i} is within the cap");
        assert_eq!(decision.remaining, BURST - 1, "key {i} has its own budget");
    }
    assert_eq!(limiter.len(), MAX_KEYS as usize);
    assert!(!limiter.is_full(), "no key overflowed yet");
    assert_eq!(limiter.take_overflowed(), 0);

    // Past it, the 900,000 newcomers share one budget of BURST: the first BURST pass, the
    // rest get 429s with a time to wait.
    let mut admitted = 0;
    for i in MAX_KEYS..KEYS {
        let decision = limiter.decide(&key(i));
        if decision.allowed {
            admitted += 1;
            assert_eq!(decision.remaining, BURST - admitted, "newcomer {i}");
        } else {
            assert!(decision.retry_after > Duration::ZERO, "newcomer {i}");
        }
    }
    assert_eq!(admitted, BURST, "newcomers share one overflow budget");
    let peak = vm_rss_kib();
    assert_eq!(limiter.len(), MAX_KEYS as usize, "no newcomer is held");
    assert!(limiter.is_full(), "the limiter asks for an early sweep");
    assert_eq!(limiter.take_overflowed(), u64::from(KEYS - MAX_KEYS));
    assert_eq!(limiter.take_overflowed(), 0, "the count is taken once");

    // A key it holds keeps its own budget though the overflow budget is spent.
    let held = limiter.decide(&key(7));
    assert!(held.allowed, "a held key is not in the overflow budget");
    assert_eq!(held.remaining, BURST - 2);
    assert!(!limiter.decide(&key(KEYS)).allowed, "a newcomer still is");

    // Every budget is full again after burst × interval (2 s): the sweep drops them all, and
    // a newcomer then gets a budget of its own.
    clock.advance(Duration::from_secs(3));
    assert_eq!(limiter.sweep(), 0);
    assert!(limiter.is_empty());
    assert!(!limiter.is_full(), "the sweep answered the request for one");
    let after = vm_rss_kib();
    let newcomer = limiter.decide(&key(KEYS + 1));
    assert!(newcomer.allowed);
    assert_eq!(
        newcomer.remaining,
        BURST - 1,
        "its own budget, not the overflow's"
    );
    assert_eq!(limiter.len(), 1);
    assert_eq!(
        limiter.take_overflowed(),
        1,
        "only the newcomer refused before the sweep"
    );
    eprintln!(
        "RSS: before {before} KiB, peak with {MAX_KEYS} of {KEYS} keys held {peak} KiB, \
         after sweep {after} KiB"
    );
}
