//! What authentication costs per request: JWT verification cold (every signature checked,
//! token cache off) against cached (the verified-token cache answers), for HS256, RS256,
//! ES256 and EdDSA, and an API-key lookup (SHA-256, hash-map lookup, constant-time compare).
//!
//! Run: `cargo bench --bench auth -- --warm-up-time 1 --measurement-time 3`.

#[path = "../tests/support/keys.rs"]
mod keys;

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use keys::{key_sources, TestKey};
use pipeline_gateway::auth::{apikey, AuthMetrics, Authenticator};
use pipeline_gateway::config::auth::AuthConfig;
use serde_json::json;

const ISS: &str = "https://idp.example.com/";

fn authenticator(sources: &str, api_key: &str, cache: usize) -> Authenticator {
    let config: AuthConfig = toml::from_str(&format!(
        r#"
        token_cache_size = {cache}
        [[api_keys]]
        name = "bench"
        sha256 = "{}"
        role = "write"
        [[jwt]]
        issuer = "{ISS}"
        audiences = ["feldera-api"]
        algorithms = ["HS256", "RS256", "ES256", "EdDSA"]
        {sources}
        "#,
        apikey::hash(api_key)
    ))
    .expect("bench config");
    Authenticator::new(
        &config,
        "auth",
        pipeline_gateway::clock::system(),
        &AuthMetrics::default(),
    )
    .expect("authenticator")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys = [
        TestKey::hs256("hs"),
        TestKey::rs256("rs"),
        TestKey::es256("es"),
        TestKey::eddsa("ed"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let refs: Vec<&TestKey> = keys.iter().collect();
    let sources = key_sources(&refs, dir.path());
    let api_key = apikey::generate();
    let cold = authenticator(&sources, &api_key, 0);
    let cached = authenticator(&sources, &api_key, 10_000);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({ "iss": ISS, "sub": "alice", "aud": "feldera-api", "exp": now + 3600 });

    let mut group = c.benchmark_group("verify");
    for key in &keys {
        let token = key.token(&claims);
        assert!(runtime.block_on(cold.verify_bearer(&token)).is_ok());
        assert!(runtime.block_on(cached.verify_bearer(&token)).is_ok());
        group.bench_function(format!("{}/cold", key.alg()), |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(cold.verify_bearer(black_box(&token)).await.is_ok()) })
        });
        group.bench_function(format!("{}/cached", key.alg()), |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(cached.verify_bearer(black_box(&token)).await.is_ok()) })
        });
    }
    group.bench_function("apikey/lookup", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(cold.verify_bearer(black_box(&api_key)).await.is_ok()) })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
