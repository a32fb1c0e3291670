//! Black-box tests of edge authentication: a real gateway on 127.0.0.1:0 in front of a tiny
//! upstream that answers 200 with the request headers it received (so the tests see what the
//! manager would see), and a local JWKS server whose key set, availability and fetch count the
//! tests control. Every refusal is checked for status, `error_code` and `details.reason`.
//! Nothing sleeps to wait for time: waits poll with a deadline.

pub mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipeline_gateway::auth::apikey;
use pipeline_gateway::config::Config;
use pipeline_gateway::Gateway;
use serde_json::{json, Value};
use support::keys::{b64, hmac_sha256, jwks, key_sources, TestKey};
use support::{echo_upstream, serve};
use tokio::net::TcpListener;

/// A JWKS (and OpenID discovery) server the test controls.
struct JwksServer {
    addr: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> JwksServer {
        let document = Arc::new(Mutex::new(jwks(keys).to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicBool::new(true));
        let issuer = Arc::new(Mutex::new(String::new()));
        let (d, f, u, i) = (
            document.clone(),
            fetches.clone(),
            up.clone(),
            issuer.clone(),
        );
        let addr = serve(Arc::new(move |request: Request<Incoming>| {
            if !u.load(Ordering::SeqCst) {
                return Response::builder()
                    .status(503)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            let body = if request.uri().path() == "/.well-known/openid-configuration" {
                let issuer = i.lock().unwrap().clone();
                json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json") }).to_string()
            } else {
                f.fetch_add(1, Ordering::SeqCst);
                d.lock().unwrap().clone()
            };
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }))
        .await;
        *issuer.lock().unwrap() = format!("http://{addr}");
        JwksServer {
            addr,
            document,
            fetches,
            up,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        *self.document.lock().unwrap() = jwks(keys).to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

const ISS: &str = "https://idp.example.com/";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .floor()
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "alice", "aud": "feldera-api", "exp": now() + 600.0,
        "iat": now(), "feldera_role": "write", "tenant": "acme", "groups": ["g1", "g2"],
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// A gateway in front of `upstream`; `auth` is the `[auth]` part of the configuration.
async fn gateway(upstream: SocketAddr, upstream_extra: &str, auth: &str) -> Gateway {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [admin]
        listen = "127.0.0.1:0"
        [[upstreams]]
        name = "manager"
        endpoints = ["http://{upstream}"]
        {upstream_extra}
        [[routes]]
        pipelines = ["*"]
        upstream = "manager"
        default = true
        {auth}
        "#
    );
    let config = Config::from_toml(&text).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Gateway::start_on(listener, config).await.unwrap()
}

/// Files the configuration points at, kept until the test ends.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error_code"].as_str().unwrap_or("")
    }
    fn reason(&self) -> &str {
        self.body["details"]["reason"].as_str().unwrap_or("")
    }
    /// A header the upstream received.
    fn upstream(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }
    fn assert_refused(&self, status: u16, code: &str, reason: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.code(), code, "{}", self.body);
        assert_eq!(self.reason(), reason, "{}", self.body);
    }
}

async fn send(gateway: &Gateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", gateway.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(gateway: &Gateway, path: &str, bearer: &str) -> Answer {
    let auth = format!("Bearer {bearer}");
    send(gateway, Method::GET, path, &[("authorization", &auth)]).await
}

/// `[auth]` with one JWT issuer whose keys come from `sources` (see `key_sources`), plus
/// `extra`.
fn jwt_auth(sources: &str, algorithms: &[&str], extra: &str) -> String {
    format!(
        r#"
        [auth]
        claim_headers = {{ sub = "x-feldera-user", groups = "x-feldera-groups" }}
        {extra}
        [[auth.jwt]]
        issuer = "{ISS}"
        audiences = ["feldera-api"]
        algorithms = {algorithms:?}
        {sources}
        leeway = "30s"
        role_claim = "feldera_role"
        tenant_claim = "tenant"
        "#
    )
}

fn api_key_auth(keys: &[(&str, &str, &str, &str)]) -> String {
    let mut text = String::from("[auth]\n");
    for (name, key, role, extra) in keys {
        text.push_str(&format!(
            "[[auth.api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\ntenant = \"acme\"\n{extra}\n",
            apikey::hash(key)
        ));
    }
    text
}

/// Polls `check` until it holds or 10 s pass.
async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- API keys

#[tokio::test]
async fn api_key_principal_reaches_the_upstream_with_its_tenant() {
    let key = apikey::generate();
    let gw = gateway(
        echo_upstream().await,
        "",
        &api_key_auth(&[("ci", &key, "write", "")]),
    )
    .await;
    let answer = get(&gw, "/v0/pipelines", &key).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.upstream("feldera-tenant"), Some("acme"));
    assert_eq!(
        answer.upstream("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    let post = send(
        &gw,
        Method::POST,
        "/v0/pipelines/orders/activate",
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(
        post.status,
        StatusCode::OK,
        "write may activate: {}",
        post.body
    );
    assert_eq!(
        gw.authenticator().verifications(),
        0,
        "API keys need no signature"
    );
}

#[tokio::test]
async fn wrong_api_key_is_401_invalid_api_key() {
    let key = apikey::generate();
    let gw = gateway(
        echo_upstream().await,
        "",
        &api_key_auth(&[("ci", &key, "write", "")]),
    )
    .await;
    let answer = get(&gw, "/v0/pipelines", &apikey::generate()).await;
    answer.assert_refused(401, "AuthenticationFailed", "invalid_api_key");
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer realm=\"pipeline-gateway\", error=\"invalid_token\""));
    assert!(
        !answer.body.to_string().contains(&key[7..]),
        "no key material echoed"
    );
}

#[tokio::test]
async fn read_key_on_activate_is_403_with_required_and_actual() {
    let key = apikey::generate();
    let gw = gateway(
        echo_upstream().await,
        "",
        &api_key_auth(&[("viewer", &key, "read", "")]),
    )
    .await;
    let answer = send(
        &gw,
        Method::POST,
        "/v0/pipelines/orders/activate",
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.code(), "InsufficientPermissions");
    assert_eq!(
        answer.body["message"],
        "Insufficient permissions: this action requires the 'write' role, but the caller has 'read'"
    );
    assert_eq!(
        answer.body["details"],
        json!({ "required": "write", "actual": "read" })
    );
}

#[tokio::test]
async fn expired_api_key_is_401_invalid_api_key() {
    let key = apikey::generate();
    let auth = api_key_auth(&[("old", &key, "owner", "expires = \"2001-01-01T00:00:00Z\"")]);
    let gw = gateway(echo_upstream().await, "", &auth).await;
    get(&gw, "/v0/pipelines", &key).await.assert_refused(
        401,
        "AuthenticationFailed",
        "invalid_api_key",
    );
}

#[tokio::test]
async fn api_keys_file_is_reread_when_it_changes() {
    let files = Files::new();
    let (first, second) = (apikey::generate(), apikey::generate());
    let entry = |name: &str, key: &str| {
        format!(
            "[[api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"read\"\n",
            apikey::hash(key)
        )
    };
    let path = files.write("keys.toml", &entry("first", &first));
    let auth = format!("[auth]\napi_keys_file = \"{path}\"\napi_keys_reload = \"100ms\"\n");
    let gw = gateway(echo_upstream().await, "", &auth).await;
    assert_eq!(
        get(&gw, "/v0/pipelines", &first).await.status,
        StatusCode::OK
    );
    files.write("keys.toml", &entry("second-key", &second));
    eventually(async || get(&gw, "/v0/pipelines", &second).await.status == StatusCode::OK).await;
    get(&gw, "/v0/pipelines", &first).await.assert_refused(
        401,
        "AuthenticationFailed",
        "invalid_api_key",
    );
}

// ---------------------------------------------------------------- missing, public, unclassified

#[tokio::test]
async fn missing_credentials_is_401_with_a_bare_challenge() {
    let gw = gateway(echo_upstream().await, "", &api_key_auth(&[])).await;
    let answer = send(&gw, Method::GET, "/v0/pipelines", &[]).await;
    answer.assert_refused(401, "AuthenticationFailed", "missing_credentials");
    assert_eq!(
        answer.headers["www-authenticate"],
        "Bearer realm=\"pipeline-gateway\""
    );
}

#[tokio::test]
async fn public_paths_need_no_credentials_and_are_configurable() {
    let gw = gateway(echo_upstream().await, "", &api_key_auth(&[])).await;
    for path in ["/healthz", "/config/authentication", "/robots.txt"] {
        let answer = send(&gw, Method::GET, path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    let gw = gateway(
        echo_upstream().await,
        "",
        "[auth]\npublic_paths = [\"/healthz\", \"/v0/config\"]\n",
    )
    .await;
    assert_eq!(
        send(&gw, Method::GET, "/v0/config", &[]).await.status,
        StatusCode::OK
    );
    send(&gw, Method::GET, "/robots.txt", &[])
        .await
        .assert_refused(401, "AuthenticationFailed", "missing_credentials");
}

#[tokio::test]
async fn unclassified_v0_paths_are_403_unless_configured() {
    let key = apikey::generate();
    let mut auth = api_key_auth(&[("boss", &key, "owner", "")]);
    auth.push_str("[[auth.routes]]\npath = \"/v0/foo\"\nmethods = [\"GET\"]\nrole = \"read\"\n");
    let gw = gateway(echo_upstream().await, "", &auth).await;
    assert_eq!(get(&gw, "/v0/foo", &key).await.status, StatusCode::OK);
    let answer = get(&gw, "/v0/bar", &key).await;
    answer.assert_refused(403, "InsufficientPermissions", "unclassified_endpoint");
    assert_eq!(answer.body["details"]["actual"], "owner");
    // Without a credential it is 401 first: anonymous clients learn nothing.
    send(&gw, Method::GET, "/v0/bar", &[]).await.assert_refused(
        401,
        "AuthenticationFailed",
        "missing_credentials",
    );
}

#[tokio::test]
async fn mode_off_forwards_everything_as_an_anonymous_owner_without_the_clients_tenant() {
    let gw = gateway(echo_upstream().await, "", "[auth]\nmode = \"off\"\n").await;
    let answer = send(
        &gw,
        Method::POST,
        "/v0/pipelines/orders/activate",
        &[("feldera-tenant", "anything")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Nobody verified the tenant: it does not reach the manager.
    assert_eq!(answer.upstream("feldera-tenant"), None);
    assert_eq!(
        send(&gw, Method::GET, "/v0/unlisted", &[]).await.status,
        StatusCode::OK
    );
    // Unless the operator chose to believe it.
    let trusting = gateway(
        echo_upstream().await,
        "",
        "[auth]\nmode = \"off\"\ntrust_tenant_header = true\n",
    )
    .await;
    let answer = send(
        &trusting,
        Method::POST,
        "/v0/pipelines/orders/activate",
        &[("feldera-tenant", "anything")],
    )
    .await;
    assert_eq!(answer.upstream("feldera-tenant"), Some("anything"));
}

#[tokio::test]
async fn a_clients_tenant_on_a_public_path_never_reaches_the_manager() {
    let gw = gateway(echo_upstream().await, "", "[auth]\n").await;
    let answer = send(
        &gw,
        Method::GET,
        "/healthz",
        &[("feldera-tenant", "victim")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.upstream("feldera-tenant"), None);
}

// ---------------------------------------------------------------- tenants and identity upstream

#[tokio::test]
async fn tenant_spoofing_is_403_not_a_tenant_member() {
    let files = Files::new();
    let key = TestKey::hs256("k1");
    let sources = key_sources(&[&key], files.dir.path());
    let api_key = apikey::generate();
    let mut auth = jwt_auth(&sources, &["HS256"], "");
    auth.push_str(&format!(
        "[[auth.api_keys]]\nname = \"ci\"\nsha256 = \"{}\"\nrole = \"write\"\ntenant = \"acme\"\n",
        apikey::hash(&api_key)
    ));
    let gw = gateway(echo_upstream().await, "", &auth).await;
    let token = key.token(&claims());
    for bearer in [token.as_str(), api_key.as_str()] {
        let auth_header = format!("Bearer {bearer}");
        let answer = send(
            &gw,
            Method::GET,
            "/v0/pipelines",
            &[("authorization", &auth_header), ("feldera-tenant", "evil")],
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert_eq!(answer.code(), "NotATenantMember");
        assert_eq!(answer.body["details"]["tenant"], "evil");
        let own = send(
            &gw,
            Method::GET,
            "/v0/pipelines",
            &[("authorization", &auth_header), ("feldera-tenant", "acme")],
        )
        .await;
        assert_eq!(own.status, StatusCode::OK);
        assert_eq!(own.upstream("feldera-tenant"), Some("acme"));
    }
}

#[tokio::test]
async fn jwt_principal_reaches_the_upstream_with_tenant_and_claim_headers() {
    let files = Files::new();
    let key = TestKey::rs256("rsa-1");
    let jwks_file = files.write("jwks.json", &jwks(&[&key]).to_string());
    let gw = gateway(
        echo_upstream().await,
        "",
        &jwt_auth(&format!("jwks_file = \"{jwks_file}\""), &["RS256"], ""),
    )
    .await;
    let token = key.token(&claims());
    let answer = send(
        &gw,
        Method::POST,
        "/v0/pipelines/orders/activate",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-feldera-user", "mallory"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.upstream("feldera-tenant"), Some("acme"));
    assert_eq!(
        answer.upstream("x-feldera-user"),
        Some("alice"),
        "client copy replaced"
    );
    assert_eq!(answer.upstream("x-feldera-groups"), Some("g1, g2"));
    // A token without the claim: the client's copy is still removed.
    let plain = key.token(&without(claims(), "groups"));
    let answer = send(
        &gw,
        Method::GET,
        "/v0/pipelines",
        &[
            ("authorization", &format!("Bearer {plain}")),
            ("x-feldera-groups", "admins"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.upstream("x-feldera-groups"), None);
}

#[tokio::test]
async fn websocket_subprotocol_credential_is_accepted() {
    let files = Files::new();
    let key = TestKey::es256("ec-1");
    let jwks_file = files.write("jwks.json", &jwks(&[&key]).to_string());
    let gw = gateway(
        echo_upstream().await,
        "",
        &jwt_auth(&format!("jwks_file = \"{jwks_file}\""), &["ES256"], ""),
    )
    .await;
    let token = key.token(&claims());
    let protocol = format!(
        "feldera-ws-v1, feldera-bearer.{}, feldera-tenant.{}",
        b64(&token),
        b64("acme")
    );
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", protocol.as_str()),
    ];
    let answer = send(&gw, Method::GET, "/v0/pipelines/orders/query", &upgrade).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.upstream("feldera-tenant"), Some("acme"));
    let spoof = format!(
        "feldera-bearer.{}, feldera-tenant.{}",
        b64(&token),
        b64("evil")
    );
    let mut spoofed = upgrade;
    spoofed[4] = ("sec-websocket-protocol", spoof.as_str());
    let answer = send(&gw, Method::GET, "/v0/pipelines/orders/query", &spoofed).await;
    assert_eq!(answer.code(), "NotATenantMember", "{}", answer.body);
}

#[tokio::test]
async fn credentials_pass_strip_and_replace_as_seen_by_the_upstream() {
    let key = apikey::generate();
    let gateway_key = apikey::generate();
    // SAFETY: set once, before any gateway reads it; no other test uses this variable.
    unsafe { std::env::set_var("AUTH_TEST_GATEWAY_KEY", &gateway_key) };
    let auth = api_key_auth(&[("ci", &key, "write", "")]);
    let upstream = echo_upstream().await;
    let protocol = format!("feldera-ws-v1, feldera-bearer.{}", b64(&key));
    for (mode, expected) in [
        ("credentials = \"pass\"", Some(format!("Bearer {key}"))),
        ("credentials = \"strip\"", None),
        (
            "credentials = \"replace\"\nbearer_env = \"AUTH_TEST_GATEWAY_KEY\"",
            Some(format!("Bearer {gateway_key}")),
        ),
    ] {
        let gw = gateway(upstream, mode, &auth).await;
        let answer = get(&gw, "/v0/pipelines", &key).await;
        assert_eq!(answer.status, StatusCode::OK, "{mode}: {}", answer.body);
        assert_eq!(
            answer.upstream("authorization"),
            expected.as_deref(),
            "{mode}"
        );
        assert_eq!(answer.upstream("feldera-tenant"), Some("acme"), "{mode}");
        // The WebSocket form of the same credential follows the same rule.
        let ws = send(
            &gw,
            Method::GET,
            "/v0/pipelines/orders/query",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-protocol", &protocol),
            ],
        )
        .await;
        assert_eq!(ws.status, StatusCode::OK, "{mode}: {}", ws.body);
        let leaked = ws
            .upstream("sec-websocket-protocol")
            .is_some_and(|p| p.contains("feldera-bearer."));
        assert_eq!(leaked, mode.contains("pass"), "{mode}");
    }
}

// ---------------------------------------------------------------- JWT: one test per reason

#[tokio::test]
async fn every_jwt_refusal_reports_its_reason() {
    let files = Files::new();
    let rsa = TestKey::rs256("rsa");
    let hs = TestKey::hs256("hs");
    let sources = key_sources(&[&rsa, &hs], files.dir.path());
    let gw = gateway(
        echo_upstream().await,
        "",
        &jwt_auth(&sources, &["RS256", "HS256"], ""),
    )
    .await;
    let good = claims();
    let header = |alg: &str, kid: &str| json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string();
    let body = good.to_string();

    let mut cases: Vec<(String, String, &str)> = Vec::new();
    let mut case = |name: &str, token: String, reason: &'static str| {
        cases.push((name.to_owned(), token, reason));
    };
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = header(alg, "rsa");
        case(
            &format!("alg {alg} unsigned"),
            format!("{}.{}.", b64(&h), b64(&body)),
            "unsupported_algorithm",
        );
        case(
            &format!("alg {alg} signed"),
            rsa.token_raw(&h, &body),
            "unsupported_algorithm",
        );
    }
    let h = header("HS256", "rsa");
    let input = format!("{}.{}", b64(&h), b64(&body));
    let forged = format!(
        "{input}.{}",
        b64(hmac_sha256(&rsa.public_bytes(), input.as_bytes()))
    );
    case(
        "HS256 signed with the RSA public key",
        forged,
        "unsupported_algorithm",
    );
    case(
        "ES256 not allowed",
        TestKey::es256("rsa").token(&good),
        "unsupported_algorithm",
    );
    case(
        "unknown kid",
        TestKey::rs256("nobody").token(&good),
        "unknown_key",
    );
    let token = rsa.token(&good);
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let (h64, _) = signed.split_once('.').unwrap();
    let tampered = format!(
        "{h64}.{}.{signature}",
        b64(with(good.clone(), "feldera_role", json!("owner")).to_string())
    );
    case("tampered payload", tampered, "invalid_signature");
    case(
        "wrong secret",
        TestKey::hs256("hs").token(&good),
        "invalid_signature",
    );
    case(
        "expired 1 s beyond leeway",
        rsa.token(&with(good.clone(), "exp", json!(now() - 31.0))),
        "token_expired",
    );
    case(
        "future nbf",
        rsa.token(&with(good.clone(), "nbf", json!(now() + 120.0))),
        "token_not_yet_valid",
    );
    case(
        "audience array without ours",
        rsa.token(&with(good.clone(), "aud", json!(["a", "b"]))),
        "invalid_audience",
    );
    case(
        "issuer without its trailing slash",
        rsa.token(&with(good.clone(), "iss", json!("https://idp.example.com"))),
        "invalid_issuer",
    );
    case(
        "no exp",
        rsa.token(&without(good.clone(), "exp")),
        "missing_claim",
    );
    case(
        "no sub",
        rsa.token(&without(good.clone(), "sub")),
        "missing_claim",
    );
    case(
        "no aud",
        rsa.token(&without(good.clone(), "aud")),
        "missing_claim",
    );
    for param in ["crit", "jku", "x5u", "jwk", "x5c"] {
        let h = json!({ "alg": "RS256", "kid": "rsa", param: ["b64"] }).to_string();
        case(
            &format!("header {param}"),
            rsa.token_raw(&h, &body),
            "unsupported_header",
        );
    }
    case(
        "non-base64url characters",
        token.replacen('.', ".*", 1),
        "malformed_credentials",
    );
    case("padding", format!("{token}=="), "malformed_credentials");
    case("two segments", signed.to_owned(), "malformed_credentials");
    let dup = body.replacen('{', r#"{"sub":"mallory","#, 1);
    case(
        "duplicate JSON keys",
        rsa.token_raw(&header("RS256", "rsa"), &dup),
        "malformed_credentials",
    );
    case(
        "not JSON",
        format!("{}.{}.{signature}", b64("{"), b64(&body)),
        "malformed_credentials",
    );
    case(
        "9 KiB token",
        format!("{token}{}", "A".repeat(9 * 1024)),
        "credentials_too_large",
    );

    let before = gw.authenticator().verifications();
    for (name, token, reason) in &cases {
        let answer = get(&gw, "/v0/pipelines", token).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "AuthenticationFailed", "{name}");
        assert_eq!(answer.reason(), *reason, "{name}: {}", answer.body);
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(
            !answer.body.to_string().contains("alice"),
            "{name}: token content echoed"
        );
    }
    // Only the two forged-signature cases got as far as a signature check.
    assert_eq!(gw.authenticator().verifications() - before, 2);
    // And the good token passes, once verified, then from the cache.
    assert_eq!(
        get(&gw, "/v0/pipelines", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/v0/pipelines", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(gw.authenticator().verifications() - before, 3);
}

#[tokio::test]
async fn a_one_megabyte_token_is_refused_before_auth() {
    let gw = gateway(echo_upstream().await, "", &api_key_auth(&[])).await;
    let token = "A".repeat(1024 * 1024);
    let answer = get(&gw, "/v0/pipelines", &token).await;
    // The header limit (32 KiB by default) answers first, in the schema when hyper lets it.
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(gw.authenticator().verifications(), 0);
}

// ---------------------------------------------------------------- key sets over HTTP

fn url_auth(url: &str, cooldown: &str) -> String {
    format!(
        r#"
        [auth]
        [[auth.jwt]]
        issuer = "{ISS}"
        audiences = ["feldera-api"]
        algorithms = ["RS256", "ES256", "EdDSA"]
        jwks_url = "{url}"
        refetch_cooldown = "{cooldown}"
        tenant_claim = "tenant"
        "#
    )
}

async fn wait_ready(gw: &Gateway) {
    let admin = gw.admin_addr().unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    eventually(async || {
        let uri = format!("http://{admin}/readyz");
        let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
        client
            .request(request)
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

#[tokio::test]
async fn a_new_kid_is_accepted_after_rotation_without_restart() {
    let (old, new) = (TestKey::es256("2024"), TestKey::eddsa("2025"));
    let idp = JwksServer::start(&[&old]).await;
    let gw = gateway(echo_upstream().await, "", &url_auth(&idp.url(), "1h")).await;
    wait_ready(&gw).await;
    assert_eq!(
        get(&gw, "/v0/pipelines", &old.token(&claims()))
            .await
            .status,
        StatusCode::OK
    );
    idp.set_keys(&[&new]);
    let fetches = idp.fetches();
    let answer = get(&gw, "/v0/pipelines", &new.token(&claims())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        idp.fetches(),
        fetches + 1,
        "one refetch for the unknown kid"
    );
}

#[tokio::test]
async fn a_published_symmetric_key_never_verifies_anything() {
    let (rsa, secret) = (TestKey::rs256("rsa"), TestKey::hs256("shared"));
    // The identity provider publishes its HMAC secret beside its RSA key: anyone can read it
    // and mint tokens with it.
    let idp = JwksServer::start(&[&rsa, &secret]).await;
    let auth = url_auth(&idp.url(), "1h").replace(
        "algorithms = [\"RS256\", \"ES256\", \"EdDSA\"]",
        "algorithms = [\"RS256\"]",
    );
    let gw = gateway(echo_upstream().await, "", &auth).await;
    wait_ready(&gw).await;
    let minted = secret.token(&with(claims(), "feldera_role", json!("owner")));
    let answer = get(&gw, "/v0/pipelines", &minted).await;
    answer.assert_refused(401, "AuthenticationFailed", "unsupported_algorithm");
    assert_eq!(gw.authenticator().key_set_refusals("symmetric_key"), 1);
    // The asymmetric key of the same set works.
    assert_eq!(
        get(&gw, "/v0/pipelines", &rsa.token(&claims()))
            .await
            .status,
        StatusCode::OK
    );
    // And HS256 cannot even be configured for an issuer whose keys are fetched.
    let with_hs = url_auth(&idp.url(), "1h").replace(
        "algorithms = [\"RS256\", \"ES256\", \"EdDSA\"]",
        "algorithms = [\"RS256\", \"HS256\"]",
    );
    let text = format!(
        "[[upstreams]]\nname = \"m\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
         [[routes]]\nupstream = \"m\"\ndefault = true\n{with_hs}"
    );
    let error = pipeline_gateway::config::Config::from_toml(&text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("auth.jwt[0].algorithms[1]: HS256 needs a shared secret"),
        "{error}"
    );
}

#[tokio::test]
async fn a_key_set_with_a_duplicate_kid_is_refused_and_the_last_good_one_kept() {
    let (first, second) = (TestKey::rs256("k1"), TestKey::es256("k2"));
    let idp = JwksServer::start(&[&first]).await;
    let gw = gateway(echo_upstream().await, "", &url_auth(&idp.url(), "0s")).await;
    wait_ready(&gw).await;
    // The new document lists kid "k1" twice (its old RSA key and an attacker's EC key).
    let impostor = TestKey::es256("k1");
    idp.set_keys(&[&first, &impostor, &second]);
    let fetches = idp.fetches();
    // An unknown kid makes the gateway fetch the new document — which it refuses.
    get(&gw, "/v0/pipelines", &second.token(&claims()))
        .await
        .assert_refused(401, "AuthenticationFailed", "unknown_key");
    assert_eq!(idp.fetches(), fetches + 1);
    assert_eq!(gw.authenticator().key_set_refusals("duplicate_kid"), 1);
    // Never "try both": the impostor's token is refused, the old key still verifies.
    get(&gw, "/v0/pipelines", &impostor.token(&claims()))
        .await
        .assert_refused(401, "AuthenticationFailed", "unsupported_algorithm");
    assert_eq!(
        get(&gw, "/v0/pipelines", &first.token(&claims()))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_without_kid_is_refused_when_the_issuer_has_several_keys() {
    let (a, b) = (TestKey::rs256("a"), TestKey::rs256("b"));
    let no_kid = |key: &TestKey| {
        let header = json!({ "alg": "RS256", "typ": "JWT" }).to_string();
        key.token_raw(&header, &claims().to_string())
    };
    let idp = JwksServer::start(&[&a]).await;
    let gw = gateway(echo_upstream().await, "", &url_auth(&idp.url(), "1h")).await;
    wait_ready(&gw).await;
    // One key: which one is meant is clear.
    assert_eq!(
        get(&gw, "/v0/pipelines", &no_kid(&a)).await.status,
        StatusCode::OK
    );
    let idp2 = JwksServer::start(&[&a, &b]).await;
    let gw2 = gateway(echo_upstream().await, "", &url_auth(&idp2.url(), "1h")).await;
    wait_ready(&gw2).await;
    get(&gw2, "/v0/pipelines", &no_kid(&a))
        .await
        .assert_refused(401, "AuthenticationFailed", "unknown_key");
}

#[tokio::test]
async fn old_keys_keep_working_while_the_identity_provider_is_down() {
    let key = TestKey::rs256("k1");
    let idp = JwksServer::start(&[&key]).await;
    let gw = gateway(echo_upstream().await, "", &url_auth(&idp.url(), "1h")).await;
    wait_ready(&gw).await;
    idp.up.store(false, Ordering::SeqCst);
    // An unknown kid makes the gateway try the (failing) provider once …
    get(&gw, "/v0/pipelines", &TestKey::es256("k2").token(&claims()))
        .await
        .assert_refused(401, "AuthenticationFailed", "unknown_key");
    // … and the last good set still verifies fresh tokens.
    let fresh = key.token(&with(claims(), "sub", json!("bob")));
    assert_eq!(
        get(&gw, "/v0/pipelines", &fresh).await.status,
        StatusCode::OK
    );
    assert!(gw.authenticator().readiness().is_ok());
}

#[tokio::test]
async fn a_thousand_concurrent_unknown_kids_cause_one_fetch_per_cooldown() {
    let key = TestKey::es256("known");
    let idp = JwksServer::start(&[&key]).await;
    let gw = gateway(echo_upstream().await, "", &url_auth(&idp.url(), "1h")).await;
    wait_ready(&gw).await;
    let before = idp.fetches();
    let stranger = TestKey::es256("stranger");
    let tokens: Vec<String> = (0..1000)
        .map(|i| stranger.token(&with(claims(), "sub", json!(format!("user{i}")))))
        .collect();
    let authenticator = gw.authenticator().clone();
    let results = futures_util::future::join_all(tokens.iter().map(|token| {
        let authenticator = authenticator.clone();
        async move { authenticator.verify_bearer(token).await.map(|_| ()) }
    }))
    .await;
    assert!(results
        .iter()
        .all(|r| r.as_ref().err().and_then(|e| e.reason())
            == Some(pipeline_gateway::auth::Reason::UnknownKey)));
    assert_eq!(
        idp.fetches() - before,
        1,
        "one fetch for 1,000 unknown kids"
    );
    // Over HTTP too, within the same cooldown: no fetch at all.
    let mut requests = Vec::new();
    for token in tokens.iter().take(50) {
        requests.push(get(&gw, "/v0/pipelines", token));
    }
    for answer in futures_util::future::join_all(requests).await {
        answer.assert_refused(401, "AuthenticationFailed", "unknown_key");
    }
    assert_eq!(idp.fetches() - before, 1);
    assert_eq!(gw.authenticator().verifications(), 0);
}

#[tokio::test]
async fn no_key_set_ever_loaded_is_503_and_not_ready() {
    let key = TestKey::rs256("k1");
    let idp = JwksServer::start(&[&key]).await;
    idp.up.store(false, Ordering::SeqCst);
    let gw = gateway(echo_upstream().await, "", &url_auth(&idp.url(), "1h")).await;
    let answer = get(&gw, "/v0/pipelines", &key.token(&claims())).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), "AuthenticationUnavailable");
    assert_eq!(answer.headers["retry-after"], "5");
    assert!(gw.authenticator().readiness().is_err());
    let admin = gw.admin_addr().unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let readyz = client
        .request(
            Request::get(format!("http://{admin}/readyz"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The provider comes back: the background refresh loads the set and requests pass.
    idp.up.store(true, Ordering::SeqCst);
    wait_ready(&gw).await;
    assert_eq!(
        get(&gw, "/v0/pipelines", &key.token(&claims()))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn discovery_finds_the_key_set_of_the_issuer() {
    let key = TestKey::eddsa("k1");
    let idp = JwksServer::start(&[&key]).await;
    let issuer = format!("http://{}", idp.addr);
    let auth = format!(
        "[auth]\n[[auth.jwt]]\nissuer = \"{issuer}\"\naudiences = [\"feldera-api\"]\n\
         algorithms = [\"EdDSA\"]\ndiscovery = true\n"
    );
    let gw = gateway(echo_upstream().await, "", &auth).await;
    wait_ready(&gw).await;
    let token = key.token(&with(claims(), "iss", json!(issuer)));
    let answer = get(&gw, "/v0/pipelines", &token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}
