//! The `stand-in` command line: options for [`StandinOptions`] and a `run` that serves until
//! Ctrl-C or SIGTERM. It owns argument parsing only; the binary's `main.rs` decides where the
//! subcommand lives.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;

use super::{serve, Compiler, Edition, SeedPipeline, SeedStatus, StandinOptions};

/// Run the stand-in pipeline manager.
#[derive(clap::Args, Clone, Debug)]
pub struct StandinArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// A pipeline present at start, `NAME[:STATUS]` with STATUS one of stopped, standby,
    /// paused, running (default standby). Repeatable.
    #[arg(long = "seed", value_name = "NAME[:STATUS]")]
    pub seed: Vec<SeedArg>,
    /// How long each transitional status (Provisioning, Initializing, Stopping) lasts.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub lifecycle_delay: Duration,
    /// Also answer unknown-pipeline 404s with an empty body, like an older manager.
    #[arg(long)]
    pub non_json_errors: bool,
    /// Require `Authorization: Bearer KEY` on every non-public request.
    #[arg(long, value_name = "KEY")]
    pub require_api_key: Option<String>,
    /// Name sent back in the `x-standin-instance` response header.
    #[arg(long, value_name = "NAME", default_value = "standin")]
    pub instance: String,
    /// Size of each chunk of the endless egress stream, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub egress_chunk_bytes: usize,
    /// Pause between egress chunks (0s: as fast as the reader takes them).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub egress_interval: Duration,
    /// Never compress answers, whatever the client's `Accept-Encoding` (the manager, and by
    /// default the stand-in, compress every non-streaming answer a client accepts encoded).
    #[arg(long)]
    pub no_compression: bool,
    /// What compiling a program ends in: `succeeds` (Success), or `absent` (SystemError, like
    /// a manager without its SQL compiler).
    #[arg(long, value_name = "OUTCOME", default_value = "succeeds", value_parser = parse_compiler)]
    pub compiler: Compiler,
    /// The manager build to play: `enterprise` (activate works) or `oss` (activate and a stop
    /// without `force=true` answer 501 `EnterpriseFeature`).
    #[arg(long, value_name = "EDITION", default_value = "enterprise", value_parser = parse_edition)]
    pub edition: Edition,
    /// Do not serve the web console outside `/v0` (answer `Not found`, like a manager built
    /// without its console).
    #[arg(long)]
    pub no_web_console: bool,
    /// What `GET /config/authentication` answers, as JSON (default `{}`), e.g.
    /// `{"generic_oidc":{"issuer":"https://idp.example/","client_id":"feldera-console"}}`.
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub console_authentication: Option<serde_json::Value>,
}

fn parse_json(value: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(value).map_err(|error| format!("not JSON: {error}"))
}

fn parse_edition(value: &str) -> Result<Edition, String> {
    match value {
        "oss" => Ok(Edition::Oss),
        "enterprise" => Ok(Edition::Enterprise),
        other => Err(format!(
            "unknown edition `{other}` (expected oss or enterprise)"
        )),
    }
}

fn parse_compiler(value: &str) -> Result<Compiler, String> {
    match value {
        "succeeds" => Ok(Compiler::Succeeds),
        "absent" => Ok(Compiler::Absent),
        other => Err(format!(
            "unknown compiler `{other}` (expected succeeds or absent)"
        )),
    }
}

/// One `--seed NAME[:STATUS]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedArg(pub SeedPipeline);

impl FromStr for SeedArg {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (name, status) = match value.split_once(':') {
            Some((name, status)) => (name, status),
            None => (value, "standby"),
        };
        if name.is_empty() {
            return Err("the pipeline name is empty".to_owned());
        }
        let status = match status {
            "stopped" => SeedStatus::Stopped,
            "standby" => SeedStatus::Standby,
            "paused" => SeedStatus::Paused,
            "running" => SeedStatus::Running,
            other => {
                return Err(format!(
                    "unknown status `{other}` (expected stopped, standby, paused or running)"
                ))
            }
        };
        Ok(SeedArg(SeedPipeline {
            name: name.to_owned(),
            status,
        }))
    }
}

impl StandinArgs {
    /// The options these arguments describe.
    pub fn options(&self) -> StandinOptions {
        StandinOptions {
            seed: self.seed.iter().map(|s| s.0.clone()).collect(),
            lifecycle_delay: self.lifecycle_delay,
            non_json_errors: self.non_json_errors,
            require_api_key: self.require_api_key.clone(),
            instance: self.instance.clone(),
            egress_chunk_bytes: self.egress_chunk_bytes,
            egress_interval: self.egress_interval,
            compression: !self.no_compression,
            compiler: self.compiler,
            edition: self.edition,
            web_console: !self.no_web_console,
            console_authentication: self.console_authentication.clone(),
        }
    }
}

/// Serves the stand-in until Ctrl-C or SIGTERM, printing the URL it listens on.
pub async fn run(args: StandinArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("stand-in pipeline manager listening on http://{addr}");
    serve(listener, args.options(), termination()).await;
    Ok(())
}

/// Completes on Ctrl-C, or SIGTERM on Unix.
async fn termination() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: StandinArgs,
    }

    #[test]
    fn seeds_default_to_standby_and_durations_use_humantime() {
        let cli = Cli::try_parse_from([
            "x",
            "--seed",
            "orders",
            "--seed",
            "billing:running",
            "--lifecycle-delay",
            "20ms",
            "--egress-interval",
            "1s",
        ])
        .unwrap();
        let opts = cli.args.options();
        assert_eq!(
            opts.seed[0],
            SeedPipeline {
                name: "orders".into(),
                status: SeedStatus::Standby
            }
        );
        assert_eq!(opts.seed[1].status, SeedStatus::Running);
        assert_eq!(opts.lifecycle_delay, Duration::from_millis(20));
        assert_eq!(opts.egress_interval, Duration::from_secs(1));
        assert_eq!(cli.args.listen.to_string(), "127.0.0.1:8081");
        assert!(Cli::try_parse_from(["x", "--seed", "orders:bogus"]).is_err());
        assert_eq!(opts.edition, Edition::Enterprise);
        assert!(opts.compression);
        let oss = Cli::try_parse_from([
            "x",
            "--edition",
            "oss",
            "--no-compression",
            "--compiler",
            "absent",
        ])
        .unwrap()
        .args
        .options();
        assert_eq!(
            (oss.edition, oss.compression, oss.compiler),
            (Edition::Oss, false, Compiler::Absent)
        );
        assert!(Cli::try_parse_from(["x", "--edition", "community"]).is_err());
    }
}
