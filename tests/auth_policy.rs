//! Black-box tests of "whose token is it for": a real gateway on 127.0.0.1:0 in front of real
//! stand-in managers, over real sockets. Issuers bound to tenants, routes that name the
//! issuers they accept, token types (access tokens only), budgets shared by a tenant, and
//! API keys that do not tell an expired key from an unknown one. Every refusal is checked for
//! status, `error_code` and its interesting `details`.

mod common;
mod support;

use common::{gateway, send, standin, Reply};
use pipeline_gateway::auth::apikey;
use pipeline_gateway::Gateway;

/// The configuration of a gateway with an admin listener, one upstream per `(name, url)`,
/// and `rest` (routes, `[auth]`, `[rate_limit]`).
fn config(upstreams: &[(&str, String)], rest: &str) -> String {
    let mut text =
        String::from("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    for (name, url) in upstreams {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nendpoints = [\"{url}\"]\n\
             connect_timeout = \"1s\"\nrequest_timeout = \"5s\"\n"
        ));
    }
    text.push_str(rest);
    text
}

/// `GET path` with `Authorization: Bearer <bearer>` and more headers.
async fn get_as(gw: &Gateway, path: &str, bearer: &str, headers: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {bearer}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    send("GET", &format!("{}{path}", gw.url()), &all, b"").await
}

/// The value of one sample of the admin listener's `/metrics`, 0 when absent.
async fn metric(gw: &Gateway, sample: &str) -> u64 {
    let admin = gw.admin_addr().expect("admin listener");
    let text = send("GET", &format!("http://{admin}/metrics"), &[], b"")
        .await
        .text();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- API keys

#[tokio::test]
async fn an_expired_api_key_answers_exactly_like_an_unknown_one() {
    let manager = standin("a").await;
    let (live, old) = (apikey::generate(), apikey::generate());
    let gw = gateway(&config(
        &[("m", manager.url())],
        &format!(
            "[[routes]]\nupstream = \"m\"\ndefault = true\n\
             [auth]\n\
             [[auth.api_keys]]\nname = \"live\"\nsha256 = \"{}\"\nrole = \"read\"\n\
             [[auth.api_keys]]\nname = \"old\"\nsha256 = \"{}\"\nrole = \"read\"\n\
             expires = \"2001-01-01T00:00:00Z\"\n",
            apikey::hash(&live),
            apikey::hash(&old)
        ),
    ))
    .await;
    let expired = get_as(&gw, "/v0/pipelines", &old, &[]).await;
    let unknown = get_as(&gw, "/v0/pipelines", &apikey::generate(), &[]).await;
    let details = expired.error(401, "AuthenticationFailed");
    assert_eq!(details["reason"], "invalid_api_key");
    unknown.error(401, "AuthenticationFailed");
    assert_eq!(expired.body, unknown.body, "the same body, byte for byte");
    assert_eq!(
        expired.header("www-authenticate"),
        unknown.header("www-authenticate")
    );
    // Operators still tell them apart.
    let failures = "pipeline_gateway_auth_failures_total{reason=";
    assert_eq!(
        metric(&gw, &format!("{failures}\"expired_api_key\"}}")).await,
        1
    );
    assert_eq!(
        metric(&gw, &format!("{failures}\"invalid_api_key\"}}")).await,
        1
    );
    assert_eq!(get_as(&gw, "/v0/pipelines", &live, &[]).await.status, 200);
}
