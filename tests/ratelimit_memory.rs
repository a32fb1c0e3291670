//! Bounded memory: one million distinct keys, then a sweep with a fake clock.
//!
//! Runs in its own test binary so the process's RSS belongs to this test alone. The figures
//! (VmRSS before, at peak and after the sweep) are printed for the record; the assertions are
//! on the entry count, never on time or exact RSS (the allocator decides what it returns).

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

#[test]
fn a_million_distinct_keys_are_swept_back_down() {
    const KEYS: u32 = 1_000_000;
    let clock = FakeRelativeClock::default();
    let limiter: LocalLimiter<IpAddr, FakeRelativeClock> = LocalLimiter::new(
        Rate::parse("20/s").unwrap(),
        40,
        2 * KEYS as usize,
        clock.clone(),
    );
    let before = vm_rss_kib();
    for i in 0..KEYS {
        let key = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert!(limiter.decide(&key).allowed);
    }
    assert_eq!(limiter.len(), KEYS as usize);
    let peak = vm_rss_kib();
    // Every budget is full again after burst × interval (2 s): the sweep drops them all.
    clock.advance(Duration::from_secs(3));
    assert_eq!(limiter.sweep(), 0);
    let after = vm_rss_kib();
    eprintln!(
        "RSS: before {before} KiB, peak with {KEYS} keys {peak} KiB, after sweep {after} KiB"
    );
    assert!(limiter.is_empty());
}
