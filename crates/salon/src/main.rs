//! `salon`: the one binary. `salon serve` runs the server (with its console on a
//! terminal); `salon admin` runs administration commands against a running server, or
//! creates accounts offline; `salon migrate` creates or upgrades the database schema;
//! `salon backup FILE` copies the embedded database while the server runs; `salon bench`
//! runs the load generator (the `salon-bench` crate).
//! Configuration: a TOML file (`--config`), overridden by `SALON_*` environment variables,
//! overridden by flags.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use salon::{admin, console};
use salon_client::Client;
use salon_server::{Config, Deps, Endpoint, Listeners};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "salon",
    version,
    about = "Salon: self-hosted company chat server"
)]
struct Cli {
    /// Log lines as plain text, or as JSON objects one per line for log collectors
    /// (the filter is SALON_LOG).
    #[arg(long, global = true, env = "SALON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (creates the database, and the first administrator, on first start).
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        /// Offer the administration console even if standard input is not a terminal
        /// (then it reads lines from standard input, the password too: the line after the
        /// login; the server keeps running when the input ends).
        #[arg(long, conflicts_with = "no_console")]
        console: bool,
        /// Never offer the console.
        #[arg(long)]
        no_console: bool,
    },
    /// Administration: run a command on a running server, or create an account offline.
    Admin(AdminCli),
    /// Load generator: measure a server under a named workload (see docs/BENCHMARKS.md).
    Bench(BenchCli),
    /// Create or upgrade the database schema, then exit.
    Migrate(ServerArgs),
    /// Copy the embedded SQLite database to FILE (a new file, mode 0600) while the server
    /// runs, and the attached files it names to FILE.files/; same --data-dir /
    /// --database-url as `salon serve`. For PostgreSQL and MariaDB use pg_dump /
    /// mariadb-dump (docs/OPERATIONS.md).
    Backup {
        /// The copy to create; an existing file is never overwritten.
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
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
    /// Password of the first administrator `admin`, if the database has none yet
    /// (default: a random one, shown once).
    #[arg(long, env = "SALON_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// PEM certificate chain: both listeners then speak TLS only (with --tls-key).
    #[arg(long, env = "SALON_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SALON_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// For a first trial: serve TLS with a self-signed certificate made in the data
    /// directory (see the README).
    #[arg(long, env = "SALON_TLS_SELF_SIGNED")]
    self_signed: bool,
    /// Plaintext HTTP address that only redirects to HTTPS.
    #[arg(long, env = "SALON_TLS_REDIRECT_LISTEN")]
    redirect_listen: Option<SocketAddr>,
    /// This server's node number (0–13), unique among servers sharing one database.
    #[arg(long, env = "SALON_NODE_ID")]
    node_id: Option<u16>,
    /// A NATS server of the cluster (nats://host:4222); repeat, or comma-separate in the
    /// environment. Setting one makes this node part of a cluster (docs/CLUSTER.md).
    /// Replaces the file's `cluster.nats_urls`.
    #[arg(long = "nats-url", env = "SALON_NATS_URLS", value_delimiter = ',')]
    nats_urls: Vec<String>,
    /// The cluster's name (the prefix of its NATS subjects).
    #[arg(long, env = "SALON_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Who may create an account: open, approval, invite or closed.
    #[arg(long, env = "SALON_REGISTRATION", value_parser = parse_registration)]
    registration: Option<salon_proto::RegistrationMode>,
    /// An origin (e.g. https://chat.example.com) whose pages may open /ws besides the
    /// server's own; repeat, or comma-separate in the environment. Replaces the file's.
    #[arg(
        long = "allowed-origin",
        env = "SALON_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Host names the HTTP listener answers to over plain HTTP, besides IP addresses and
    /// localhost (against DNS rebinding); repeat, or comma-separate in the environment.
    /// Replaces the file's.
    #[arg(
        long = "allowed-host",
        env = "SALON_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Address of the Prometheus metrics listener (/metrics), default 127.0.0.1:9464.
    #[arg(long, env = "SALON_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve no metrics.
    #[arg(long, env = "SALON_NO_METRICS")]
    no_metrics: bool,
}

/// How `salon admin` and `salon bench` connect over TLS.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClientTlsArgs {
    /// Connect with TLS, verifying the server's certificate against the system's trust
    /// store (or --ca-file).
    #[arg(long, global = true, env = "SALON_TLS")]
    tls: bool,
    /// Trust only the certificates in this PEM file (a company CA, or the server's
    /// self-signed certificate); implies --tls.
    #[arg(long, global = true, env = "SALON_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// DANGER: connect with TLS but accept ANY certificate, so anyone on the network path
    /// can read the password and everything else. For a throw-away test only.
    #[arg(long, global = true)]
    insecure_skip_verify: bool,
}

impl ClientTlsArgs {
    /// `None`: plaintext.
    pub(crate) fn options(&self) -> Option<salon_client::TlsOptions> {
        if !(self.tls || self.ca_file.is_some() || self.insecure_skip_verify) {
            return None;
        }
        if self.insecure_skip_verify {
            eprintln!(
                "salon: WARNING: --insecure-skip-verify: the server's certificate is NOT \
                 checked; anyone on the network path can impersonate it"
            );
        }
        Some(salon_client::TlsOptions {
            ca_file: self.ca_file.clone(),
            server_name: None,
            insecure_skip_verify: self.insecure_skip_verify,
        })
    }
}

/// `salon bench`: the load generator's own arguments, and how its clients connect.
#[derive(Args)]
struct BenchCli {
    #[command(flatten)]
    bench: salon_bench::BenchArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Args)]
struct AdminCli {
    /// The server's native protocol address.
    #[arg(long, env = "SALON_SERVER", default_value = "127.0.0.1:7878")]
    server: String,
    /// Administrator to log in as (password: SALON_ADMIN_PASSWORD, or asked).
    #[arg(long, env = "SALON_ADMIN_USER", default_value = "admin")]
    user: String,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(subcommand)]
    command: AdminCliCommand,
}

#[derive(Subcommand)]
// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum AdminCliCommand {
    #[command(flatten)]
    Online(admin::AdminCommand),
    /// Create an account directly in the database (password: SALON_NEW_PASSWORD, or asked).
    CreateUser {
        #[command(flatten)]
        user: admin::NewAccount,
        #[command(flatten)]
        server: ServerArgs,
    },
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
        config.admin_password.clone_from(&self.admin_password);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls.cert = Some(cert.clone());
            config.tls.key = Some(key.clone());
        }
        if self.self_signed {
            config.tls.self_signed = true;
        }
        if let Some(v) = self.redirect_listen {
            config.tls.redirect_listen = Some(v);
        }
        if let Some(node) = self.node_id {
            config.node_id = node;
        }
        if !self.nats_urls.is_empty() {
            config.cluster.nats_urls = self.nats_urls.clone();
        }
        if let Some(name) = &self.cluster_name {
            config.cluster.name = name.clone();
        }
        if let Some(mode) = self.registration {
            config.registration = mode;
        }
        if let Some(v) = self.metrics_listen {
            config.metrics_listen = v;
        }
        if self.no_metrics {
            config.metrics = false;
        }
        if !self.allowed_origins.is_empty() {
            config.allowed_origins.clone_from(&self.allowed_origins);
        }
        if !self.allowed_hosts.is_empty() {
            config.allowed_hosts.clone_from(&self.allowed_hosts);
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SALON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
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
            eprintln!("salon: {}", salon_server::one_line(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve {
            server,
            console,
            no_console,
        } => {
            let config = server.load()?;
            let tcp = listen(config.listen)
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let http = listen(config.http_listen)
                .with_context(|| format!("cannot listen on {}", config.http_listen))?;
            let redirect = match config.tls.redirect_listen {
                Some(addr) => {
                    Some(listen(addr).with_context(|| format!("cannot listen on {addr}"))?)
                }
                None => None,
            };
            let metrics = match config.metrics {
                true => Some(listen(config.metrics_listen).with_context(|| {
                    format!("cannot listen on {} (metrics)", config.metrics_listen)
                })?),
                false => None,
            };
            let (local_tx, local_rx) = tokio::sync::mpsc::channel(4);
            let listeners = Listeners {
                local: Some(local_rx),
                ..Listeners::default()
            }
            .with(Endpoint::Native, tcp)
            .with(Endpoint::Http, http)
            .with_optional(Endpoint::Redirect, redirect)
            .with_optional(Endpoint::Metrics, metrics);
            let deps = Deps::default();
            if !no_console && (console || std::io::stdin().is_terminal()) {
                console::start(
                    local_tx,
                    Duration::from_secs(config.console_idle_lock_secs),
                    deps.clock.clone(),
                    tokio::runtime::Handle::current(),
                );
            }
            #[cfg(unix)]
            ignore_hangup_without_tls(config.tls.enabled());
            salon_server::run(config, listeners, deps, shutdown_signal()).await?;
            Ok(())
        }
        Cmd::Migrate(args) => {
            let config = args.load()?;
            let store = salon_server::open_store(&config).await?;
            println!("database schema is up to date ({})", store.dialect().name());
            store.close().await;
            Ok(())
        }
        Cmd::Backup { file, server } => {
            let config = server.load()?;
            let written = salon_server::backup::backup(&config, &file).await?;
            println!(
                "backup written to {} ({} bytes)",
                file.display(),
                written.bytes
            );
            if let Some(dir) = &written.files_dir {
                println!(
                    "its attached files: {} ({} bytes) copied to {}",
                    written.files,
                    written.file_bytes,
                    dir.display()
                );
            }
            if written.gone > 0 {
                println!(
                    "{} files it names were already removed (their messages were deleted after the copy was taken)",
                    written.gone
                );
            }
            Ok(())
        }
        Cmd::Bench(cli) => {
            let line = std::env::args().collect::<Vec<_>>().join(" ");
            salon_bench::run(cli.bench, cli.tls.options(), line).await
        }
        Cmd::Admin(cli) => match cli.command {
            AdminCliCommand::Online(cmd) => {
                remote_admin(&cli.server, &cli.user, cli.tls.options(), cmd).await
            }
            AdminCliCommand::CreateUser { user, server } => create_user(user, server).await,
        },
    }
}

fn secret(env: &str, prompt: &str) -> anyhow::Result<String> {
    match std::env::var(env) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => rpassword::prompt_password(prompt)
            .with_context(|| format!("no {env} and cannot ask for it")),
    }
}

/// `salon admin COMMAND`: log in as an administrator and run one command.
async fn remote_admin(
    server: &str,
    user: &str,
    tls: Option<salon_client::TlsOptions>,
    cmd: admin::AdminCommand,
) -> anyhow::Result<()> {
    let request = cmd.to_command().map_err(anyhow::Error::msg)?;
    let password = secret("SALON_ADMIN_PASSWORD", &format!("password for {user}: "))?;
    let client = match &tls {
        Some(tls) => Client::connect_tls(server, tls).await,
        None => Client::connect_tcp(server).await,
    }
    .with_context(|| format!("cannot reach the server at {server}"))?;
    // A tool, not a presence: other users do not see the administrator come and go.
    let welcome = client
        .login_with(salon_proto::args::Login {
            login: user.into(),
            password,
            presence: Some(false),
        })
        .await?;
    if !welcome.account.is_admin {
        bail!("{user} is not an administrator");
    }
    let reply = client.execute(request).await?;
    println!("{}", admin::render(&cmd, &reply));
    let _ = client.logout().await;
    Ok(())
}

/// `salon admin create-user`: straight into the database.
async fn create_user(user: admin::NewAccount, server: ServerArgs) -> anyhow::Result<()> {
    let config = server.load()?;
    let password = match std::env::var("SALON_NEW_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let first = rpassword::prompt_password(format!("password for {}: ", user.username))?;
            let again = rpassword::prompt_password("again: ")?;
            if first != again {
                bail!("the passwords differ");
            }
            first
        }
    };
    let store = salon_server::open_store(&config).await?;
    let result = salon_server::admin_create_user(
        &store,
        salon_proto::args::Register {
            alias: user.alias.unwrap_or_else(|| user.username.clone()),
            username: user.username,
            first_name: user.first_name,
            last_name: user.last_name,
            password,
            invite: None,
        },
        user.admin,
    )
    .await;
    store.close().await;
    let account = result?;
    println!(
        "created {}{} ({})",
        if account.is_admin {
            "administrator "
        } else {
            ""
        },
        account.username,
        account.alias
    );
    Ok(())
}

/// SIGHUP reloads the TLS certificate (`systemctl reload`); its default action would
/// end the process, so without TLS it is taken and only noted.
#[cfg(unix)]
fn ignore_hangup_without_tls(tls: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    if !tls {
                        tracing::info!("SIGHUP: nothing to reload (TLS is off)");
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP"),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, not when the future is
/// first polled (at the end of the server's start): a signal that comes in between
/// then stops the server gracefully rather than killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds a listener with a deep accept queue: a burst of connections (a flood, or a
/// reconnect storm) waiting to be accepted overflows tokio's default of 1,024, and the
/// kernel then drops connection attempts or, with SYN cookies, leaves clients holding
/// connections the server never sees. The kernel caps it at `net.core.somaxconn`.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections waiting to be accepted, per listener.
const LISTEN_BACKLOG: u32 = 4096;

fn parse_registration(text: &str) -> Result<salon_proto::RegistrationMode, String> {
    text.parse()
        .map_err(|_| format!("{text:?}: use open, approval, invite or closed"))
}
