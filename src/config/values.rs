//! Typed configuration values: each is parsed — and refused, with its reason — once, when the
//! file is read, so nothing after loading handles a string that might not parse.
//!
//! Every type deserializes from the string the file holds (`#[serde(try_from = "String")]`)
//! and serializes back to the same spelling (for `GET /config`). A refusal becomes a parse
//! error that names the key path and the line (see `Config::from_toml`).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::catalog::{self, EndpointClass};

/// Implements `TryFrom<String>`, `From<T> for String` and `Display` for a value type that keeps
/// its original text.
macro_rules! text_value {
    ($type:ident, $parse:path) => {
        impl TryFrom<String> for $type {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                $parse(&text)
            }
        }
        impl From<$type> for String {
            fn from(value: $type) -> String {
                value.to_string()
            }
        }
    };
}

/// A rate: `count` requests per `per` (`N/s`, `N/m` or `N/h`, `N >= 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub fn parse(text: &str) -> Result<Rate, String> {
        let refuse = || format!("\"{text}\" is not a rate: write N/s, N/m or N/h with N >= 1");
        let (count, unit) = text.split_once('/').ok_or_else(refuse)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse());
        }
        let count: u32 = count.parse().ok().filter(|n| *n >= 1).ok_or_else(refuse)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(refuse()),
        };
        Ok(Rate { count, per })
    }

    /// Time to earn one request back (GCRA's emission interval). Never zero.
    pub fn interval(self) -> Duration {
        (self.per / self.count).max(Duration::from_nanos(1))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

text_value!(Rate, Rate::parse);

/// An upstream endpoint: `http://host:port` or `https://host:port`, no path or query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl EndpointUrl {
    pub fn parse(text: &str) -> Result<EndpointUrl, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("\"{text}\" is not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(format!("\"{text}\": the scheme must be http or https")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("\"{text}\" has no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("\"{text}\": an endpoint has no path or query"));
        }
        Ok(EndpointUrl { scheme, authority })
    }

    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The host, without brackets around an IPv6 address.
    pub fn host(&self) -> &str {
        self.authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

text_value!(EndpointUrl, EndpointUrl::parse);

/// A URL the gateway fetches (key sets, discovery): https anywhere, plain http only on
/// loopback, so nothing is fetched without TLS outside tests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FetchUrl(pub http::Uri);

impl FetchUrl {
    pub fn parse(url: &str) -> Result<FetchUrl, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("not a URL: \"{url}\""))?;
        let host = uri.host().ok_or_else(|| format!("no host in \"{url}\""))?;
        match uri.scheme_str() {
            Some("https") => Ok(FetchUrl(uri)),
            Some("http") if matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1") => {
                Ok(FetchUrl(uri))
            }
            Some("http") => Err(format!(
                "\"{url}\" is plain http; key sets are fetched over https (http only on loopback)"
            )),
            _ => Err(format!("\"{url}\" is not an http(s) URL")),
        }
    }
}

impl fmt::Display for FetchUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_value!(FetchUrl, FetchUrl::parse);

/// A glob on a pipeline name (`*` matches everything, `prod-*`, `{a,b}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NameGlob(globset::Glob);

impl NameGlob {
    pub fn parse(text: &str) -> Result<NameGlob, String> {
        globset::Glob::new(text)
            .map(NameGlob)
            .map_err(|e| format!("invalid glob \"{text}\": {e}"))
    }

    pub fn glob(&self) -> &globset::Glob {
        &self.0
    }

    /// Whether this glob matches every name.
    pub fn is_any(&self) -> bool {
        self.0.glob() == "*"
    }
}

impl fmt::Display for NameGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.glob())
    }
}

text_value!(NameGlob, NameGlob::parse);

/// A glob on a request path: `*` stays within one segment, `**` crosses segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathGlob(globset::Glob);

impl PathGlob {
    pub fn parse(text: &str) -> Result<PathGlob, String> {
        if !text.starts_with('/') {
            return Err(format!("\"{text}\" does not start with /"));
        }
        globset::GlobBuilder::new(text)
            .literal_separator(true)
            .build()
            .map(PathGlob)
            .map_err(|e| format!("invalid glob \"{text}\": {e}"))
    }

    pub fn glob(&self) -> &globset::Glob {
        &self.0
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.glob())
    }
}

text_value!(PathGlob, PathGlob::parse);

/// An HTTP method, in its standard uppercase spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpMethod(pub http::Method);

impl HttpMethod {
    const KNOWN: [&'static str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

    pub fn parse(text: &str) -> Result<HttpMethod, String> {
        if !Self::KNOWN.contains(&text) {
            return Err(format!(
                "unknown method \"{text}\" (uppercase: {})",
                Self::KNOWN.join(", ")
            ));
        }
        http::Method::from_bytes(text.as_bytes())
            .map(HttpMethod)
            .map_err(|e| format!("\"{text}\": {e}"))
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

text_value!(HttpMethod, HttpMethod::parse);

/// A header name (lowercased).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderName(pub http::HeaderName);

impl HeaderName {
    pub fn parse(text: &str) -> Result<HeaderName, String> {
        http::HeaderName::try_from(text)
            .map(HeaderName)
            .map_err(|_| format!("\"{text}\" is not a header name"))
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

text_value!(HeaderName, HeaderName::parse);

/// An API key's stored form: base64 (standard, padded) of SHA-256 of the full key.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn parse(text: &str) -> Result<KeyHash, String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "not standard base64".to_string())?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(KeyHash)
            .map_err(|_| format!("decodes to {} bytes, not the 32 of SHA-256", bytes.len()))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(…)")
    }
}

text_value!(KeyHash, KeyHash::parse);

/// A peer whose `X-Forwarded-For` is believed: a network, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxy(pub IpNet);

impl TrustedProxy {
    pub fn parse(text: &str) -> Result<TrustedProxy, String> {
        text.parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
            .map(TrustedProxy)
            .ok_or_else(|| format!("\"{text}\" is not an IP address or network"))
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_value!(TrustedProxy, TrustedProxy::parse);

/// An endpoint of the catalog by name (`activate`, `pipelines.list`) or a whole class
/// (`class:lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum EndpointRef {
    Name(&'static str),
    Class(EndpointClass),
}

impl EndpointRef {
    pub fn parse(text: &str) -> Result<EndpointRef, String> {
        if let Some(class) = text.strip_prefix("class:") {
            return EndpointClass::parse(class)
                .map(EndpointRef::Class)
                .ok_or_else(|| {
                    let all: Vec<&str> = EndpointClass::ALL.iter().map(|c| c.as_str()).collect();
                    format!("unknown class \"{class}\" ({})", all.join(", "))
                });
        }
        catalog::endpoint_names()
            .find(|name| *name == text)
            .map(EndpointRef::Name)
            .ok_or_else(|| {
                format!("unknown endpoint \"{text}\" (an endpoint name, or class:<class>)")
            })
    }

    /// Whether `endpoint` is this one, or of this class.
    pub fn matches(&self, endpoint: &catalog::Endpoint) -> bool {
        match self {
            EndpointRef::Name(name) => *name == endpoint.name,
            EndpointRef::Class(class) => *class == endpoint.class,
        }
    }
}

impl fmt::Display for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointRef::Name(name) => f.write_str(name),
            EndpointRef::Class(class) => write!(f, "class:{}", class.as_str()),
        }
    }
}

text_value!(EndpointRef, EndpointRef::parse);

// By hand: a derived impl would tie the names' `'static` lifetime to the input's.
impl<'de> Deserialize<'de> for EndpointRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EndpointRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A JWS algorithm the gateway verifies, spelled exactly (`RS256`, `EdDSA`); `none` is never
/// one, in any casing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JwsAlgorithm(pub jsonwebtoken::Algorithm);

impl JwsAlgorithm {
    pub const NAMES: [&'static str; 12] = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "EdDSA",
    ];

    pub fn parse(text: &str) -> Result<JwsAlgorithm, String> {
        use jsonwebtoken::Algorithm as A;
        if text.eq_ignore_ascii_case("none") {
            return Err("\"none\" is never allowed".into());
        }
        Ok(JwsAlgorithm(match text {
            "HS256" => A::HS256,
            "HS384" => A::HS384,
            "HS512" => A::HS512,
            "RS256" => A::RS256,
            "RS384" => A::RS384,
            "RS512" => A::RS512,
            "PS256" => A::PS256,
            "PS384" => A::PS384,
            "PS512" => A::PS512,
            "ES256" => A::ES256,
            "ES384" => A::ES384,
            "EdDSA" => A::EdDSA,
            _ => {
                return Err(format!(
                    "unknown algorithm \"{text}\" ({})",
                    Self::NAMES.join(", ")
                ))
            }
        }))
    }

    /// Whether it is an HMAC algorithm (needs a shared secret).
    pub fn is_symmetric(self) -> bool {
        use jsonwebtoken::Algorithm as A;
        matches!(self.0, A::HS256 | A::HS384 | A::HS512)
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

text_value!(JwsAlgorithm, JwsAlgorithm::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_once_and_print_back_their_spelling() {
        assert_eq!(Rate::parse("5/s").unwrap().to_string(), "5/s");
        assert!(Rate::parse("0/s").is_err() && Rate::parse("5/d").is_err());
        assert!(Rate::parse("+5/s").is_err());
        let url = EndpointUrl::parse("https://m:8080").unwrap();
        assert!(url.is_https());
        assert_eq!(url.to_string(), "https://m:8080");
        assert!(EndpointUrl::parse("http://m/v0").is_err());
        assert!(EndpointUrl::parse("ftp://m").is_err());
        assert!(FetchUrl::parse("http://idp.example.com/jwks").is_err());
        assert!(FetchUrl::parse("http://127.0.0.1:9/jwks").is_ok());
        assert!(NameGlob::parse("*").unwrap().is_any());
        assert!(NameGlob::parse("[").is_err());
        assert!(PathGlob::parse("v0/x").is_err());
        assert!(HttpMethod::parse("get").is_err());
        assert_eq!(HttpMethod::parse("DELETE").unwrap().0, http::Method::DELETE);
        assert!(KeyHash::parse("AAAA").unwrap_err().contains("3 bytes"));
        assert_eq!(
            TrustedProxy::parse("10.0.0.1").unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert_eq!(
            EndpointRef::parse("class:lifecycle").unwrap().to_string(),
            "class:lifecycle"
        );
        assert!(EndpointRef::parse("activat").is_err());
        assert!(EndpointRef::parse("class:nope").is_err());
        assert_eq!(
            JwsAlgorithm::parse("NoNe").unwrap_err(),
            "\"none\" is never allowed"
        );
        assert!(JwsAlgorithm::parse("rs256").is_err());
        assert!(JwsAlgorithm::parse("HS384").unwrap().is_symmetric());
    }
}
