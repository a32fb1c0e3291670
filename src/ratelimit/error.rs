//! The rate limiter's errors and their conversion to the gateway's one error type.
//!
//! - [`RateLimitError::Exceeded`] → 429 `RateLimitExceeded`, details
//!   `{"limit", "policy", "rate", "retry_after_s"}` (`limit` is the burst, `rate` the refill),
//!   `Retry-After` in whole seconds rounded up (at least 1), and the rate-limit headers.
//! - [`RateLimitError::StoreUnavailable`] → 503 `ServiceUnavailable` with `Retry-After: 1`,
//!   only with `[rate_limit.redis] on_error = "deny"`: the client is not over its limit, the
//!   gateway just cannot tell, and 503 is what Feldera's clients retry as "try again soon".

use http::StatusCode;
use serde_json::json;

use super::headers::{ceil_secs, headers_for, RATELIMIT_POLICY};
use super::local::Decision;
use super::Policy;
use crate::errors::GatewayError;

/// Why the rate limiter refused a request.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate limit {} exceeded", .policy.name)]
    Exceeded { policy: Policy, decision: Decision },
    #[error("the rate-limit store is unavailable ({reason})")]
    StoreUnavailable { policy: Policy, reason: String },
}

impl From<RateLimitError> for GatewayError {
    fn from(error: RateLimitError) -> GatewayError {
        match error {
            RateLimitError::Exceeded { policy, decision } => {
                let retry_after_s = ceil_secs(decision.retry_after).max(1);
                let mut gateway_error = GatewayError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RateLimitExceeded",
                    format!(
                        "Rate limit '{}' exceeded ({} requests at once, then {}); retry in {} s",
                        policy.name, policy.burst, policy.rate, retry_after_s
                    ),
                )
                .with_details(json!({
                    "limit": policy.burst,
                    "policy": &*policy.name,
                    "rate": policy.rate.to_string(),
                    "retry_after_s": retry_after_s,
                }))
                .with_retry_after(retry_after_s);
                for (name, value) in headers_for(&policy, &decision) {
                    gateway_error = gateway_error.with_header(name, value);
                }
                gateway_error
            }
            RateLimitError::StoreUnavailable { policy, reason } => {
                GatewayError::service_unavailable("rate limiter unavailable", 1)
                    .with_internal(reason)
                    .with_header(RATELIMIT_POLICY, policy.policy_header().clone())
            }
        }
    }
}
