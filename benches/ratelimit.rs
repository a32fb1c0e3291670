//! Cost of one rate-limit decision: in memory (`governor`, one hot key and many keys), and
//! in Redis (the Lua GCRA script against a `redis-server` this bench starts on a free port;
//! like the Redis tests, it fails when `redis-server` is not installed).
//!
//! `cargo bench --bench ratelimit`

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pipeline_gateway::config::ratelimit::{Rate, RedisConfig};
use pipeline_gateway::ratelimit::redis::RedisStore;
use pipeline_gateway::ratelimit::{LimiterClock, LocalLimiter};

fn local(c: &mut Criterion) {
    let limiter: LocalLimiter<IpAddr> = LocalLimiter::new(
        Rate::parse("1000000/s").unwrap(),
        1_000_000,
        1_000_000,
        LimiterClock::monotonic(),
    );
    let hot = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    c.bench_function("local decision, one key", |b| {
        b.iter(|| limiter.decide(&hot))
    });
    let mut i = 0u32;
    c.bench_function("local decision, 100k keys", |b| {
        b.iter(|| {
            i = (i + 1) % 100_000;
            limiter.decide(&IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        })
    });
}

// The same redis-server helper the Redis tests use (a free port, killed on drop); `pub`, like
// `tests/support`, because the bench uses only part of it.
#[path = "../tests/support/redis_server.rs"]
pub mod redis_server;

fn redis(c: &mut Criterion) {
    let server = redis_server::RedisServer::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = RedisConfig {
        timeout: Duration::from_secs(1),
        key_prefix: "bench:".into(),
        ..RedisConfig::single(url)
    };
    let store = runtime.block_on(async { RedisStore::connect(&config).unwrap() });
    let interval = Rate::parse("1000000/s").unwrap().interval();
    c.bench_function("redis decision (one round trip)", |b| {
        b.to_async(&runtime).iter(|| async {
            store
                .decide("bench:hot", interval, 1_000_000)
                .await
                .unwrap()
        })
    });
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = local, redis
}
criterion_main!(benches);
