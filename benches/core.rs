//! Micro-benchmarks of the request path's own logic: classification (route match part 1),
//! the route table (part 2), the canonical-path, name and `initial` checks, and rendering an
//! error body. `cargo bench --bench core`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use pipeline_gateway::catalog::classify;
use pipeline_gateway::config::Config;
use pipeline_gateway::errors::GatewayError;
use pipeline_gateway::routing::{RouteKey, RouteTable};
use pipeline_gateway::validate::{check_canonical, check_name, ActivateQuery};

fn routing(c: &mut Criterion) {
    c.bench_function("classify POST /v0/pipelines/{name}/activate", |b| {
        b.iter(|| {
            classify(
                black_box(&Method::POST),
                black_box("/v0/pipelines/orders/activate"),
            )
        })
    });
    c.bench_function("classify GET connector stats", |b| {
        b.iter(|| {
            classify(
                black_box(&Method::GET),
                black_box("/v0/pipelines/orders/tables/t/connectors/c/stats"),
            )
        })
    });
    let config = Config::from_toml(
        r#"
        [[upstreams]]
        name = "eu"
        endpoints = ["http://127.0.0.1:1"]
        [[upstreams]]
        name = "other"
        endpoints = ["http://127.0.0.1:2"]
        [[routes]]
        pipelines = ["prod-*", "billing", "eu-*-live"]
        upstream = "eu"
        [[routes]]
        pipelines = ["*"]
        upstream = "other"
        default = true
        "#,
    )
    .expect("valid");
    let table = RouteTable::build(&config).expect("valid");
    let key = |pipeline| RouteKey {
        path: "/v0/pipelines/x/activate",
        pipeline: Some(pipeline),
        tenant: None,
        console: false,
        credential: None,
    };
    c.bench_function("route table: glob hit", |b| {
        b.iter(|| table.select(black_box(key("prod-orders"))))
    });
    c.bench_function("route table: fall through to *", |b| {
        b.iter(|| table.select(black_box(key("orders"))))
    });
}

fn validation(c: &mut Criterion) {
    c.bench_function("canonical path", |b| {
        b.iter(|| check_canonical(black_box("/v0/pipelines/orders/activate")))
    });
    c.bench_function("pipeline name (valid, 20 bytes)", |b| {
        b.iter(|| check_name(black_box("orders-eu-west-1_abc")))
    });
    c.bench_function("activate query initial=Paused", |b| {
        b.iter(|| {
            ActivateQuery::parse(black_box(Some("initial=Paused"))).map(|q| q.forwarded_query())
        })
    });
}

fn errors(c: &mut Criterion) {
    c.bench_function("render NameDoesNotMatchPattern body", |b| {
        b.iter(|| {
            let error: GatewayError = check_name(black_box("-bad-")).unwrap_err().into();
            error.body_bytes()
        })
    });
    c.bench_function("render into response (405)", |b| {
        b.iter(|| {
            GatewayError::method_not_allowed(
                &Method::GET,
                black_box("/v0/pipelines/p/activate"),
                "POST",
            )
            .into_response()
        })
    });
}

criterion_group!(benches, routing, validation, errors);
criterion_main!(benches);
