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
    /// ACME certificate (tls.source = "acme"): status, or a forced renewal.
    Cert {
        #[command(subcommand)]
        action: CertCommand,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Names, validity, where it is stored and the next renewal (from Redis, else the state dir).
    Status,
    /// Issue a new certificate now, under the issuance lock; every replica loads it.
    Renew,
}

fn cert_command(config: Config, action: CertCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubify-edge: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let fmt_time = |t: std::time::SystemTime| {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let left = t
            .duration_since(std::time::SystemTime::now())
            .map(|d| format!("in {}s", d.as_secs()))
            .unwrap_or_else(|_| "passed".into());
        format!("{secs} (unix; {left})")
    };
    match action {
        CertCommand::Status => match rt.block_on(hubify_edge_acme::status(&config)) {
            Ok(st) => {
                if let Some(note) = &st.note {
                    println!("note: {note}");
                }
                match &st.cert {
                    Some(c) => {
                        println!("names: {}", c.info.names.join(", "));
                        println!("serial: {}", c.info.serial);
                        println!("not-before: {}", fmt_time(c.info.not_before));
                        println!("not-after: {}", fmt_time(c.info.not_after));
                        println!("source: {}", st.origin);
                        if let Some(t) = st.next_renewal {
                            println!("next-renewal: {}", fmt_time(t));
                        }
                    }
                    None => println!("no certificate issued yet (source: {})", st.origin),
                }
                if let Some(held) = st.lock_held {
                    println!("issuance-in-progress: {held}");
                }
                if let Some(n) = st.orders {
                    println!("orders: {n}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hubify-edge: cert status: {e}");
                ExitCode::from(1)
            }
        },
        CertCommand::Renew => {
            init_logging(&config);
            match rt.block_on(hubify_edge_acme::renew_now(&config)) {
                Ok(c) => {
                    println!(
                        "renewed: serial {} names {}",
                        c.info.serial,
                        c.info.names.join(", ")
                    );
                    println!("not-after: {}", fmt_time(c.info.not_after));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hubify-edge: cert renew: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
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
        Command::Cert { action } => {
            rustls::crypto::ring::default_provider()
                .install_default()
                .ok();
            cert_command(config, action)
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
