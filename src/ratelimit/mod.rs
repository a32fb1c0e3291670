//! Rate limiting (the rate-limit slot of the stack). Without `[rate_limit]` nothing is limited.
