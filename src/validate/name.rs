//! Feldera's pipeline-name rule, with the manager's exact error messages and details.
//!
//! Rule (UPSTREAM.md): 1 to 63 bytes matching `^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$`,
//! checked in order: empty, length, pattern. The manager applies it only on create and
//! rename; the gateway applies it to every `/v0/pipelines/{name}/…` path so a bad name never
//! costs an upstream trip. A name is taken from a canonical path, so it is never
//! percent-encoded: `a%2Fb` never gets here (the path check rejects `%`).

use http::StatusCode;
use serde_json::{json, Value};

use crate::errors::GatewayError;

/// Longest allowed name, in bytes.
pub const MAX_NAME_LENGTH: usize = 63;
/// The manager's pattern, as it quotes it in messages.
pub const NAME_PATTERN: &str = "^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$";
const PATTERN_DESCRIPTION: &str = "be non-empty and only contain lowercase (a-z), uppercase (A-Z), number (0-9), underscore (_) or hyphen (-) characters, but cannot start or end with hyphen or underscore";

/// Why a name is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { name: String, length: usize },
    Pattern { name: String },
}

/// Checks `name` against the rule.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err(NameError::Empty);
    };
    if bytes.len() > MAX_NAME_LENGTH {
        return Err(NameError::TooLong {
            name: name.to_owned(),
            length: bytes.len(),
        });
    }
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if !inner_ok || !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(NameError::Pattern {
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl From<NameError> for GatewayError {
    fn from(error: NameError) -> GatewayError {
        let (code, message, details) = match error {
            NameError::Empty => (
                "EmptyName",
                "Name cannot be be empty".to_owned(),
                Value::Null,
            ),
            NameError::TooLong { name, length } => (
                "TooLongName",
                format!(
                    "Name '{name}' is longer ({length}) than maximum allowed ({MAX_NAME_LENGTH})"
                ),
                json!({ "name": name, "length": length, "maximum": MAX_NAME_LENGTH }),
            ),
            NameError::Pattern { name } => (
                "NameDoesNotMatchPattern",
                format!("Name '{name}' should {PATTERN_DESCRIPTION} (pattern: '{NAME_PATTERN}')"),
                json!({ "name": name, "pattern": NAME_PATTERN, "pattern_description": PATTERN_DESCRIPTION }),
            ),
        };
        GatewayError::new(StatusCode::BAD_REQUEST, code, message).with_details(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_three_bytes_pass_and_sixty_four_fail() {
        assert_eq!(check_name(&"a".repeat(63)), Ok(()));
        let long = "a".repeat(64);
        let error: GatewayError = check_name(&long).unwrap_err().into();
        assert_eq!(error.code(), "TooLongName");
        // Byte-identical to the manager's captured answer.
        assert_eq!(
            error.message(),
            format!("Name '{long}' is longer (64) than maximum allowed (63)")
        );
        assert_eq!(error.details()["length"], 64);
    }

    #[test]
    fn pattern_message_matches_the_manager() {
        let error: GatewayError = check_name("bad.name").unwrap_err().into();
        assert_eq!(error.code(), "NameDoesNotMatchPattern");
        assert_eq!(
            error.message(),
            "Name 'bad.name' should be non-empty and only contain lowercase (a-z), uppercase (A-Z), number (0-9), underscore (_) or hyphen (-) characters, but cannot start or end with hyphen or underscore (pattern: '^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$')"
        );
        assert_eq!(error.details()["pattern"], NAME_PATTERN);
    }

    #[test]
    fn edges_of_the_pattern() {
        for good in ["a", "A9", "a-b_c", "a--b", "0"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["-a", "a-", "_a", "a_", "é", "a b", "a.b", "a/b"] {
            assert!(
                matches!(check_name(bad), Err(NameError::Pattern { .. })),
                "{bad}"
            );
        }
        let empty: GatewayError = check_name("").unwrap_err().into();
        assert_eq!(empty.code(), "EmptyName");
        assert_eq!(empty.details(), &Value::Null);
    }

    #[test]
    fn length_is_checked_before_pattern() {
        let name = format!("-{}", "a".repeat(70));
        assert!(matches!(
            check_name(&name),
            Err(NameError::TooLong { length: 71, .. })
        ));
    }
}
