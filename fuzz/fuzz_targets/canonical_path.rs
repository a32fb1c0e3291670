//! The canonical-path check and the catalog behind it: never a panic, and an accepted path is
//! one that `http::Uri` keeps as it is and that classifies the same after the trip.
#![no_main]

use http::{Method, Uri};
use libfuzzer_sys::fuzz_target;
use pipeline_gateway::catalog::classify;
use pipeline_gateway::validate::check_canonical;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if check_canonical(path).is_err() {
        return;
    }
    assert!(
        !path.contains('%'),
        "accepted a percent-encoded path: {path:?}"
    );
    let Ok(uri) = path.parse::<Uri>() else {
        panic!("accepted a path that is no request target: {path:?}");
    };
    assert_eq!(uri.path(), path, "the path changed on its way");
    for method in [Method::GET, Method::POST, Method::DELETE, Method::PATCH] {
        let here = classify(&method, path).ok();
        let there = classify(&method, uri.path()).ok();
        assert_eq!(
            here.map(|c| (c.endpoint.name, c.pipeline(path).map(str::to_owned))),
            there.map(|c| (c.endpoint.name, c.pipeline(uri.path()).map(str::to_owned))),
        );
    }
});
