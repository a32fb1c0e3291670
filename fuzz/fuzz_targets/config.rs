//! Configuration loading: any text loads or fails with a problem, never a panic; a loaded
//! configuration is checked and its redacted form renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline_gateway::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            let _ = config.redacted();
            let _ = config.hash();
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
