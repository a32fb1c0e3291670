//! Host and `:authority` checks on arbitrary values: never a panic, and an accepted request
//! has at most one `Host`, a valid authority that agrees with `:authority`.
#![no_main]

use http::{HeaderValue, Uri, Version};
use libfuzzer_sys::fuzz_target;
use pipeline_gateway::body;
use pipeline_gateway::check::RequestCheck;
use pipeline_gateway::validate::RequestHygiene;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|b| *b == 0xff);
    let authority = parts.next().unwrap_or_default();
    let mut request = http::Request::new(body::empty());
    *request.version_mut() = if flags & 1 == 1 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    if flags & 2 == 2 {
        let text = format!("http://{}/v0/pipelines", String::from_utf8_lossy(authority));
        match text.parse::<Uri>() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return,
        }
    }
    for host in parts {
        if let Ok(value) = HeaderValue::from_bytes(host) {
            request.headers_mut().append(http::header::HOST, value);
        }
    }
    if RequestHygiene.check(&mut request).is_ok() {
        let hosts: Vec<_> = request
            .headers()
            .get_all(http::header::HOST)
            .iter()
            .collect();
        assert!(hosts.len() <= 1);
        if let Some(host) = hosts.first() {
            let text = host.to_str().expect("an accepted Host is text");
            let authority: http::uri::Authority = text.parse().expect("a valid authority");
            assert!(!authority.host().is_empty());
        }
    }
});
