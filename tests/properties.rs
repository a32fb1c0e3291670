//! Property tests (issue 13 §6) of the parsers an attacker feeds, through the public API, each
//! with the invariant it must hold for any input — not only the examples the unit tests list:
//!
//! - canonical path: never panics; an accepted path is one no decoder or normaliser changes
//!   (no `%`, no dot or empty segment, parses as a URI path unchanged) and classifies to the
//!   same endpoint and pipeline after travelling through `http::Uri`;
//! - pipeline name: accepted exactly when it matches Feldera's pattern and length;
//! - activate query: never panics; what is forwarded re-parses to the same query;
//! - credential extraction: never panics; a token taken out is what the client put in;
//! - JWT parsing and claim checks: never panic; a token's header and claims survive a round
//!   trip through base64url;
//! - Host/authority: never panics; an accepted request has exactly one valid authority;
//! - configuration loading: any text, and the documented configuration with one line broken,
//!   load or fail with a problem, never a panic.
//!
//! `PROPTEST_CASES` raises the case count (default 256 per property).

use std::sync::LazyLock;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use pipeline_gateway::auth::claims::ClaimRules;
use pipeline_gateway::auth::credential;
use pipeline_gateway::auth::token::Token;
use pipeline_gateway::auth::Reason;
use pipeline_gateway::body;
use pipeline_gateway::catalog::classify;
use pipeline_gateway::check::RequestCheck;
use pipeline_gateway::config::Config;
use pipeline_gateway::validate::{check_canonical, check_name, ActivateQuery, RequestHygiene};

/// Bytes an attacker likes in a path: separators, encodings, dots, controls and non-ASCII.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("%".to_owned()),
        Just(";".to_owned()),
        Just("\\".to_owned()),
        Just("v0".to_owned()),
        Just("pipelines".to_owned()),
        Just("activate".to_owned()),
        Just("egress".to_owned()),
        Just("orders".to_owned()),
        "[a-zA-Z0-9_~!$&'()*+,=:@-]{1,8}",
        "[\\x00-\\x7f]{1,3}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn api_path_strategy() -> impl Strategy<Value = String> {
    path_strategy().prop_map(|rest| format!("/v0/pipelines/{rest}"))
}

/// Characters of names: the allowed ones and their neighbours.
fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,70}",
        "[A-Za-z0-9][-A-Za-z0-9_]{0,61}[A-Za-z0-9]",
        any::<String>(),
    ]
}

fn matches_feldera_pattern(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    match bytes {
        [] => false,
        [only] => alnum(only),
        [first, middle @ .., last] => alnum(first) && alnum(last) && middle.iter().all(inner),
    }
}

proptest! {
    #[test]
    fn canonical_path_never_panics_and_accepted_paths_are_fixed_points(path in path_strategy()) {
        let path = format!("/{path}");
        if check_canonical(&path).is_ok() {
            prop_assert!(!path.contains('%'));
            prop_assert!(!path.contains('\\') && !path.contains(';'));
            let api = path == "/v0" || path.starts_with("/v0/");
            let body = if api { path.as_str() } else { path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(&path) };
            for segment in body.trim_start_matches('/').split('/').filter(|_| body != "/") {
                prop_assert!(!segment.is_empty(), "empty segment in {path:?}");
                prop_assert!(segment != "." && segment != "..", "dot segment in {path:?}");
            }
            // What the manager receives parses back to the very same path and route.
            let uri: Uri = path.parse().expect("an accepted path is a valid request target");
            prop_assert_eq!(uri.path(), path.as_str());
            for method in [Method::GET, Method::POST, Method::DELETE] {
                let here = classify(&method, &path).ok();
                let there = classify(&method, uri.path()).ok();
                prop_assert_eq!(
                    here.map(|c| (c.endpoint.name, c.pipeline(&path).map(str::to_owned))),
                    there.map(|c| (c.endpoint.name, c.pipeline(uri.path()).map(str::to_owned)))
                );
            }
        }
    }

    #[test]
    fn a_classified_pipeline_is_the_segment_after_pipelines(path in api_path_strategy()) {
        if check_canonical(&path).is_ok() {
            let segment = path["/v0/pipelines/".len()..].split('/').next().unwrap_or("");
            if let Ok(classified) = classify(&Method::GET, &path) {
                if let Some(pipeline) = classified.pipeline(&path) {
                    prop_assert_eq!(pipeline, segment);
                }
            }
        }
    }

    #[test]
    fn pipeline_names_are_accepted_exactly_by_feldera_rules(name in name_strategy()) {
        let expected = name.len() <= 63 && matches_feldera_pattern(&name);
        prop_assert_eq!(check_name(&name).is_ok(), expected, "{:?}", name);
    }

    #[test]
    fn activate_query_never_panics_and_forwards_what_it_accepted(
        query in prop_oneof![
            "(initial=(running|paused|RUNNING|Paused|x|)|&|api_key=1|%[0-9a-fA-F]{2}|=|\\+){0,6}",
            any::<String>(),
        ]
    ) {
        if let Ok(parsed) = ActivateQuery::parse(Some(&query)) {
            let forwarded = parsed.forwarded_query();
            let again = ActivateQuery::parse(forwarded).expect("the forwarded query is valid");
            prop_assert_eq!(again, parsed);
            if let Some(forwarded) = forwarded {
                let uri: Uri = format!("/v0/pipelines/p/activate?{forwarded}").parse().expect("uri");
                prop_assert_eq!(uri.query(), Some(forwarded));
            }
        }
    }

    #[test]
    fn bearer_extraction_returns_what_was_sent(
        token in "[A-Za-z0-9._~+/=-]{1,64}",
        scheme in prop_oneof![Just("Bearer "), Just("bearer "), Just("Bearer  "), Just("Basic "), Just("")],
    ) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("{scheme}{token}")).expect("value"));
        match credential::bearer(&headers) {
            Ok(Some(found)) => {
                prop_assert_eq!(scheme, "Bearer ");
                prop_assert_eq!(found, token);
            }
            Ok(None) => prop_assert!(false, "an Authorization header is never ignored"),
            Err(reason) => {
                prop_assert_ne!(scheme, "Bearer ");
                prop_assert_eq!(reason, Reason::MalformedCredentials);
            }
        }
    }

    #[test]
    fn credential_extraction_never_panics_on_any_header_bytes(
        authorization in proptest::collection::vec(any::<u8>(), 0..200),
        protocol in proptest::collection::vec(any::<u8>(), 0..200),
        tenant in proptest::collection::vec(any::<u8>(), 0..64),
        twice in any::<bool>(),
    ) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(value) = HeaderValue::from_bytes(&protocol) {
            headers.append(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if let Ok(value) = HeaderValue::from_bytes(&tenant) {
            headers.append("feldera-tenant", value);
        }
        let _ = credential::bearer(&headers);
        let _ = credential::requested_tenants(&headers);
        if let Ok(value) = HeaderValue::from_bytes(&authorization) {
            headers.append(http::header::AUTHORIZATION, value.clone());
            if twice {
                headers.append(http::header::AUTHORIZATION, value);
                prop_assert_eq!(credential::bearer(&headers), Err(Reason::MalformedCredentials));
            }
        }
        let _ = credential::bearer(&headers);
    }

    #[test]
    fn websocket_bearer_entries_decode_to_what_was_encoded(
        token in "[A-Za-z0-9._-]{1,64}",
        padded in any::<bool>(),
    ) {
        let mut encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&token);
        if padded {
            while encoded.len() % 4 != 0 {
                encoded.push('=');
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&format!("feldera-bearer.{encoded}, json")).expect("value"),
        );
        prop_assert_eq!(credential::bearer(&headers), Ok(Some(token)));
    }

    #[test]
    fn token_parsing_never_panics_on_any_text(text in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}",
    ]) {
        let _ = Token::parse(&text);
    }

    #[test]
    fn token_header_and_claims_survive_base64url(
        header in json_object_strategy(),
        claims in json_object_strategy(),
        alg in prop_oneof![Just("RS256"), Just("ES256"), Just("HS256"), Just("none"), Just("rs256")],
        kid in proptest::option::of("[ -~]{0,16}"),
    ) {
        let mut header = header;
        header.retain(|k, _| !["crit", "jku", "x5u", "jwk", "x5c", "alg", "kid", "typ"].contains(&k.as_str()));
        header.insert("alg".into(), json!(alg));
        if let Some(kid) = &kid {
            header.insert("kid".into(), json!(kid));
        }
        let b64 = |v: &Map<String, Value>| base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(v).expect("json"));
        let text = format!("{}.{}.c2ln", b64(&header), b64(&claims));
        match Token::parse(&text) {
            Ok(token) => {
                prop_assert!(matches!(alg, "RS256" | "ES256" | "HS256"));
                prop_assert_eq!(token.kid, kid);
                prop_assert_eq!(&token.claims, &claims);
                prop_assert_eq!(token.signature, "c2ln");
                // Claim checks on whatever the token says: never a panic.
                let _ = RULES.check(&token.claims, 1_700_000_000.0);
                let _ = RULES.role(&token.claims);
                let _ = RULES.tenants(&token.claims);
            }
            Err(reason) => {
                if text.len() <= pipeline_gateway::auth::token::MAX_TOKEN_BYTES {
                    prop_assert_eq!(reason, Reason::UnsupportedAlgorithm, "{}", text);
                }
            }
        }
    }

    #[test]
    fn claim_checks_never_panic_on_any_claims(claims in json_object_strategy(), now in any::<f64>()) {
        let _ = RULES.check(&claims, now);
        let _ = RULES.role(&claims);
        let _ = RULES.tenants(&claims);
    }

    #[test]
    fn host_checks_never_panic_and_accept_exactly_one_valid_authority(
        hosts in proptest::collection::vec(prop_oneof![
            "[a-z0-9.-]{0,20}(:[0-9]{1,6})?",
            "\\[[0-9a-f:]{0,20}\\](:[0-9]{0,5})?",
            "[ -~]{0,20}",
        ], 0..3),
        authority in proptest::option::of("[a-z0-9.-]{1,12}(:[0-9]{1,5})?"),
        h2 in any::<bool>(),
    ) {
        let uri = match &authority {
            Some(authority) => format!("http://{authority}/v0/pipelines"),
            None => "/v0/pipelines".to_owned(),
        };
        let Ok(uri) = uri.parse::<Uri>() else { return Ok(()) };
        let mut request = http::Request::new(body::empty());
        *request.uri_mut() = uri;
        *request.version_mut() = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        let mut sent = 0;
        for host in &hosts {
            if let Ok(value) = HeaderValue::from_str(host) {
                request.headers_mut().append(http::header::HOST, value);
                sent += 1;
            }
        }
        if RequestHygiene.check(&mut request).is_ok() {
            let hosts: Vec<_> = request.headers().get_all(http::header::HOST).iter().collect();
            prop_assert!(hosts.len() <= 1, "{} Host headers accepted", sent);
            if let Some(host) = hosts.first() {
                let authority: http::uri::Authority = host.to_str().expect("ascii").parse().expect("a valid authority");
                prop_assert!(!authority.host().is_empty());
                if let Some(uri_authority) = request.uri().authority() {
                    prop_assert!(uri_authority.as_str().eq_ignore_ascii_case(authority.as_str()));
                }
            } else {
                prop_assert!(h2 || request.uri().authority().is_some(), "HTTP/1.1 without Host");
            }
        }
    }

    #[test]
    fn config_loading_never_panics_on_any_text(text in any::<String>()) {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn the_documented_config_with_one_line_broken_loads_or_names_a_problem(
        line in any::<prop::sample::Index>(),
        replacement in prop_oneof![
            Just(String::new()),
            "[a-z_]{1,20} = (-1|0|1|18446744073709551616|\"\"|\"1s\"|\"x\"|true|\\[\\]|\\{\\})",
            any::<String>().prop_map(|s| s.replace('\n', " ")),
        ],
    ) {
        let lines: Vec<&str> = DOCUMENTED.lines().collect();
        let at = line.index(lines.len());
        let mut broken: Vec<&str> = lines.clone();
        broken[at] = &replacement;
        let text = broken.join("\n");
        if let Err(error) = Config::from_toml(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}

/// JSON objects with the value kinds claims have, nested a little.
fn json_object_strategy() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Short decimals: serde_json (without `float_roundtrip`) may read a 17-digit float one
        // ulp off, which no claim check can notice; the never-panic property below takes any f64.
        (any::<i32>(), 0..4i32).prop_map(|(m, e)| Value::from(f64::from(m) / 10f64.powi(e))),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        Just("exp".to_owned()),
        Just("nbf".to_owned()),
        Just("iat".to_owned()),
        Just("aud".to_owned()),
        Just("sub".to_owned()),
        Just("iss".to_owned()),
        Just("role".to_owned()),
        Just("tenant".to_owned()),
        Just("nonce".to_owned()),
        Just("token_use".to_owned()),
        "[a-z_]{1,8}",
    ];
    proptest::collection::btree_map(key, value, 0..8).prop_map(|m| m.into_iter().collect())
}

/// Claim rules of a typical issuer (from the documented configuration's first `[[auth.jwt]]`).
static RULES: LazyLock<ClaimRules> = LazyLock::new(|| {
    let config: Config = pipeline_gateway::config::parse_toml(
        r#"
[auth]
mode = "on"
[[auth.jwt]]
issuer = "https://issuer.example"
jwks_file = "keys.json"
audiences = ["feldera"]
algorithms = ["RS256"]
role_claim = "role"
tenant_claim = "tenant"
"#,
    )
    .expect("claim rules configuration");
    ClaimRules::new(&config.auth.jwt[0])
});

static DOCUMENTED: &str = include_str!("../config/gateway.toml");
