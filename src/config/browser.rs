//! `[console]` and `[cors]`: what browsers need — the manager's web console through the
//! gateway, and cross-origin access for consoles and notebooks served elsewhere.
//!
//! ```toml
//! [console]
//! upstream = "primary"                 # where the console's files come from (default: the
//!                                      # default route's upstream)
//! [console.authentication]             # optional: GET /config/authentication answered by the
//!                                      # gateway, in the manager's shape
//! generic_oidc = { issuer = "https://idp.example/", client_id = "feldera-console", extra_oidc_scopes = [] }
//! # or: aws_cognito = { issuer = "…", login_url = "…", logout_url = "…" }
//!
//! [cors]
//! allow_origins = ["https://console.example.com"]   # exact origins; "*" only without credentials
//! allow_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
//! allow_headers = ["authorization", "content-type", "feldera-tenant"]
//! expose_headers = ["retry-after", "ratelimit", "ratelimit-policy", "x-request-id"]
//! allow_credentials = true
//! max_age = "10m"
//! ```
//!
//! Checks: the console's `upstream` must exist; its identity provider's `issuer` must be one
//! of `[[auth.jwt]]`'s (a console that logs into a provider the gateway does not trust gets
//! nothing but 401s); an origin is `scheme://host[:port]` without a path, or `*`, and `*` is
//! refused together with `allow_credentials` (browsers refuse that combination too).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{HeaderName, HttpMethod};
use super::{Config, Problems};

/// `[console]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The upstream serving the console's files (default: the default route's).
    #[serde(default)]
    pub upstream: Option<String>,
    /// When set, the gateway answers `GET /config/authentication` itself.
    #[serde(default)]
    pub authentication: Option<ConsoleAuthentication>,
}

/// `[console.authentication]`: exactly one provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleAuthentication {
    #[serde(default)]
    pub generic_oidc: Option<GenericOidc>,
    #[serde(default)]
    pub aws_cognito: Option<AwsCognito>,
}

/// The manager's `ProviderGenericOidc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericOidc {
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub extra_oidc_scopes: Vec<String>,
}

/// The manager's `ProviderAwsCognito`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCognito {
    pub issuer: String,
    pub login_url: String,
    pub logout_url: String,
}

impl ConsoleAuthentication {
    /// The body of `GET /config/authentication`, exactly as the manager writes it.
    pub fn manager_body(&self) -> serde_json::Value {
        match (&self.generic_oidc, &self.aws_cognito) {
            (Some(oidc), _) => serde_json::json!({ "GenericOidc": oidc }),
            (None, Some(cognito)) => serde_json::json!({ "AwsCognito": cognito }),
            (None, None) => serde_json::json!({}),
        }
    }

    fn issuer(&self) -> Option<&str> {
        self.generic_oidc
            .as_ref()
            .map(|p| p.issuer.as_str())
            .or(self.aws_cognito.as_ref().map(|p| p.issuer.as_str()))
    }
}

/// `[cors]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://console.example.com`), or `"*"` (only without credentials).
    pub allow_origins: Vec<String>,
    #[serde(default = "defaults::methods")]
    pub allow_methods: Vec<HttpMethod>,
    #[serde(default = "defaults::headers")]
    pub allow_headers: Vec<HeaderName>,
    #[serde(default = "defaults::expose")]
    pub expose_headers: Vec<HeaderName>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "defaults::max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

mod defaults {
    use super::{HeaderName, HttpMethod};
    pub fn methods() -> Vec<HttpMethod> {
        ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .filter_map(|m| HttpMethod::parse(m).ok())
            .collect()
    }
    pub fn headers() -> Vec<HeaderName> {
        ["authorization", "content-type", "feldera-tenant"]
            .into_iter()
            .filter_map(|h| HeaderName::parse(h).ok())
            .collect()
    }
    pub fn expose() -> Vec<HeaderName> {
        [
            "retry-after",
            "ratelimit",
            "ratelimit-policy",
            "x-request-id",
        ]
        .into_iter()
        .filter_map(|h| HeaderName::parse(h).ok())
        .collect()
    }
    pub fn max_age() -> std::time::Duration {
        std::time::Duration::from_secs(600)
    }
}

/// Whether `origin` is `scheme://host[:port]` with nothing after it.
fn is_origin(origin: &str) -> bool {
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some()
        && uri
            .path_and_query()
            .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/")
        && !origin.ends_with('/')
}

impl Config {
    pub(super) fn check_browser(&self, problems: &mut Problems) {
        if let Some(console) = &self.console {
            if let Some(upstream) = &console.upstream {
                if !self.upstreams.iter().any(|u| &u.name == upstream) {
                    problems.push(
                        "console.upstream",
                        format!("unknown upstream \"{upstream}\""),
                    );
                }
            }
            if let Some(auth) = &console.authentication {
                match (&auth.generic_oidc, &auth.aws_cognito) {
                    (Some(_), Some(_)) | (None, None) => problems.push(
                        "console.authentication",
                        "give exactly one of generic_oidc, aws_cognito",
                    ),
                    _ => {}
                }
                if let Some(issuer) = auth.issuer() {
                    if !self.auth.jwt.iter().any(|p| p.issuer == issuer) {
                        problems.push(
                            "console.authentication",
                            format!(
                                "issuer \"{issuer}\" is not one of [[auth.jwt]]'s: the console \
                                 would log into a provider whose tokens the gateway refuses"
                            ),
                        );
                    }
                }
            }
        }
        if let Some(cors) = &self.cors {
            if cors.allow_origins.is_empty() {
                problems.push("cors.allow_origins", "at least one origin is required");
            }
            for (i, origin) in cors.allow_origins.iter().enumerate() {
                if origin == "*" {
                    if cors.allow_credentials {
                        problems.push(
                            format!("cors.allow_origins[{i}]"),
                            "\"*\" cannot be used with allow_credentials = true (browsers refuse it)",
                        );
                    }
                } else if !is_origin(origin) {
                    problems.push(
                        format!("cors.allow_origins[{i}]"),
                        format!("\"{origin}\" is not an origin (scheme://host[:port], no path)"),
                    );
                }
            }
        }
    }

    /// The index of the console's upstream, when `[console] upstream` names one.
    pub fn console_upstream(&self) -> Option<usize> {
        let name = self.console.as_ref()?.upstream.as_ref()?;
        self.upstreams.iter().position(|u| &u.name == name)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn problems(extra: &str) -> Vec<String> {
        let text = format!(
            "[[upstreams]]\nname = \"m\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[routes]]\nupstream = \"m\"\ndefault = true\n{extra}"
        );
        match Config::from_toml(&text) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn the_console_may_only_log_into_a_trusted_issuer() {
        let lines = problems(
            "[console]\nupstream = \"nope\"\n[console.authentication]\n\
             generic_oidc = { issuer = \"https://other/\", client_id = \"c\" }\n",
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "console.upstream: unknown upstream \"nope\""),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "console.authentication: issuer \"https://other/\" is not one of [[auth.jwt]]'s"
            )),
            "{lines:?}"
        );
    }

    #[test]
    fn cors_origins_are_exact_and_star_excludes_credentials() {
        let lines = problems(
            "[cors]\nallow_origins = [\"*\", \"https://a.example/path\", \"https://b.example:8443\"]\n\
             allow_credentials = true\n",
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("cors.allow_origins[0]: \"*\" cannot be used")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l
                .starts_with("cors.allow_origins[1]: \"https://a.example/path\" is not an origin")),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
    }
}
