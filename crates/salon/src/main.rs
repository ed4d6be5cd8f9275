//! `salon`: the one binary. `salon serve` runs the server; `salon migrate` creates or
//! upgrades the database schema. Configuration: a TOML file (`--config`), overridden by
//! `SALON_*` environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use salon_server::{Config, Deps, Listeners};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "salon",
    version,
    about = "Salon: self-hosted company chat server"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (creates the database on first start).
    Serve(ServerArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(ServerArgs),
}

/// Settings shared by the commands that open the database.
#[derive(Args)]
struct ServerArgs {
    /// TOML configuration file (see salon.example.toml).
    #[arg(long, env = "SALON_CONFIG")]
    config: Option<PathBuf>,
    /// Native protocol (TCP) address.
    #[arg(long, env = "SALON_LISTEN")]
    listen: Option<SocketAddr>,
    /// HTTP address (WebSocket endpoint /ws).
    #[arg(long, env = "SALON_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Directory for the embedded SQLite database.
    #[arg(long, env = "SALON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite://…, postgres://… or mysql://… instead of the embedded database.
    #[arg(long, env = "SALON_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl ServerArgs {
    /// File (or defaults), then environment and flags on top.
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.http_listen {
            config.http_listen = v;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.database_url {
            config.database_url = Some(v.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SALON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("salon: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("salon: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve(args) => {
            let config = args.load()?;
            let tcp = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let http = TcpListener::bind(config.http_listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.http_listen))?;
            let listeners = Listeners {
                tcp: Some(tcp),
                http: Some(http),
            };
            salon_server::run(config, listeners, Deps::default(), shutdown_signal()).await?;
            Ok(())
        }
        Cmd::Migrate(args) => {
            let config = args.load()?;
            let store = salon_server::open_store(&config).await?;
            println!("database schema is up to date ({})", store.dialect().name());
            store.close().await;
            Ok(())
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
