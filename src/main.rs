//! The `pipeline-gateway` command line: run, check-config, apikey new|hash, stand-in, demo.

use std::path::PathBuf;
use std::process::ExitCode;

mod demo;
mod memory;

use clap::{Parser, Subcommand};
use feldera_standin::cli::StandinArgs;
use pipeline_gateway::config::{Config, ConfigError, LogConfig, LogFormat, TracingConfig};
use pipeline_gateway::telemetry::trace::TraceExport;
use pipeline_gateway::workers::Workers;
use pipeline_gateway::Gateway;

// mimalloc: the request path allocates many small, short-lived objects (see src/memory.rs).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pipeline-gateway",
    version,
    about = "Edge gateway for Feldera pipeline managers"
)]
struct Cli {
    /// Configuration file (same as `run --config`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Worker threads serving requests (default: one multi-threaded, work-stealing runtime
    /// with a thread per core). With N (1 or more) `run` starts N per-core runtimes: N
    /// threads, each a single-threaded runtime accepting on its own SO_REUSEPORT listener on
    /// the same address, like nginx's workers: no work stealing and no cross-thread wake-ups
    /// on the request path. Rate limits, the token cache and the upstream pools are shared.
    #[arg(long, global = true, env = "PIPELINE_GATEWAY_WORKERS")]
    workers: Option<usize>,
    /// Log format, over `[log] format` (default: JSON unless stderr is a terminal).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the configuration file.
    Run,
    /// Check a configuration file: exit 0, or list every problem with its key path.
    CheckConfig,
    /// Run the stand-in pipeline manager (an in-memory imitation for demos and tests).
    StandIn(StandinArgs),
    /// The stand-in manager and the gateway on loopback, with curl commands to try.
    Demo {
        /// Serve https with a throwaway CA and certificate made at start (the curl lines use
        /// `--cacert`).
        #[arg(long)]
        tls: bool,
    },
    /// Make or hash Feldera API keys.
    Apikey {
        #[command(subcommand)]
        action: ApikeyCommand,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Print a fresh key and the `[[auth.api_keys]]` entry that accepts it.
    New {
        /// The key's name (`key:<name>` in logs and rate limits).
        #[arg(long, default_value = "gateway")]
        name: String,
        /// read, write, admin or owner.
        #[arg(long, default_value = "read", value_parser = ["read", "write", "admin", "owner"])]
        role: String,
        /// The one tenant the key acts in.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Read a key on standard input and print its stored form (base64 of SHA-256).
    Hash,
}

fn apikey(action: ApikeyCommand) -> ExitCode {
    use pipeline_gateway::auth::{cli, Role};
    match action {
        ApikeyCommand::New { name, role, tenant } => {
            let role = Role::parse(&role).unwrap_or(Role::Read);
            let (key, entry) = cli::new_key(&name, role, tenant.as_deref());
            println!("{key}\n\n{entry}");
            ExitCode::SUCCESS
        }
        ApikeyCommand::Hash => match cli::hash_input(&mut std::io::stdin().lock()) {
            Ok((hash, warning)) => {
                if let Some(warning) = warning {
                    eprintln!("{warning}");
                }
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("pipeline-gateway: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Sets up the process's log (stderr; `--log-format`, else `[log] format`, else JSON unless
/// stderr is a terminal) and, with `[tracing]`, the trace exporter, whose spans go out
/// through the same subscriber. The exporter is returned to be shut down (flushed) at exit.
fn init_logging(
    cli_format: Option<&str>,
    log: &LogConfig,
    tracing: Option<&TracingConfig>,
) -> Result<Option<TraceExport>, String> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let terminal = std::io::stderr().is_terminal();
    let json = match (cli_format, log.format) {
        (Some(format), _) => format == "json",
        (None, Some(format)) => format == LogFormat::Json,
        (None, None) => !terminal,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let export = match tracing {
        Some(config) => Some(TraceExport::start(
            config,
            tokio::runtime::Handle::current(),
        )?),
        None => None,
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(export.as_ref().map(TraceExport::layer));
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    if json {
        registry.with(text.json()).init();
    } else {
        registry.with(text).init();
    }
    Ok(export)
}

/// Flushes and stops the trace exporter (its exports run on this runtime, so it must still
/// be running: the blocking shutdown goes to a blocking thread).
async fn stop_tracing(export: Option<TraceExport>) {
    if let Some(export) = export {
        let _ = tokio::task::spawn_blocking(move || export.shutdown()).await;
    }
}

/// Loads and checks the configuration; with `build`, also builds its runtime (reads the
/// files and variables it names) without serving it.
fn load(path: Option<&PathBuf>, build: bool) -> Result<Config, String> {
    let path = path.ok_or("--config PATH is required")?;
    let loaded = if build {
        pipeline_gateway::check_config(path)
    } else {
        Config::load(path)
    };
    loaded.map_err(|e| match e {
        ConfigError::Invalid(problems) => {
            let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            format!(
                "{}: {} problem(s):\n{}",
                path.display(),
                problems.len(),
                lines.join("\n")
            )
        }
        other => format!("{}: {other}", path.display()),
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(config: Config, path: PathBuf, workers: Option<usize>) -> anyhow::Result<()> {
    // SIGHUP reloads the configuration file; a broken one is logged and changes nothing.
    // Listened for before serving: its default action would end the process.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let gateway = match workers {
        // This thread's (current-thread) runtime is worker 0; the others get a thread each.
        Some(n) if n >= 2 => {
            let workers = Workers::spawn(n - 1)
                .map_err(|e| anyhow::anyhow!("cannot start {n} worker runtimes: {e}"))?;
            Gateway::start_per_core(config, Some(path), workers).await?
        }
        _ => Gateway::start_from(config, Some(path)).await?,
    };
    #[cfg(unix)]
    {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = hangups.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = gateway.reload_file().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    shutdown_signal().await;
    gateway.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    memory::settle();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::CheckConfig = command {
        let checked = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|runtime| runtime.block_on(async { load(cli.config.as_ref(), true) }));
        return match checked {
            Ok(config) => {
                for warning in pipeline_gateway::config_warnings(&config) {
                    eprintln!("warning: {warning}");
                }
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        };
    }
    let command = match command {
        Command::Apikey { action } => return apikey(action),
        other => other,
    };
    // The configuration before the log: `[log]` and `[tracing]` decide how it is set up.
    let config = match &command {
        Command::Run => Some(load(cli.config.as_ref(), false)),
        Command::Demo { .. } => {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from("config/demo.toml"));
            Some(load(Some(&path), false))
        }
        _ => None,
    };
    let config = match config.transpose() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("pipeline-gateway: {message}");
            return ExitCode::FAILURE;
        }
    };
    // `run --workers N`: per-core runtimes, this thread's being the first (see `serve`).
    let per_core = matches!(command, Command::Run) && cli.workers.is_some_and(|n| n >= 2);
    let mut builder = match cli.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(_) if per_core => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let default_log = LogConfig::default();
        let (log, tracing) = match &config {
            Some(config) => (&config.log, config.tracing.as_ref()),
            None => (&default_log, None),
        };
        let export =
            init_logging(cli.log_format.as_deref(), log, tracing).map_err(anyhow::Error::msg)?;
        let served = match (command, config) {
            (Command::StandIn(args), _) => feldera_standin::cli::run(args).await,
            (Command::Demo { tls }, Some(mut config)) => {
                let ca = match tls {
                    true => Some(demo::throwaway_tls(&mut config)?),
                    false => None,
                };
                let (gateway, standin) = demo::start(config).await?;
                println!("{}", demo::instructions(&gateway, &standin, ca.as_deref()));
                shutdown_signal().await;
                gateway.shutdown().await;
                standin.shutdown().await;
                Ok(())
            }
            (_, Some(config)) => {
                let path = cli.config.clone().unwrap_or_default();
                serve(config, path, cli.workers).await
            }
            (_, None) => Err(anyhow::anyhow!("no configuration")),
        };
        stop_tracing(export).await;
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pipeline-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}
