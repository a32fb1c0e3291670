//! Content codings in memory: [`encode`] a body as a manager would send it, [`decode`] what
//! the gateway sent.

use tokio::io::AsyncReadExt;

/// `bytes` encoded with `coding` (`gzip`, `deflate`, `br`, `zstd`), as a manager would send.
pub async fn encode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
    let mut out = Vec::new();
    let read = match coding {
        "gzip" => GzipEncoder::new(bytes).read_to_end(&mut out).await,
        "deflate" => ZlibEncoder::new(bytes).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(bytes).read_to_end(&mut out).await,
        "zstd" => ZstdEncoder::new(bytes).read_to_end(&mut out).await,
        other => panic!("no encoder for {other}"),
    };
    read.expect("encoding in memory");
    out
}

/// `bytes` decoded from `coding`.
pub async fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};
    let mut out = Vec::new();
    let read = match coding {
        "gzip" => GzipDecoder::new(bytes).read_to_end(&mut out).await,
        "deflate" => ZlibDecoder::new(bytes).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(bytes).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(bytes).read_to_end(&mut out).await,
        other => panic!("no decoder for {other}"),
    };
    read.expect("decoding in memory");
    out
}
