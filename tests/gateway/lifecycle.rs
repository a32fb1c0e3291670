//! The operation this product started from, end to end, and the gateway's own lifecycle.

use std::time::Duration;

use feldera_standin::Fault;

use crate::support::*;

#[tokio::test]
async fn activating_a_standby_pipeline_reaches_running_through_the_gateway() {
    let (gw, _upstream) = pair().await;
    let reply = post(&format!(
        "{}/v0/pipelines/orders/activate?initial=Running",
        gw.url()
    ))
    .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert!(
        reply.json().as_str().unwrap().contains("Standby"),
        "{}",
        reply.text()
    );
    let status_url = format!("{}/v0/pipelines/orders?selector=status", gw.url());
    let running = eventually(Duration::from_secs(5), async || {
        get(&status_url).await.json()["deployment_status"] == "Running"
    })
    .await;
    assert!(running, "the pipeline reached Running");
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let (gw, upstream) = pair().await;
    upstream.set_fault(
        "/v0/pipelines/orders",
        Fault::Delay(Duration::from_millis(300)),
    );
    let addr = gw.local_addr();
    let url = format!("{}/v0/pipelines/orders", gw.url());
    let in_flight = tokio::spawn(async move { get(&url).await });
    let arrived = eventually(Duration::from_secs(5), async || {
        !upstream.requests().is_empty()
    })
    .await;
    assert!(arrived, "the request reached the upstream");
    gw.begin_shutdown();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "orders");
    // The listener is closed: new connections are refused.
    let closed = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(closed, "the listener closed");
    gw.wait().await;
}
