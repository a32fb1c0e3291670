//! The query of `POST /v0/pipelines/{name}/activate`: parsed, checked, and rebuilt.
//!
//! The server accepts only `initial=running|paused` in lowercase; the OpenAPI spec documents
//! PascalCase (`Running`, `Paused`), so generated clients send what the server rejects with a
//! text/plain 400. The gateway repairs this at the edge: any letter case of `running` or
//! `paused` (after form-decoding) is accepted and forwarded lowercase. Anything else — another
//! status, empty, the parameter given twice — is 400 `InvalidActivateStatus`; any other
//! parameter is 400 `InvalidQueryParameter`. The forwarded query is rebuilt from the parsed
//! value and never copied raw, so nothing the gateway did not check reaches the manager.

use http::StatusCode;
use serde_json::{json, Value};

use crate::errors::GatewayError;

/// The statuses activate accepts, in the server's spelling.
pub const ALLOWED: [&str; 2] = ["running", "paused"];

/// What activate should reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivateTarget {
    Running,
    Paused,
}

/// A checked activate query. `initial: None` means absent (the manager's default, running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivateQuery {
    pub initial: Option<ActivateTarget>,
}

impl ActivateQuery {
    /// Parses the raw query string (without `?`).
    pub fn parse(query: Option<&str>) -> Result<ActivateQuery, GatewayError> {
        let mut values: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if key != "initial" {
                return Err(invalid_parameter(&key));
            }
            values.push(value.into_owned());
        }
        let initial = match values.as_slice() {
            [] => None,
            [value] if value.eq_ignore_ascii_case("running") => Some(ActivateTarget::Running),
            [value] if value.eq_ignore_ascii_case("paused") => Some(ActivateTarget::Paused),
            [value] => return Err(invalid_status(json!(value), value)),
            many => return Err(invalid_status(json!(many), "given more than once")),
        };
        Ok(ActivateQuery { initial })
    }

    /// The query to forward: `Some("initial=running")`, …, or `None` when absent.
    pub fn forwarded_query(self) -> Option<&'static str> {
        match self.initial? {
            ActivateTarget::Running => Some("initial=running"),
            ActivateTarget::Paused => Some("initial=paused"),
        }
    }
}

fn invalid_status(value: Value, shown: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::BAD_REQUEST,
        "InvalidActivateStatus",
        format!("Invalid activation status '{shown}' (only running and paused are valid)"),
    )
    .with_details(json!({ "initial": value, "allowed": ALLOWED }))
}

fn invalid_parameter(name: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::BAD_REQUEST,
        "InvalidQueryParameter",
        format!("Unknown query parameter '{name}' for activate (allowed: initial)"),
    )
    .with_details(json!({ "parameter": name, "allowed": ["initial"] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(query: Option<&str>) -> Option<&'static str> {
        ActivateQuery::parse(query).unwrap().forwarded_query()
    }

    #[test]
    fn accepted_spellings_are_forwarded_lowercase() {
        assert_eq!(forwarded(None), None);
        assert_eq!(forwarded(Some("")), None);
        assert_eq!(forwarded(Some("initial=running")), Some("initial=running"));
        assert_eq!(forwarded(Some("initial=Running")), Some("initial=running"));
        assert_eq!(forwarded(Some("initial=PAUSED")), Some("initial=paused"));
        assert_eq!(forwarded(Some("initial=%50aused")), Some("initial=paused"));
    }

    #[test]
    fn other_values_are_invalid_activate_status_with_details() {
        for (query, value) in [
            ("initial=standby", json!("standby")),
            ("initial=foo", json!("foo")),
            ("initial=", json!("")),
            ("initial", json!("")),
            (
                "initial=running&initial=paused",
                json!(["running", "paused"]),
            ),
        ] {
            let error = ActivateQuery::parse(Some(query)).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(error.code(), "InvalidActivateStatus", "{query}");
            assert_eq!(error.details()["initial"], value, "{query}");
            assert_eq!(error.details()["allowed"], json!(["running", "paused"]));
        }
    }

    #[test]
    fn other_parameters_are_rejected() {
        let error = ActivateQuery::parse(Some("initial=running&force=true")).unwrap_err();
        assert_eq!(error.code(), "InvalidQueryParameter");
        assert_eq!(error.details()["parameter"], "force");
    }
}
