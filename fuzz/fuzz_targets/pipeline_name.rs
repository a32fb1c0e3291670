//! Pipeline names: accepted exactly when Feldera's pattern and length accept them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline_gateway::validate::check_name;

fn matches_pattern(name: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    match name.as_bytes() {
        [] => false,
        [only] => alnum(only),
        [first, middle @ .., last] => alnum(first) && alnum(last) && middle.iter().all(inner),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let expected = name.len() <= 63 && matches_pattern(name);
    assert_eq!(check_name(name).is_ok(), expected, "{name:?}");
});
