//! `hubify-edge`: run the router, or check a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hubify_edge_config::{Config, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hubify-edge",
    version,
    about = "The edge router in front of every Hubify workspace"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded local-development defaults.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router (the default).
    Run,
    /// Validate the configuration and exit: 0 when valid, 1 with the error otherwise.
    Check,
}

fn load(path: Option<&PathBuf>) -> Result<Config, hubify_edge_config::ConfigError> {
    match path {
        Some(p) => Config::from_file(p),
        None => Config::embedded_default(),
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_env("HUBIFY_EDGE_LOG")
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    // One JSON object per line in json mode: the access line's fields at the top level.
    let fmt = match config.log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // `init` also installs the `log` → tracing bridge (Pingora logs through `log`).
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(hubify_edge::metrics::handshake_failure_layer())
        .try_init();
    if let Err(e) = installed {
        eprintln!("hubify-edge: logging not initialised: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(cli.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hubify-edge: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            let source = cli
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<embedded default config>".into());
            println!("{source}: ok");
            ExitCode::SUCCESS
        }
        Command::Run => {
            init_logging(&config);
            rustls::crypto::ring::default_provider()
                .install_default()
                .ok();
            let signals = hubify_edge::shutdown::Signals {
                grace_period: config.server.grace_period,
                shutdown_timeout: config.server.shutdown_timeout,
            };
            match hubify_edge::app::build(config) {
                Ok(server) => {
                    tracing::info!(version = env!("CARGO_PKG_VERSION"), "hubify-edge starting");
                    server.run(pingora_core::server::RunArgs {
                        shutdown_signal: Box::new(signals),
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("hubify-edge: cannot start: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
