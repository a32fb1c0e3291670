//! `[rate_limit]`: how many requests a client may make. (Filled in by the rate-limiting work.)

use serde::Deserialize;

use super::Problems;

/// `[rate_limit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {}

impl RateLimitConfig {
    pub fn check(&self, _at: &str, _problems: &mut Problems) {}
}
