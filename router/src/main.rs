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
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HUBIFY_EDGE_LOG")
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    // Pingora logs through `log`; bridge it into tracing.
    let _ = tracing_log::LogTracer::init();
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
            match hubify_edge::app::build(config) {
                Ok(server) => {
                    tracing::info!(version = env!("CARGO_PKG_VERSION"), "hubify-edge starting");
                    server.run_forever()
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
