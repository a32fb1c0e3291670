//! Activate's query: never a panic, and what is forwarded parses back to the same query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline_gateway::validate::ActivateQuery;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = ActivateQuery::parse(Some(query)) {
        let forwarded = parsed.forwarded_query();
        let again = ActivateQuery::parse(forwarded).expect("the forwarded query is valid");
        assert_eq!(again, parsed);
    }
});
