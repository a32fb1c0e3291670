//! The rate-limit response headers, on allowed and rejected responses alike.
//!
//! For each policy that decided a request:
//! - `RateLimit-Policy: "<policy>";q=<burst>;w=<window>` — the quota is the burst, and the
//!   window is the time the burst takes to refill, in whole seconds rounded up (at least 1);
//! - `RateLimit: "<policy>";r=<remaining>;t=<reset>` — requests left at once, and seconds
//!   (rounded up) until the budget is full again;
//! - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds) for older
//!   clients: these carry one policy only, the one with the fewest remaining requests.
//!
//! The IETF fields are structured-field lists: when two policies decided (client IP before
//! auth, principal after), each appends its own item, and clients see both. Only headers are
//! touched, never the body, so streamed responses stay streamed.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::local::Decision;
use super::Policy;

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up.
pub fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// The `RateLimit-Policy` item of a policy (made once per policy, see `Policy::new`).
pub fn policy_value(policy: &Policy) -> HeaderValue {
    value(format!(
        "\"{}\";q={};w={}",
        policy.name,
        policy.burst,
        policy.window_secs()
    ))
}

/// The `RateLimit` item: `"<policy>";r=<remaining>;t=<reset>`, written without `format!`
/// (this runs on every limited response).
fn ratelimit_value(policy: &Policy, remaining: u32, reset: u64) -> HeaderValue {
    let mut numbers = itoa::Buffer::new();
    let mut text = Vec::with_capacity(policy.name.len() + 32);
    text.push(b'"');
    text.extend_from_slice(policy.name.as_bytes());
    text.extend_from_slice(b"\";r=");
    text.extend_from_slice(numbers.format(remaining).as_bytes());
    text.extend_from_slice(b";t=");
    text.extend_from_slice(numbers.format(reset).as_bytes());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// Every header for one decision, in the order they are added.
pub fn headers_for(policy: &Policy, decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    let reset = ceil_secs(decision.reset);
    vec![
        (RATELIMIT_POLICY, policy.policy_header().clone()),
        (
            RATELIMIT,
            ratelimit_value(policy, decision.remaining, reset),
        ),
        (X_RATELIMIT_LIMIT, HeaderValue::from(policy.burst)),
        (X_RATELIMIT_REMAINING, HeaderValue::from(decision.remaining)),
        (X_RATELIMIT_RESET, HeaderValue::from(reset)),
    ]
}

/// Adds the headers of one decision to a response's headers: the IETF ones are appended,
/// the `X-RateLimit-*` ones replace an earlier policy's only when this one has fewer left.
pub fn apply(headers: &mut HeaderMap, policy: &Policy, decision: &Decision) {
    let replace_legacy = headers
        .get(X_RATELIMIT_REMAINING)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_none_or(|current| decision.remaining < current);
    let reset = ceil_secs(decision.reset);
    headers.append(RATELIMIT_POLICY, policy.policy_header().clone());
    headers.append(
        RATELIMIT,
        ratelimit_value(policy, decision.remaining, reset),
    );
    if replace_legacy {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(policy.burst));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(reset));
    }
}

/// Adds only `RateLimit-Policy` (the decision is unknown: Redis failed and `on_error` allowed).
pub fn apply_policy_only(headers: &mut HeaderMap, policy: &Policy) {
    headers.append(RATELIMIT_POLICY, policy.policy_header().clone());
}

fn value(text: String) -> HeaderValue {
    // Policy names are checked to be [A-Za-z0-9._-]; numbers are digits.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ratelimit::Rate;

    fn policy(name: &str, rate: &str, burst: u32) -> Policy {
        Policy::new(name, Rate::parse(rate).unwrap(), burst)
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn headers_describe_quota_window_remaining_and_reset() {
        let p = policy("lifecycle", "5/s", 10);
        let d = Decision {
            allowed: true,
            remaining: 7,
            retry_after: Duration::ZERO,
            reset: Duration::from_millis(600),
        };
        let mut map = HeaderMap::new();
        apply(&mut map, &p, &d);
        assert_eq!(map["ratelimit-policy"], "\"lifecycle\";q=10;w=2");
        assert_eq!(map["ratelimit"], "\"lifecycle\";r=7;t=1");
        assert_eq!(map["x-ratelimit-limit"], "10");
        assert_eq!(map["x-ratelimit-remaining"], "7");
        assert_eq!(map["x-ratelimit-reset"], "1");
    }

    #[test]
    fn two_policies_list_both_and_legacy_headers_show_the_tighter() {
        let ip = policy("anonymous", "20/s", 40);
        let principal = policy("principal", "1/h", 3);
        let mut map = HeaderMap::new();
        let d = |remaining| Decision {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
            reset: Duration::from_secs(1),
        };
        apply(&mut map, &principal, &d(2));
        apply(&mut map, &ip, &d(39));
        let items: Vec<_> = map.get_all("ratelimit").iter().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(map.get_all("ratelimit-policy").iter().count(), 2);
        assert_eq!(map["x-ratelimit-limit"], "3");
        assert_eq!(map["x-ratelimit-remaining"], "2");
        assert_eq!(principal.policy_header(), "\"principal\";q=3;w=10800");
    }
}
