//! The JWT parser and the claim checks on whatever a token says: never a panic, and a parsed
//! token's signing input is the text before its last dot.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pipeline_gateway::auth::claims::ClaimRules;
use pipeline_gateway::auth::token::Token;
use pipeline_gateway::config::Config;

static RULES: LazyLock<ClaimRules> = LazyLock::new(|| {
    let config: Config = pipeline_gateway::config::parse_toml(
        r#"
[auth]
mode = "on"
[[auth.jwt]]
issuer = "https://issuer.example"
jwks_file = "keys.json"
audiences = ["feldera"]
algorithms = ["RS256"]
role_claim = "role"
tenant_claim = "tenant"
"#,
    )
    .expect("claim rules configuration");
    ClaimRules::new(&config.auth.jwt[0])
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = Token::parse(text) {
        assert_eq!(
            format!("{}.{}", token.signing_input, token.signature),
            text,
            "the token is its signing input and signature"
        );
        let _ = RULES.check(&token.claims, 1_700_000_000.0);
        let _ = RULES.role(&token.claims);
        let _ = RULES.tenants(&token.claims);
        let _ = RULES.tenant_outside_issuer(&RULES.tenants(&token.claims));
    }
});
