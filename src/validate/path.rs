//! Canonical request paths: the only paths the gateway forwards.
//!
//! The manager's web framework percent-decodes paths before routing (`%61ctivate` routes as
//! `activate`, `a%2Fb` as `a/b`), so a path the gateway classified one way could reach a
//! different handler upstream. Instead of decoding, the gateway forwards only paths that no
//! decoder can change: ASCII `pchar`s (RFC 3986) without `%` and `;` — so no `\`, and none of
//! the bytes outside `pchar` that hyper still lets through (`"`, `<`, `>`, `^`, `{`, `|`, `}`,
//! the backtick) — no control bytes, no empty segments (`//`, trailing `/`) and no dot
//! segments. Anything else is 400 `InvalidPath`.
//! A valid Feldera API path never needs any of these. One exception, outside `/v0` only: a
//! trailing `/` (the web console's page URLs look like `/pipelines/orders/`); it cannot turn
//! such a path into an API path, which is what the check protects.

use crate::errors::GatewayError;

/// Checks that `path` is canonical.
pub fn check_canonical(path: &str) -> Result<(), GatewayError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(GatewayError::invalid_path("the path must start with '/'"));
    };
    if rest.is_empty() {
        return Ok(());
    }
    let console_page = !rest.starts_with("v0/") && rest != "v0";
    let rest = match rest.strip_suffix('/') {
        Some(page) if console_page && !page.is_empty() => page,
        _ => rest,
    };
    for segment in rest.split('/') {
        match segment {
            "" => return Err(GatewayError::invalid_path("empty path segment")),
            "." | ".." => return Err(GatewayError::invalid_path("dot segment")),
            _ => {}
        }
        for byte in segment.bytes() {
            match byte {
                b'%' => return Err(GatewayError::invalid_path("percent-encoding")),
                b'\\' => return Err(GatewayError::invalid_path("backslash")),
                b';' => return Err(GatewayError::invalid_path("path parameter (';')")),
                0x00..=0x20 | 0x7f => return Err(GatewayError::invalid_path("control byte")),
                0x80..=0xff => return Err(GatewayError::invalid_path("non-ASCII byte")),
                // Not a `pchar` (RFC 3986): `"<>^`{|}` pass hyper's parser but no valid path
                // has them (found by the property tests, tests/properties.rs).
                b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#' | b'?' | b'['
                | b']' => {
                    return Err(GatewayError::invalid_path(
                        "character not allowed in a path",
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_pass() {
        for path in [
            "/",
            "/v0/pipelines",
            "/v0/pipelines/p-1/activate",
            "/healthz",
            "/pipelines/orders/",
        ] {
            assert!(check_canonical(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn only_console_pages_may_end_with_a_slash() {
        for path in ["/v0/", "/v0/pipelines/", "/pipelines//", "//", "/a//b/"] {
            assert_eq!(
                check_canonical(path).unwrap_err().details()["reason"],
                "empty path segment",
                "{path}"
            );
        }
        assert_eq!(
            check_canonical("/%76%30/pipelines/").unwrap_err().details()["reason"],
            "percent-encoding"
        );
    }

    #[test]
    fn anything_a_decoder_could_change_is_rejected() {
        for (path, reason) in [
            ("/v0/pipelines/p/%61ctivate", "percent-encoding"),
            ("/v0/pipelines/a%2Fb/stats", "percent-encoding"),
            ("/v0//pipelines", "empty path segment"),
            ("/v0/pipelines/", "empty path segment"),
            ("/v0/pipelines/../config", "dot segment"),
            ("/v0/./pipelines", "dot segment"),
            ("/v0/pipelines/p\\x", "backslash"),
            ("/v0/pipelines/p;x=1/stats", "path parameter (';')"),
            ("/v0/pipelines/p\u{7f}", "control byte"),
            ("/v0/pipelines/é", "non-ASCII byte"),
            // Found by tests/properties.rs: not pchars, yet hyper lets them through.
            ("/>", "character not allowed in a path"),
            ("/v0/pipelines/a{b}", "character not allowed in a path"),
            (
                "/v0/pipelines/p/egress/a|b",
                "character not allowed in a path",
            ),
            ("/v0/pipelines/\"x\"", "character not allowed in a path"),
            ("/v0/pipelines/`^", "character not allowed in a path"),
        ] {
            let error = check_canonical(path).unwrap_err();
            assert_eq!(error.code(), "InvalidPath", "{path}");
            assert_eq!(error.details()["reason"], reason, "{path}");
        }
    }
}
