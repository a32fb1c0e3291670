//! The stand-in manager (`feldera_standin`) as the gateway's upstream: seeded with a few
//! pipelines, bound to 127.0.0.1:0 in this process.

use std::net::SocketAddr;
use std::time::Duration;

use feldera_standin::{SeedPipeline, SeedStatus, Standin, StandinOptions};

/// A stand-in with the [`seeded`] pipelines, answering `x-standin-instance: <instance>`.
pub async fn standin(instance: &str) -> Standin {
    standin_with(StandinOptions {
        instance: instance.to_owned(),
        ..seeded()
    })
    .await
}

/// Options with `orders`, `billing` and `prod-eu` in Standby and `live` Running, and short
/// lifecycle transitions (20 ms).
pub fn seeded() -> StandinOptions {
    StandinOptions {
        seed: vec![
            SeedPipeline {
                name: "orders".into(),
                status: SeedStatus::Standby,
            },
            SeedPipeline {
                name: "billing".into(),
                status: SeedStatus::Standby,
            },
            SeedPipeline {
                name: "prod-eu".into(),
                status: SeedStatus::Standby,
            },
            SeedPipeline {
                name: "live".into(),
                status: SeedStatus::Running,
            },
        ],
        lifecycle_delay: Duration::from_millis(20),
        ..StandinOptions::default()
    }
}

/// A stand-in with these options.
pub async fn standin_with(options: StandinOptions) -> Standin {
    Standin::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options)
        .await
        .expect("stand-in binds")
}
