//! Cost of one rate-limit decision: in memory (`governor`, one hot key and many keys), and
//! in Redis (the Lua GCRA script against a `redis-server` this bench starts on a free port;
//! skipped with a message when `redis-server` is not installed).
//!
//! `cargo bench --bench ratelimit`

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(16379);
    let child = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => Redis(child),
        Err(error) => {
            eprintln!("redis bench skipped: cannot start redis-server: {error}");
            return;
        }
    };
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = RedisConfig {
        url,
        timeout: Duration::from_secs(1),
        on_error: Default::default(),
        key_prefix: "bench:".into(),
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
    drop(child);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = local, redis
}
criterion_main!(benches);
