//! Content codings of upstream error bodies: undoing them, with a bound on what comes out.
//!
//! The manager compresses its answers (errors included) whenever the client sent
//! `Accept-Encoding`, so an error body must be decoded before [`super::normalize`] can judge it.
//! Only those bodies are decoded here; success bodies and streams are never touched.
//!
//! - `Content-Encoding` lists the codings in the order they were applied (RFC 9110 §8.4), over
//!   one or several header lines; they are undone last first. `identity` is skipped. Known:
//!   `gzip` (and `x-gzip`), `deflate` (zlib-wrapped as the RFC says; a raw deflate stream, which
//!   some servers send, is accepted too), `br`, `zstd`.
//! - The bound applies to the **decoded** size of every step: a small gzip of a gigabyte of
//!   zeros costs at most `limit + 1` bytes of output and stops there ([`DecodeError::TooLarge`]).
//! - An unknown coding, or bytes that are not a valid stream of the named coding (corrupt,
//!   cut off), is [`DecodeError::Undecodable`] — never bytes passed on as if they were text.
//!
//! Decoding uses `async-compression` over the bytes already read (at most the normalization
//! bound), so it is short and bounded work.

use async_compression::tokio::bufread::{
    BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder,
};
use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_ENCODING};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why an encoded body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decoded body is longer than the bound.
    #[error("the decoded body is longer than {limit} bytes")]
    TooLarge { limit: usize },
    /// An unknown coding, or a corrupt or cut-off stream.
    #[error("{0}")]
    Undecodable(String),
}

/// The codings of `Content-Encoding`, lowercased, in the order they were applied, without
/// `identity`. Empty when the body is not encoded.
pub fn codings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .flat_map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty() && t != "identity")
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `Content-Encoding` value as text, for error details.
pub fn content_encoding_text(headers: &HeaderMap) -> String {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Undoes `codings` (as returned by [`codings`]) on `encoded`; at most `limit` decoded bytes.
pub async fn decode(
    encoded: Bytes,
    codings: &[String],
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let mut bytes = encoded;
    for coding in codings.iter().rev() {
        bytes = decode_one(&bytes, coding, limit).await?;
    }
    Ok(bytes)
}

/// As much of the decoded body as `encoded` yields, at most `limit` bytes, for quoting a body
/// that was cut off at the bound (a cut-off stream is no error here; an unknown coding gives
/// nothing).
pub async fn decode_prefix(encoded: Bytes, codings: &[String], limit: usize) -> Bytes {
    let mut bytes = encoded;
    for coding in codings.iter().rev() {
        let mut out = Vec::new();
        let input: &[u8] = &bytes;
        let _ = match coding.as_str() {
            "gzip" | "x-gzip" => read_prefix(GzipDecoder::new(input), &mut out, limit).await,
            "br" => read_prefix(BrotliDecoder::new(input), &mut out, limit).await,
            "zstd" => read_prefix(ZstdDecoder::new(input), &mut out, limit).await,
            "deflate" => read_prefix(ZlibDecoder::new(input), &mut out, limit).await,
            _ => return Bytes::new(),
        };
        bytes = Bytes::from(out);
    }
    bytes
}

async fn read_prefix<R: AsyncRead + Unpin>(
    decoder: R,
    out: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    // On an error, what was read so far stays in `out`.
    decoder.take(limit as u64).read_to_end(out).await
}

async fn decode_one(input: &[u8], coding: &str, limit: usize) -> Result<Bytes, DecodeError> {
    match coding {
        "gzip" | "x-gzip" => read_bounded(GzipDecoder::new(input), coding, limit).await,
        "br" => read_bounded(BrotliDecoder::new(input), coding, limit).await,
        "zstd" => read_bounded(ZstdDecoder::new(input), coding, limit).await,
        "deflate" => match read_bounded(ZlibDecoder::new(input), coding, limit).await {
            Err(DecodeError::Undecodable(_)) => {
                read_bounded(DeflateDecoder::new(input), coding, limit).await
            }
            other => other,
        },
        other => Err(DecodeError::Undecodable(format!(
            "unknown content coding \"{other}\""
        ))),
    }
}

/// Reads `decoder` to its end, failing as soon as more than `limit` bytes come out.
async fn read_bounded<R: AsyncRead + Unpin>(
    decoder: R,
    coding: &str,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|e| DecodeError::Undecodable(format!("invalid {coding} stream: {e}")))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{
        BrotliEncoder, DeflateEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder,
    };
    use http::HeaderValue;

    async fn encode(coding: &str, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let result = match coding {
            "gzip" => GzipEncoder::new(input).read_to_end(&mut out).await,
            "br" => BrotliEncoder::new(input).read_to_end(&mut out).await,
            "zstd" => ZstdEncoder::new(input).read_to_end(&mut out).await,
            "deflate" => ZlibEncoder::new(input).read_to_end(&mut out).await,
            "raw-deflate" => DeflateEncoder::new(input).read_to_end(&mut out).await,
            other => panic!("no encoder for {other}"),
        };
        result.unwrap();
        out
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    const ERROR: &[u8] = br#"{"message":"Unknown pipeline name 'nope'","error_code":"UnknownPipelineName","details":{"pipeline_name":"nope"}}"#;

    #[tokio::test]
    async fn every_known_coding_round_trips() {
        for coding in ["gzip", "br", "zstd", "deflate"] {
            let encoded = encode(coding, ERROR).await;
            let decoded = decode(encoded.into(), &[coding.to_owned()], 64 * 1024)
                .await
                .unwrap();
            assert_eq!(&decoded[..], ERROR, "{coding}");
        }
        let raw = encode("raw-deflate", ERROR).await;
        let decoded = decode(raw.into(), &["deflate".to_owned()], 64 * 1024)
            .await
            .unwrap();
        assert_eq!(&decoded[..], ERROR, "raw deflate is accepted too");
    }

    #[tokio::test]
    async fn stacked_codings_are_undone_last_first_over_several_header_lines() {
        let gzipped = encode("gzip", ERROR).await;
        let both = encode("br", &gzipped).await;
        let codings = codings(&headers(&["gzip", "Identity, BR"]));
        assert_eq!(codings, ["gzip", "br"]);
        let decoded = decode(both.into(), &codings, 64 * 1024).await.unwrap();
        assert_eq!(&decoded[..], ERROR);
    }

    #[tokio::test]
    async fn a_bomb_stops_at_the_bound() {
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let bomb = encode("gzip", &zeros).await;
        assert!(bomb.len() < 20 * 1024, "{} bytes", bomb.len());
        let error = decode(bomb.into(), &["gzip".to_owned()], 64 * 1024)
            .await
            .unwrap_err();
        assert_eq!(error, DecodeError::TooLarge { limit: 64 * 1024 });
    }

    #[tokio::test]
    async fn unknown_and_corrupt_streams_are_undecodable() {
        let error = decode(Bytes::from_static(b"x"), &["compress".to_owned()], 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DecodeError::Undecodable(m) if m.contains("compress")),
            "{error:?}"
        );
        let mut cut = encode("gzip", ERROR).await;
        cut.truncate(cut.len() / 2);
        let error = decode(cut.into(), &["gzip".to_owned()], 1024)
            .await
            .unwrap_err();
        assert!(matches!(error, DecodeError::Undecodable(_)), "{error:?}");
        let error = decode(Bytes::from_static(ERROR), &["br".to_owned()], 1024)
            .await
            .unwrap_err();
        assert!(matches!(error, DecodeError::Undecodable(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_prefix_of_a_cut_off_stream_is_decoded_as_far_as_it_goes() {
        let text = "x".repeat(10_000);
        let mut gz = encode("gzip", text.as_bytes()).await;
        gz.truncate(gz.len() - 8);
        let prefix = decode_prefix(gz.into(), &["gzip".to_owned()], 1024).await;
        assert_eq!(&prefix[..], &text.as_bytes()[..1024]);
    }

    #[test]
    fn identity_is_no_coding() {
        assert!(codings(&headers(&["identity"])).is_empty());
        assert!(codings(&HeaderMap::new()).is_empty());
    }
}
