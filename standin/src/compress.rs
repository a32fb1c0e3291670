//! Response compression exactly as the manager's actix-web `Compress` middleware does it
//! (actix-web 4.11 / actix-http 3.12 with the default `compress-brotli`, `compress-gzip` and
//! `compress-zstd` features, which Feldera's manager builds with). Read from actix's own
//! `middleware/compress.rs`, `http/header/accept_encoding.rs` (`negotiate`, `encoding_rank`),
//! `actix-http` `header/shared/quality_item.rs`, `header/utils.rs` (`from_comma_delimited`) and
//! `encoding/encoder.rs` (`Encoder::response`, `update_head`).
//!
//! Negotiation (before the request is handled at all):
//! - No `Accept-Encoding` header, or one that is not visible ASCII (actix's typed header fails
//!   to parse and counts as missing): identity.
//! - Every `Accept-Encoding` line is split on `,`; empty items are skipped and items that do
//!   not parse are dropped silently: a `q` value longer than 5 characters, not a number, or
//!   outside `0..=1`, or a bare `;x`. A parameter other than `q=`/`Q=` makes the whole item an
//!   unknown coding. Coding names are case-insensitive.
//! - No item left (e.g. `Accept-Encoding:` empty): identity.
//! - Items are ranked by q-value, then by the server's preference `br > zstd > gzip > deflate >
//!   any other coding > identity = *` (a q=0 item ranks 0), then by the client's order. The
//!   first item with q > 0 that names a supported coding (`br`, `zstd`, `gzip`, `deflate` or
//!   `identity`) wins: `gzip, deflate` (python-requests) gives gzip, `gzip, br` gives br,
//!   `identity, gzip` gives gzip, `gzip;q=0.5, identity` gives identity. `*` is never a coding
//!   by itself: `*` alone gives identity.
//! - Nothing matched: identity if identity is still acceptable (the first `identity` or `*`
//!   item in ranked order has q > 0, or there is none), otherwise **406 Not Acceptable** with
//!   the body `br, gzip, deflate, zstd`, `Vary: Accept-Encoding` and no content type, sent
//!   without handling the request (`gzip;q=0, identity;q=0` or `br;q=0, *;q=0`).
//!
//! Encoding the answer (every answer, errors included):
//! - Left as it is (no header added, no `Vary`): identity negotiated; an empty body (no body
//!   or a known length of 0: `DELETE` 200, an empty 404); status 101, 204 or 206; an answer
//!   that already has `Content-Encoding` (the manager marks every stream it forwards —
//!   egress, ingress, the HTTP ad-hoc query, logs — with `Content-Encoding: identity`, and the
//!   stand-in does the same, so streams are never compressed and the header is visible to
//!   clients); a `Content-Type` of `image/*` other than `image/svg+xml`, or `video/*`.
//!   304 is not in actix's list, but its body is empty.
//! - Otherwise: `Content-Encoding: <coding>` is set, `Vary: accept-encoding` is *appended*
//!   (an existing `Vary` stays), `Content-Length` goes away and the body is sent chunked.
//!   `deflate` is the zlib format (RFC 1950), as actix's `ZlibEncoder` writes it. Levels as
//!   actix's: gzip and deflate fastest (1), brotli quality 3 (window 22), zstd 3.
//!
//! The stand-in compresses only bodies of known length (all its non-streaming answers), in
//! full and in memory; a body without a known length is never buffered here (every such body
//! of the stand-in is a stream already marked identity). [`crate::StandinOptions::compression`]
//! turns all of this off.

use std::cmp::Reverse;

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use async_compression::Level;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::AsyncReadExt;

use crate::body::{boxed, full, Body};

/// A content coding the stand-in can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Brotli,
    Zstd,
    Gzip,
    Deflate,
}

impl Coding {
    fn parse(name: &str) -> Option<Coding> {
        let name = name.trim();
        [
            ("br", Coding::Brotli),
            ("gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("identity", Coding::Identity),
            ("zstd", Coding::Zstd),
        ]
        .into_iter()
        .find(|(token, _)| name.eq_ignore_ascii_case(token))
        .map(|(_, coding)| coding)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// The result of negotiating `Accept-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiated {
    Use(Coding),
    /// Nothing the client accepts: answer 406 without handling the request.
    NotAcceptable,
}

/// One item of `Accept-Encoding`.
#[derive(Clone, Debug, PartialEq)]
enum Preference {
    /// `*`
    Any,
    Known(Coding),
    Unknown,
}

#[derive(Clone, Debug)]
struct Item {
    preference: Preference,
    /// The q-value in thousandths, 0..=1000.
    quality: u16,
}

impl Item {
    /// Parses one item the way actix's `QualityItem<Preference<Encoding>>` does.
    fn parse(text: &str) -> Option<Item> {
        if !text.is_ascii() {
            return None;
        }
        let mut raw = text;
        let mut quality = 1000;
        if let Some((value, attribute)) = text.rsplit_once(';') {
            let (value, attribute) = (value.trim(), attribute.trim());
            if attribute.len() < 2 {
                return None;
            }
            if matches!(&attribute[..2], "q=" | "Q=") {
                let number = &attribute[2..];
                if number.len() > 5 {
                    return None;
                }
                let number: f32 = number.parse().ok()?;
                if !(0.0..=1.0).contains(&number) {
                    return None;
                }
                quality = (number * 1000.0) as u16;
                raw = value;
            }
        }
        let preference = match raw.trim() {
            "*" => Preference::Any,
            name => Coding::parse(name).map_or(Preference::Unknown, Preference::Known),
        };
        Some(Item {
            preference,
            quality,
        })
    }

    /// actix's `encoding_rank`: the server's preference among items of equal quality.
    fn rank(&self) -> u8 {
        if self.quality == 0 {
            return 0;
        }
        match self.preference {
            Preference::Known(Coding::Brotli) => 5,
            Preference::Known(Coding::Zstd) => 4,
            Preference::Known(Coding::Gzip) => 3,
            Preference::Known(Coding::Deflate) => 2,
            Preference::Any | Preference::Known(Coding::Identity) => 0,
            Preference::Unknown => 1,
        }
    }
}

/// Negotiates the coding for a request's headers (see the module doc).
pub fn negotiate(headers: &HeaderMap) -> Negotiated {
    let mut lines = headers.get_all(header::ACCEPT_ENCODING).iter().peekable();
    if lines.peek().is_none() {
        return Negotiated::Use(Coding::Identity);
    }
    let mut items = Vec::new();
    for line in lines {
        let Ok(line) = line.to_str() else {
            return Negotiated::Use(Coding::Identity);
        };
        items.extend(
            line.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .filter_map(Item::parse),
        );
    }
    if items.is_empty() {
        return Negotiated::Use(Coding::Identity);
    }
    // A stable sort keeps the client's order among equals.
    items.sort_by_key(|item| Reverse((item.quality, item.rank())));
    let identity_acceptable = items
        .iter()
        .find(|item| {
            matches!(
                item.preference,
                Preference::Any | Preference::Known(Coding::Identity)
            )
        })
        .is_none_or(|item| item.quality > 0);
    let matched = items
        .iter()
        .filter(|item| item.quality > 0)
        .find_map(|item| match item.preference {
            Preference::Known(coding) => Some(coding),
            _ => None,
        });
    match matched {
        Some(coding) => Negotiated::Use(coding),
        None if identity_acceptable => Negotiated::Use(Coding::Identity),
        None => Negotiated::NotAcceptable,
    }
}

/// The 406 actix sends when no coding is acceptable.
pub fn not_acceptable() -> Response<Body> {
    let mut response = Response::new(full("br, gzip, deflate, zstd"));
    *response.status_mut() = StatusCode::NOT_ACCEPTABLE;
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// actix's `default_compress_predicate`: images (but SVG) and videos are left alone.
fn compressible(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return true;
    };
    let subtype = subtype.split('+').next().unwrap_or_default();
    match kind {
        "image" => subtype == "svg",
        "video" => false,
        _ => true,
    }
}

/// Encodes `response` with `coding` where actix would (see the module doc).
pub async fn encode(coding: Coding, response: Response<Body>) -> Response<Body> {
    let size = response.body().size_hint().exact();
    let skip = coding == Coding::Identity
        || size.is_none_or(|size| size == 0)
        || matches!(
            response.status(),
            StatusCode::SWITCHING_PROTOCOLS | StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT
        )
        || response.headers().contains_key(header::CONTENT_ENCODING)
        || !compressible(response.headers());
    if skip {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let data = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, "stand-in: cannot read a body to compress");
            return Response::from_parts(parts, full(Bytes::new()));
        }
    };
    let encoded = match compress(coding, &data).await {
        Ok(encoded) => encoded,
        Err(error) => {
            tracing::warn!(%error, "stand-in: compression failed; answering identity");
            return Response::from_parts(parts, full(data));
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    // One frame of unknown total length, so hyper sends it chunked like actix does.
    let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(Bytes::from(encoded)),
    )]);
    Response::from_parts(parts, boxed(StreamBody::new(frames)))
}

/// Compresses `data` in full with actix's levels.
pub async fn compress(coding: Coding, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    match coding {
        Coding::Identity => out.extend_from_slice(data),
        Coding::Gzip => {
            GzipEncoder::with_quality(data, Level::Fastest)
                .read_to_end(&mut out)
                .await?;
        }
        Coding::Deflate => {
            ZlibEncoder::with_quality(data, Level::Fastest)
                .read_to_end(&mut out)
                .await?;
        }
        Coding::Brotli => {
            BrotliEncoder::with_quality(data, Level::Precise(3))
                .read_to_end(&mut out)
                .await?;
        }
        Coding::Zstd => {
            ZstdEncoder::with_quality(data, Level::Precise(3))
                .read_to_end(&mut out)
                .await?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(values: &[&str]) -> Negotiated {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        negotiate(&headers)
    }

    #[test]
    fn negotiation_follows_actix_ranking_q_values_and_identity_rules() {
        use Coding::*;
        use Negotiated::*;
        let table: &[(&[&str], Negotiated)] = &[
            (&[], Use(Identity)),
            (&[""], Use(Identity)),
            (&["gzip, deflate"], Use(Gzip)),
            (&["deflate, gzip"], Use(Gzip)),
            (&["gzip, deflate, br, zstd"], Use(Brotli)),
            (&["gzip", "br"], Use(Brotli)),
            (&["zstd, gzip"], Use(Zstd)),
            (&["deflate"], Use(Deflate)),
            (&["GZIP"], Use(Gzip)),
            (&["identity"], Use(Identity)),
            (&["identity, gzip"], Use(Gzip)),
            (&["gzip;q=0.5, identity"], Use(Identity)),
            (&["gzip;q=0.5, br;q=0.4"], Use(Gzip)),
            (&["br;q=0.9, gzip; Q=1"], Use(Gzip)),
            (&["*"], Use(Identity)),
            (&["compress"], Use(Identity)),
            (&["gzip;q=0"], Use(Identity)),
            (&["gzip;q=2"], Use(Identity)),
            (&["gzip;q=0.12345"], Use(Identity)),
            (&["gzip;level=9"], Use(Identity)),
            (&["gzip;q=0, identity;q=0"], NotAcceptable),
            (&["br;q=0, *;q=0"], NotAcceptable),
            (&["compress, *;q=0"], NotAcceptable),
            (&["gzip, *;q=0"], Use(Gzip)),
            (&["compress, identity;q=0.1, *;q=0"], Use(Identity)),
        ];
        for (values, want) in table {
            assert_eq!(pick(values), *want, "{values:?}");
        }
    }

    #[test]
    fn non_ascii_accept_encoding_counts_as_missing() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"gzip\xff").unwrap(),
        );
        assert_eq!(negotiate(&headers), Negotiated::Use(Coding::Identity));
    }

    #[test]
    fn images_and_videos_are_not_compressed_but_svg_is() {
        for (content_type, want) in [
            ("application/json", true),
            ("text/html; charset=utf-8", true),
            ("image/png", false),
            ("image/svg+xml", true),
            ("video/mp4", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            assert_eq!(compressible(&headers), want, "{content_type}");
        }
    }
}
