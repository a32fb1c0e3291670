//! The stand-in's own small web console, served the way the manager serves its SvelteKit
//! console: by a static files service behind every other route outside `/v0`
//! (`actix-web-static-files` `ResourceFiles` with `resolve_not_found_to_root`, plus the
//! manager's cache-header middleware). Two files, written here and embedded:
//! `assets/index.html` and `assets/console.js`. Turned off with
//! [`crate::StandinOptions::web_console`], the service answers like the captured manager, which
//! was built without a console: `Not found`.
//!
//! Paths (only `GET` and `HEAD` reach this service; other methods get the manager's 405):
//! - `/_app/console.js`: the script, `application/javascript`,
//!   `Cache-Control: public, max-age=86400` (the manager's rule for `.js` outside
//!   `/_app/immutable/`);
//! - `/index.html` and every other path: `index.html`, `text/html`, no `Cache-Control` (so
//!   browsers revalidate it), which makes page URLs like `/` and `/pipelines/{name}/` work;
//! - a path with a segment that starts with `.` or `*` or ends with `:`, `<` or `>` (other
//!   than `..`) is an empty 400, as `ResourceFiles` refuses it.
//!
//! Both files carry a strong `ETag` (`"<length>:<hash>"` in hex, like `ResourceFiles`'
//! `"<length>:<mtime>"` but from the content, since embedded files have no mtime). A matching
//! `If-None-Match` (weak comparison, `*` included) answers 304 with no body; an `If-Match`
//! that names other tags answers 412.
//!
//! The page's contract, stable for browser tests (all URLs root-relative, so it works
//! through a gateway on another origin's port):
//! - `#state`: `loading` → `listing` → `querying` (only with at least one pipeline) → `done`
//!   (also when the WebSocket failed: see `#ws`), or `failed` when the list failed;
//! - `#auth`: the identity providers named by `GET /config/authentication` (its keys, e.g.
//!   `generic_oidc`), or `none` for `{}`;
//! - `#token`: `present` or `absent`; the token comes from the URL fragment `#token=<token>`,
//!   is kept in `sessionStorage` (`feldera-token`) and removed from the address bar; a new
//!   `#token=` on an open page reloads it;
//! - `#pipelines` (`<ul>`): one `<li>` per pipeline name from
//!   `GET /v0/pipelines?selector=status` sent with `Authorization: Bearer <token>`;
//! - `#error`: on a failed list, `<status> <error_code>` (e.g. `401 AuthenticationFailed`),
//!   or the status alone when the body has no `error_code`;
//! - `#ws`: the first message of a WebSocket to `/v0/pipelines/{first pipeline}/query` opened
//!   with the subprotocols `feldera-ws-v1` and `feldera-bearer.<base64url(token), no
//!   padding>` (the latter only with a token) after sending `{"sql":"SELECT 1",
//!   "format":"json"}`; `error: ...` or `closed: <code>` when it fails. Against the stand-in
//!   the message is `{"text":"stand-in query answer","echo":"{\"sql\":\"SELECT 1\",...}"}`.
//!
//! Checked by hand in Debian's `chromium` (chromedriver) against a stand-in with
//! `require_api_key`: the right token lists the pipelines and shows the WebSocket answer;
//! a wrong one shows `401 AuthenticationFailed`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{empty, full, Body};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const CONSOLE_JS: &str = include_str!("../assets/console.js");

/// Where the page loads its script from.
pub const SCRIPT_PATH: &str = "/_app/console.js";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    cache_control: Option<&'static str>,
}

const INDEX: Asset = Asset {
    body: INDEX_HTML,
    content_type: "text/html",
    cache_control: None,
};

const SCRIPT: Asset = Asset {
    body: CONSOLE_JS,
    content_type: "application/javascript",
    cache_control: Some("public, max-age=86400"),
};

/// 64-bit FNV-1a: a stable content hash for the `ETag`.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Asset {
    fn etag(&self) -> String {
        format!(
            "\"{:x}:{:x}\"",
            self.body.len(),
            fnv1a(self.body.as_bytes())
        )
    }
}

/// The entity tags listed in a conditional header; `None` for `*`.
fn tags(headers: &HeaderMap, name: header::HeaderName) -> Option<Option<Vec<String>>> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    if values.iter().any(|v| v.trim() == "*") {
        return Some(None);
    }
    Some(Some(
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().to_owned())
            .filter(|tag| !tag.is_empty())
            .collect(),
    ))
}

/// `ResourceFiles`' path check: which segments it refuses with 400.
fn refused_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        segment != ".."
            && (segment.starts_with('.')
                || segment.starts_with('*')
                || segment.ends_with(':')
                || segment.ends_with('<')
                || segment.ends_with('>'))
    })
}

/// The console's answer to a `GET` or `HEAD` of `path` (see the module doc).
pub fn serve(path: &str, headers: &HeaderMap) -> Response<Body> {
    let asset = match path {
        SCRIPT_PATH => &SCRIPT,
        "/index.html" => &INDEX,
        _ if refused_segment(path) => {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
        _ => &INDEX,
    };
    let etag = asset.etag();
    let mut response = Response::new(full(asset.body));
    let head = response.headers_mut();
    head.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        head.insert(header::ETAG, value);
    }
    if let Some(cache_control) = asset.cache_control {
        head.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
    }
    let strong = |tag: &String| tag == &etag;
    let weak = |tag: &String| tag.trim_start_matches("W/") == etag;
    let status = match (
        tags(headers, header::IF_MATCH),
        tags(headers, header::IF_NONE_MATCH),
    ) {
        (Some(Some(listed)), _) if !listed.iter().any(strong) => {
            Some(StatusCode::PRECONDITION_FAILED)
        }
        (_, Some(None)) => Some(StatusCode::NOT_MODIFIED),
        (_, Some(Some(listed))) if listed.iter().any(weak) => Some(StatusCode::NOT_MODIFIED),
        _ => None,
    };
    if let Some(status) = status {
        *response.status_mut() = status;
        *response.body_mut() = empty();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_segments_are_refused_like_resource_files() {
        for path in ["/.env", "/a/.git/config", "/*x", "/c:", "/x<", "/y>"] {
            assert!(refused_segment(path), "{path}");
        }
        for path in ["/", "/pipelines/orders/", "/a/../b", "/_app/console.js"] {
            assert!(!refused_segment(path), "{path}");
        }
    }

    #[test]
    fn the_etag_changes_with_the_content() {
        assert_ne!(INDEX.etag(), SCRIPT.etag());
        assert!(INDEX
            .etag()
            .starts_with(&format!("\"{:x}:", INDEX_HTML.len())));
    }
}
