//! `[auth]`: how clients prove who they are. (Filled in by the authentication work.)

use serde::Deserialize;

use super::Problems;

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub mode: AuthMode,
}

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request except public paths needs a valid credential.
    #[default]
    On,
    /// No authentication: every request is forwarded as an anonymous principal.
    Off,
}

impl AuthConfig {
    pub fn check(&self, _at: &str, _problems: &mut Problems) {}
}
