//! `hubify-edge`: run the router, check a configuration, or manage routes in Redis.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hubify_edge_config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hubify-edge",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("HUBIFY_EDGE_GIT_COMMIT"), ")"),
    about = "The edge router in front of every Hubify workspace"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded local-development defaults.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per process: the size of the largest variant (`routes set` and its flags) costs
// nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the router (the default).
    Run {
        /// Take the listening sockets over from the instance running on this configuration
        /// (no moment without a listener); it then drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration and exit: 0 when valid, 1 with the error otherwise.
    Check,
    /// Ask the running router whether it is ready: GET /readyz on the configuration's [ops]
    /// address; exit 0 on 200, 1 otherwise (for container HEALTHCHECKs).
    Health,
    /// ACME certificate (tls.source = "acme"): status, or a forced renewal.
    Cert {
        #[command(subcommand)]
        action: CertCommand,
    },
    /// Read and write workspace routes in Redis (the config's [redis] section).
    Routes {
        #[command(subcommand)]
        action: RoutesCommand,
    },
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// Create or replace a route (validated first) and announce it to every router.
    Set {
        /// The workspace label (`alice` in alice.<domain>).
        label: String,
        /// Fly app of the workspace machine.
        #[arg(long)]
        app: String,
        /// Fly machine id.
        #[arg(long)]
        machine: String,
        /// Fly region (informational).
        #[arg(long)]
        region: Option<String>,
        /// Explicit IP address, used instead of a 6PN lookup.
        #[arg(long)]
        address: Option<String>,
        /// Requests per second this workspace may make on each router (a token bucket).
        #[arg(long)]
        requests_per_second: Option<String>,
        /// Requests the bucket holds (default: the rate).
        #[arg(long)]
        burst: Option<String>,
        /// Requests in flight at once on each router.
        #[arg(long)]
        concurrent_requests: Option<String>,
        /// Open WebSockets on each router.
        #[arg(long)]
        max_websockets: Option<String>,
    },
    /// Print a route's fields (exit 1 when there is none or it is malformed).
    Get { label: String },
    /// Delete a route and announce it to every router.
    Delete { label: String },
    /// Sign out everyone from a workspace: bump its `auth_epoch`, so every router refuses the
    /// sessions issued before (tokens still valid are not affected; they expire within minutes).
    Revoke { label: String },
    /// List every label with a route (SCAN, never KEYS).
    List,
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
    hubify_edge::logging::init(config);
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
    match cli.command.unwrap_or(Command::Run { upgrade: false }) {
        Command::Check => {
            let source = cli
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<embedded default config>".into());
            // What `run` would refuse besides the file itself: certificates, state dir, JWKS.
            if let Err(e) = hubify_edge::app::preflight(&config) {
                eprintln!("hubify-edge: invalid configuration: {source}: {e}");
                return ExitCode::from(1);
            }
            println!("{source}: ok");
            ExitCode::SUCCESS
        }
        Command::Health => health(&config),
        Command::Cert { action } => {
            rustls::crypto::ring::default_provider()
                .install_default()
                .ok();
            cert_command(config, action)
        }
        Command::Routes { action } => {
            let source = cli
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<embedded default config>".into());
            routes_command(&config, &source, action)
        }
        Command::Run { upgrade } => {
            init_logging(&config);
            rustls::crypto::ring::default_provider()
                .install_default()
                .ok();
            let signals = hubify_edge::shutdown::Signals {
                grace_period: config.server.grace_period,
                shutdown_timeout: config.server.shutdown_timeout,
                upgrade_socket: config.server.upgrade_socket.clone(),
            };
            let socket = config.server.upgrade_socket.clone();
            if let Err(e) = hubify_edge::app::preflight(&config) {
                tracing::error!(error = %e, "cannot start");
                eprintln!("hubify-edge: cannot start: {e}");
                return ExitCode::from(1);
            }
            // Everything that can fail is built before the running instance is asked for its
            // sockets: a failed upgrade leaves it serving.
            match hubify_edge::app::build(config, cli.config.clone(), upgrade) {
                Ok(mut server) => {
                    if upgrade {
                        match hubify_edge::upgrade::ask_running(&socket) {
                            Ok(pid) => {
                                tracing::info!(pid, socket = %socket.display(), "taking the listening sockets over")
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot upgrade");
                                eprintln!("hubify-edge: cannot upgrade: {e}");
                                return ExitCode::from(1);
                            }
                        }
                    }
                    server.bootstrap();
                    hubify_edge::upgrade::write_pid(&socket);
                    tracing::info!(
                        version = env!("CARGO_PKG_VERSION"),
                        commit = hubify_edge::metrics::GIT_COMMIT,
                        "hubify-edge starting"
                    );
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

/// `hubify-edge routes …`: one command against Redis, on a small runtime of its own.
/// `health`: one GET /readyz to the ops listener (its unspecified address read as loopback),
/// bounded to 2 s.
fn health(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let Some(mut addr) = config.ops else {
        eprintln!("hubify-edge health: the configuration has no [ops] address to ask");
        return ExitCode::from(1);
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let bound = Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, bound)?;
        s.set_read_timeout(Some(bound))?;
        s.set_write_timeout(Some(bound))?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut out = Vec::new();
        s.take(4096).read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200 ") => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Ok(text) => {
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
            let status = text.lines().next().unwrap_or("no answer");
            eprintln!("hubify-edge health: {addr}: {status}: {body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("hubify-edge health: {addr}: {e}");
            ExitCode::from(1)
        }
    }
}

fn routes_command(config: &Config, source: &str, action: RoutesCommand) -> ExitCode {
    use hubify_edge::routes::admin::{validate, Admin};
    use hubify_edge_config::RouteStore;

    let Some(redis) = &config.redis else {
        eprintln!(
            "hubify-edge routes: {source} has no [redis] section: the routes commands need \
             `[redis] url` (and the router reads these routes only with routes.store = \"redis\")"
        );
        return ExitCode::from(1);
    };
    if matches!(config.routes.store, RouteStore::Static(_)) {
        eprintln!(
            "hubify-edge routes: note: {source} has routes.store = \"static\"; a router on this \
             config does not read routes from Redis"
        );
    }
    let route = match &action {
        RoutesCommand::Set {
            app,
            machine,
            region,
            address,
            requests_per_second,
            burst,
            concurrent_requests,
            max_websockets,
            ..
        } => match validate(app, machine, region.as_deref(), address.as_deref()).and_then(|r| {
            let limits = hubify_edge::routes::admin::limits(
                requests_per_second.as_deref(),
                burst.as_deref(),
                concurrent_requests.as_deref(),
                max_websockets.as_deref(),
            )?;
            Ok(hubify_edge_config::Route { limits, ..r })
        }) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("hubify-edge routes set: {e}");
                return ExitCode::from(1);
            }
        },
        _ => None,
    };
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubify-edge routes: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let mut admin = match Admin::connect(redis).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("hubify-edge routes: {e}");
                return ExitCode::from(1);
            }
        };
        let published = |n: i64| format!("event published to {n} subscriber(s)");
        let result = match action {
            RoutesCommand::Set { label, .. } => {
                let Some(route) = route else {
                    return ExitCode::from(1);
                };
                admin.set(&label, &route).await.map(|n| {
                    println!("set {}; {}", admin.key(&label), published(n));
                    ExitCode::SUCCESS
                })
            }
            RoutesCommand::Get { label } => admin.get(&label).await.map(|record| match record {
                None => {
                    eprintln!(
                        "hubify-edge routes get: no route for {label:?} (key {})",
                        admin.key(&label)
                    );
                    ExitCode::from(1)
                }
                Some(record) => {
                    for (field, value) in &record.fields {
                        println!("{field}={value}");
                    }
                    match record.route {
                        Ok(_) => ExitCode::SUCCESS,
                        Err(why) => {
                            eprintln!("hubify-edge routes get: malformed: {why}");
                            ExitCode::from(1)
                        }
                    }
                }
            }),
            RoutesCommand::Revoke { label } => admin.revoke(&label).await.map(|r| match r {
                Some((epoch, n)) => {
                    println!(
                        "revoked the sessions of {label:?}: auth_epoch is now {epoch}; {}",
                        published(n)
                    );
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("hubify-edge routes revoke: no route for {label:?}");
                    ExitCode::from(1)
                }
            }),
            RoutesCommand::Delete { label } => admin.delete(&label).await.map(|(deleted, n)| {
                if deleted {
                    println!("deleted {}; {}", admin.key(&label), published(n));
                } else {
                    println!("no route for {label:?} (nothing deleted); {}", published(n));
                }
                ExitCode::SUCCESS
            }),
            RoutesCommand::List => admin.list().await.map(|(labels, odd)| {
                for label in labels {
                    println!("{label}");
                }
                for key in odd {
                    eprintln!(
                        "hubify-edge routes list: skipping key {key:?}: the rest is not a label"
                    );
                }
                ExitCode::SUCCESS
            }),
        };
        result.unwrap_or_else(|e| {
            eprintln!("hubify-edge routes: {e}");
            ExitCode::from(1)
        })
    })
}
