//! `salon-bench`: Salon's load generator over the native protocol, with named workloads
//! (R25), run as `salon bench`. It drives a server it starts itself (a temporary data
//! directory, production limits except the per-session rates, pinned to CPU 0 while the
//! load runs on CPU 1), one already running (`--server`, with `--database-url` for the
//! set-up), or for the fan-out workloads a cluster of nodes it starts on one shared
//! database and NATS (`--cluster N`, issue 16: latency by hop, the bus counts from each
//! node's metrics). It prints one result block to paste into an issue or
//! `docs/BENCHMARKS.md`.
//!
//! It sits beside the `salon` binary, which forwards `salon bench` to [`run`], and runs
//! inside it: the server it starts is `salon serve` and its idle workers are
//! `salon bench idle-worker`, both children of the same executable.
//!
//! Set-up writes accounts and session tokens straight into the database through
//! `salon_server::provision`, the only door into the server's storage it uses, so
//! thousands of clients connect with `resume` instead of thousands of Argon2 logins (the
//! `login` workload measures those on their own).

mod amplify;
mod rxtime;
mod search;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use salon_client::Client;
use salon_server::provision::{self, OfflineTool, Provisioned, Provisioner};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

/// The password every bench account has (set-up hashes it once).
const BENCH_PASSWORD: &str = "bench password not for production";
/// Connections one load process opens at most (the machine allows 20,000 open files per
/// process; leave room for everything else).
const CLIENTS_PER_PROCESS: usize = 9_000;

/// `salon bench`'s arguments: the workload and the server to run it against.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: Workload,
    /// Bench a running server at this native-protocol address instead of starting one.
    #[arg(long, global = true, requires = "database_url")]
    server: Option<String>,
    /// The database of the server (required with --server; optional for the server the
    /// bench starts, which otherwise uses SQLite in a temporary directory).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// PID of the server given with --server, to report its CPU and memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Do not pin the started server to CPU 0 and the load generator to CPU 1.
    #[arg(long, global = true)]
    no_pin: bool,
    /// fanout and saturation over a cluster of this many nodes (`salon serve` processes,
    /// node ids 1…N, all pinned like the one server) sharing one database and one NATS,
    /// in a cluster name of the run's own; clients are spread evenly over the nodes.
    /// Without --database-url, a fresh PostgreSQL database is created on
    /// postgres://postgres@127.0.0.1:5432 and dropped at the end.
    #[arg(long, global = true, conflicts_with = "server", value_parser = clap::value_parser!(u16).range(1..=13))]
    cluster: Option<u16>,
    /// The NATS server of the cluster (--cluster).
    #[arg(long, global = true, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

/// Where `--cluster` creates its database when no --database-url is given.
const CLUSTER_DATABASE_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// How clients of the bench connect to `--server` (TLS or not); set once at start.
static CLIENT_TLS: std::sync::OnceLock<Option<salon_client::TlsOptions>> =
    std::sync::OnceLock::new();

/// Connects one client over TCP, with TLS when asked.
async fn connect(addr: &str) -> salon_client::Result<Client> {
    match CLIENT_TLS.get().and_then(|t| t.as_ref()) {
        Some(tls) => Client::connect_tls(addr, tls).await,
        None => Client::connect_tcp(addr).await,
    }
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// History amplification: one user's sessions pipeline `history` of the heaviest
    /// messages without reading; the server's RSS against its stated bound.
    Amplify {
        /// Sessions to try to open (the server caps them per user).
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Heavy messages stored first.
        #[arg(long, default_value_t = 100)]
        messages: usize,
    },
    /// Clients over rooms, some of them sending at a fixed rate: loss and latency.
    Fanout(FanoutArgs),
    /// Full-text search latency over a large stored history (stored and indexed first).
    Search {
        /// Messages stored before searching.
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        /// Searches of each kind.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
    /// Fanout with the rate doubled until deliveries per second stop growing.
    Saturation {
        #[command(flatten)]
        fanout: FanoutArgs,
        /// Stop after this many steps.
        #[arg(long, default_value_t = 8)]
        steps: u32,
    },
    /// As many idle, logged-in clients as asked: the server's memory per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
    },
    /// Messages per second durably stored (counted when acknowledged).
    Persist {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Requests in flight per client.
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        bytes: usize,
    },
    /// Full logins per second (Argon2) and session resumes per second (reconnect storm).
    Login {
        #[arg(long, default_value_t = 200)]
        logins: usize,
        #[arg(long, default_value_t = 2000)]
        resumes: usize,
        /// Connections attempting at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// A connection flood from 127.0.0.1 held open (production connection limits), then
    /// a user from 127.0.0.2 logs in: how many were accepted and refused, the server's
    /// memory.
    Connflood {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// WebSocket clients that never log in and send Pings as fast as they can without
    /// reading: the server's memory over time against its stated bound.
    Pingflood {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 40)]
        seconds: u64,
    },
    /// (internal) hold idle connections for the `idle` workload in a separate process.
    #[command(hide = true)]
    IdleWorker {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        tokens: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
struct FanoutArgs {
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    senders_per_room: usize,
    /// Messages per second per sender.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    bytes: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Everyday messaging mixed in: of every 10 requests a sender makes, 6 messages, an
    /// edit of its latest message, a 👍 added to it and taken back, and a typing
    /// indicator (forwarded at most every 3 s, so not counted as deliveries).
    #[arg(long)]
    mix: bool,
}

/// Runs the workload `args` names and prints its result block. `tls`: how clients connect
/// to `--server` (`None`: plaintext); `command_line` is echoed in the result.
pub async fn run(
    args: BenchArgs,
    tls: Option<salon_client::TlsOptions>,
    command_line: String,
) -> anyhow::Result<()> {
    let _ = CLIENT_TLS.set(tls);
    if let Workload::IdleWorker { addr, tokens } = &args.workload {
        return idle_worker(addr, tokens).await;
    }
    let users = match &args.workload {
        Workload::Fanout(f) | Workload::Saturation { fanout: f, .. } => f.clients,
        Workload::Idle { clients } => *clients,
        Workload::Persist { clients, .. } => *clients,
        Workload::Login {
            logins, resumes, ..
        } => (*logins).max(*resumes),
        Workload::Connflood { .. } | Workload::Amplify { .. } | Workload::Search { .. } => 1,
        Workload::IdleWorker { .. } | Workload::Pingflood { .. } => 0,
    };
    // The floods run against production connection limits; the other workloads drive
    // many connections from one address and must not be refused for it.
    let config = match &args.workload {
        Workload::Connflood { .. } | Workload::Pingflood { .. } => FLOOD_CONFIG,
        _ => BENCH_CONFIG,
    };
    if args.cluster.is_some()
        && !matches!(
            args.workload,
            Workload::Fanout(_) | Workload::Saturation { .. }
        )
    {
        bail!("--cluster runs the fanout and saturation workloads only");
    }
    let target = Target::prepare(&args, users, config).await?;
    let mut report = Report::new(&command_line, &target);
    let result = match &args.workload {
        Workload::Fanout(f) => fanout(&target, f, &mut report).await,
        Workload::Saturation { fanout: f, steps } => {
            saturation(&target, f, *steps, &mut report).await
        }
        Workload::Idle { clients } => idle(&target, *clients, &mut report).await,
        Workload::Persist {
            clients,
            window,
            seconds,
            bytes,
        } => persist(&target, *clients, *window, *seconds, *bytes, &mut report).await,
        Workload::Login {
            logins,
            resumes,
            concurrency,
        } => login(&target, *logins, *resumes, *concurrency, &mut report).await,
        Workload::Connflood { connections } => connflood(&target, *connections, &mut report).await,
        Workload::Pingflood { clients, seconds } => {
            pingflood(&target, *clients, *seconds, &mut report).await
        }
        Workload::IdleWorker { .. } => Ok(()),
        Workload::Search { messages, rounds } => {
            search::search(&target, *messages, *rounds, &mut report).await
        }
        Workload::Amplify {
            sessions,
            seconds,
            messages,
        } => {
            let a = amplify::AmplifyArgs {
                sessions: *sessions,
                seconds: *seconds,
                messages: *messages,
            };
            amplify::amplify(&target, &a, &mut report).await
        }
    };
    report.server_usage(&target);
    println!("{}", report.text);
    target.stop().await;
    result
}

// ----- the server under test --------------------------------------------------------------

struct Target {
    addr: String,
    /// The HTTP listener of a server the bench started.
    http: Option<String>,
    database: String,
    /// The bench users, each with a session token, in user order.
    users: Vec<Provisioned>,
    server: Option<tokio::process::Child>,
    pid: Option<u32>,
    cpu_at_start: Option<f64>,
    _data: Option<tempfile::TempDir>,
    run_id: String,
    pinned: bool,
    /// The nodes of a cluster the bench started (`--cluster`), node id i + 1 at index i;
    /// empty for one server. `addr` and `pid` above are node 1's.
    nodes: Vec<Node>,
    /// The cluster's name (its NATS subjects' prefix), with `--cluster`.
    cluster_name: Option<String>,
    /// Users per node in turn: user i is on node (i / spread) mod N. The fanout's rooms
    /// count, so that each room's members (users k, k + rooms, …) are spread evenly too.
    spread: usize,
    /// The database the bench created for a cluster, dropped by `stop`: its name.
    created_database: Option<String>,
}

/// One `salon serve` of a cluster the bench started.
struct Node {
    id: u16,
    addr: String,
    /// Its Prometheus listener (`/metrics`).
    metrics: String,
    pid: Option<u32>,
    cpu_at_start: Option<f64>,
    child: tokio::process::Child,
}

/// A `salon serve` the bench started.
struct Spawned {
    addr: String,
    http: String,
    metrics: String,
    child: tokio::process::Child,
    pid: Option<u32>,
}

/// Starts `salon serve` (this executable) on free loopback ports with the configuration
/// file `config` and the database `database`, pinned to CPU 0 if `pin`; `extra`: more
/// `serve` flags (a cluster node's).
fn spawn_server(
    config: &std::path::Path,
    database: &str,
    pin: bool,
    extra: &[String],
) -> anyhow::Result<Spawned> {
    let (tcp, http, metrics) = (free_port()?, free_port()?, free_port()?);
    let exe = std::env::current_exe()?;
    let mut cmd = if pin {
        let mut c = tokio::process::Command::new("taskset");
        c.args(["-c", "0"]).arg(exe);
        c
    } else {
        tokio::process::Command::new(exe)
    };
    cmd.args(["serve", "--no-console", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{tcp}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        // Metrics on as in production, on a port of their own.
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--database-url", database])
        .args(extra)
        .env("SALON_LOG", "warn")
        .env("SALON_ADMIN_PASSWORD", BENCH_PASSWORD)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().context("cannot start the server")?;
    Ok(Spawned {
        addr: format!("127.0.0.1:{tcp}"),
        http: format!("127.0.0.1:{http}"),
        metrics: format!("127.0.0.1:{metrics}"),
        pid: child.id(),
        child,
    })
}

/// Waits until a server answers at `addr` (10 s at most).
async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
        if connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the server at {addr} does not answer")
}

/// Pins this process (every thread) to CPU 1, the load generator's core.
fn pin_load_generator() {
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-pc", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
}

/// Runs one statement on the PostgreSQL server `server` (a URL without a database).
async fn on_database_server(server: &str, statement: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let url = format!("{server}/postgres");
    let mut conn = sqlx::postgres::PgConnection::connect(&url)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url} (give --database-url)"))?;
    conn.execute(statement).await?;
    conn.close().await?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn taskset_available() -> bool {
    std::process::Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Target {
    async fn prepare(args: &BenchArgs, users: usize, config_text: &str) -> anyhow::Result<Target> {
        let data = tempfile::TempDir::new()?;
        let run_id = format!("{:x}", std::process::id() ^ (now_ns() as u32));
        let mut created_database = None;
        let database = match (&args.database_url, args.cluster) {
            (Some(url), _) => url.clone(),
            (None, Some(_)) => {
                let name = format!("salon_bench_{run_id}");
                on_database_server(
                    CLUSTER_DATABASE_SERVER,
                    &format!("CREATE DATABASE {name} ENCODING 'UTF8'"),
                )
                .await?;
                created_database = Some(name.clone());
                format!("{CLUSTER_DATABASE_SERVER}/{name}")
            }
            (None, None) => format!(
                "sqlite://{}?mode=rwc",
                data.path().join("salon.db").display()
            ),
        };
        let started = Self::start(args, users, config_text, data, database, run_id).await;
        match started {
            Ok(mut target) => {
                target.created_database = created_database;
                Ok(target)
            }
            Err(e) => {
                if let Some(name) = created_database {
                    drop_database(&name).await;
                }
                Err(e)
            }
        }
    }

    async fn start(
        args: &BenchArgs,
        users: usize,
        config_text: &str,
        data: tempfile::TempDir,
        database: String,
        run_id: String,
    ) -> anyhow::Result<Target> {
        if args.cluster.is_some() && database.starts_with("sqlite") {
            bail!("--cluster needs a database every node shares: PostgreSQL or MariaDB");
        }
        let users = create_users(&database, users, &run_id).await?;

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pin = !args.no_pin && cores >= 2 && taskset_available();
        let config = data.path().join("bench.toml");
        std::fs::write(&config, config_text)?;
        let mut nodes = Vec::new();
        let cluster_name = args.cluster.map(|_| format!("salon_bench_{run_id}"));
        let (addr, http, server, pid) = match (&args.server, args.cluster) {
            (Some(addr), _) => (addr.clone(), None, None, args.server_pid),
            (None, Some(count)) => {
                // One node at a time, each answering before the next starts (the first
                // start creates the administrator).
                for id in 1..=count {
                    let node_data = data.path().join(format!("node{id}"));
                    let extra = [
                        "--node-id".to_owned(),
                        id.to_string(),
                        "--nats-url".to_owned(),
                        args.nats_url.clone(),
                        "--cluster-name".to_owned(),
                        cluster_name.clone().unwrap_or_default(),
                        "--data-dir".to_owned(),
                        node_data.display().to_string(),
                    ];
                    let spawned = spawn_server(&config, &database, pin, &extra)?;
                    let mut node = Node {
                        id,
                        addr: spawned.addr,
                        metrics: spawned.metrics,
                        pid: spawned.pid,
                        cpu_at_start: None,
                        child: spawned.child,
                    };
                    if let Err(e) = wait_ready(&node.addr).await {
                        let status = node.child.try_wait().ok().flatten();
                        bail!("cluster node {id}: {e} (exited: {status:?})");
                    }
                    nodes.push(node);
                }
                if pin {
                    pin_load_generator();
                }
                let first = &nodes[0];
                (first.addr.clone(), None, None, first.pid)
            }
            (None, None) => {
                let spawned = spawn_server(&config, &database, pin, &[])?;
                if pin {
                    pin_load_generator();
                }
                (
                    spawned.addr,
                    Some(spawned.http),
                    Some(spawned.child),
                    spawned.pid,
                )
            }
        };
        wait_ready(&addr).await?;
        for node in &mut nodes {
            node.cpu_at_start = node.pid.and_then(cpu_seconds);
        }
        let cpu_at_start = pid.and_then(cpu_seconds);
        Ok(Target {
            addr,
            http,
            database,
            users,
            server,
            pid,
            cpu_at_start,
            _data: Some(data),
            run_id,
            pinned: pin && args.server.is_none(),
            nodes,
            cluster_name,
            created_database: None,
            spread: match &args.workload {
                Workload::Fanout(f) | Workload::Saturation { fanout: f, .. } => f.rooms.max(1),
                _ => 1,
            },
        })
    }

    /// The address user `user` connects to: in a cluster, users are spread evenly over
    /// the nodes (see `spread`).
    fn addr_of(&self, user: usize) -> &str {
        match self.node_of(user) {
            Some(node) => &self.nodes[node].addr,
            None => &self.addr,
        }
    }

    /// The index in `nodes` of the node user `user` connects to (`None`: one server).
    fn node_of(&self, user: usize) -> Option<usize> {
        (!self.nodes.is_empty()).then(|| user / self.spread % self.nodes.len())
    }

    /// Connects users `range` concurrently (bounded), in order.
    async fn connect_many(&self, range: std::ops::Range<usize>) -> anyhow::Result<Vec<Client>> {
        let gate = Arc::new(Semaphore::new(64));
        let mut tasks = Vec::new();
        for user in range {
            let (addr, token) = (
                self.addr_of(user).to_owned(),
                self.users[user].token.clone(),
            );
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                let client = connect(addr.as_str()).await?;
                client.resume(&token).await?;
                anyhow::Ok(client)
            }));
        }
        let mut clients = Vec::with_capacity(tasks.len());
        for t in tasks {
            clients.push(t.await??);
        }
        Ok(clients)
    }

    async fn stop(mut self) {
        let children = self
            .server
            .take()
            .into_iter()
            .chain(self.nodes.drain(..).map(|n| n.child));
        let mut stopping = Vec::new();
        for child in children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            stopping.push(child);
        }
        for mut child in stopping {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
        if let Some(name) = self.created_database.take() {
            drop_database(&name).await;
        }
    }
}

/// Drops a database `--cluster` created (its nodes have stopped; FORCE ends whatever
/// connection is left).
async fn drop_database(name: &str) {
    let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    if let Err(e) = on_database_server(CLUSTER_DATABASE_SERVER, &statement).await {
        eprintln!("could not drop the bench database {name}: {e}");
    }
}

/// Production limits, except the per-session and per-address rates, which would refuse
/// a load generator's traffic by design.
const BENCH_CONFIG: &str = "\
[limits]
messages_per_second = 1000000
message_burst = 1000000
requests_per_second = 1000000
request_burst = 1000000
searches_per_second = 1000000
search_burst = 1000000
auth_attempts_per_minute_per_address = 1000000
max_connections = 19500
# The load generator is one address (127.0.0.1).
max_connections_per_address = 19500
# Its raw sessions do not answer keep-alive probes.
idle_timeout_ms = 86400000
";

/// The floods meet the production connection limits and timeouts.
const FLOOD_CONFIG: &str = "\
[limits]
auth_attempts_per_minute_per_address = 1000000
";

/// How long the bench's session tokens stay valid.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Creates `n` bench accounts, each with one session token.
async fn create_users(database: &str, n: usize, run_id: &str) -> anyhow::Result<Vec<Provisioned>> {
    let provisioner = Provisioner::open(&database_config(database), OfflineTool::Bench).await?;
    let accounts = (0..n)
        .map(|i| provision::NewAccount {
            username: format!("b{run_id}u{i}"),
            alias: format!("B{run_id}U{i}"),
            first_name: "Bench".into(),
            last_name: "User".into(),
        })
        .collect();
    let created = provisioner
        .create_accounts(accounts, BENCH_PASSWORD, TOKEN_TTL)
        .await;
    provisioner.close().await;
    Ok(created?)
}

/// A configuration naming only the database, with the defaults for everything else.
fn database_config(database: &str) -> salon_server::Config {
    salon_server::Config {
        database_url: Some(database.to_owned()),
        ..salon_server::Config::default()
    }
}

// ----- measurement helpers ----------------------------------------------------------------

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A body of `bytes` bytes starting with the send time, so any receiver can compute the
/// latency, and in a cluster the sender's node (`n<id>|`), so that it can tell a
/// same-node delivery from a cross-node one.
fn body_at(sent_ns: u64, node: Option<u16>, bytes: usize) -> String {
    let mut text = match node {
        Some(id) => format!("{sent_ns:020}|n{id}|"),
        None => format!("{sent_ns:020}|"),
    };
    while text.len() < bytes {
        text.push('x');
    }
    text
}

fn sent_at(text: &str) -> Option<u64> {
    text.get(..20)?.parse().ok()
}

/// The sender's node id in a body made by [`body_at`] in a cluster.
fn sent_from(text: &str) -> Option<u16> {
    text.get(21..)?
        .strip_prefix('n')?
        .split('|')
        .next()?
        .parse()
        .ok()
}

/// Delivery latencies of a cluster run by hop (reported by `cluster_lines`).
struct Hops {
    /// `[same node, cross node]` as the load generator read them, then the same at the
    /// kernel's receive time (`rxtime`).
    latencies: [Mutex<Histogram<u64>>; 4],
    /// When each message's first copy reached each node's clients (kernel receive time),
    /// by send time: the sender's node id, and a time per node id (0: none yet). Cleared
    /// at each step; one entry per message sent in it.
    first: Mutex<HashMap<u64, (u16, Vec<u64>)>>,
    /// The highest node id.
    nodes: usize,
}
type ByHop = Arc<Hops>;

impl Hops {
    fn new(nodes: usize) -> Hops {
        Hops {
            latencies: std::array::from_fn(|_| Mutex::new(histogram())),
            first: Mutex::new(HashMap::new()),
            nodes,
        }
    }

    /// A copy of the message sent at `sent` by a client of node `from` reached a client
    /// of node `on` at `at` (kernel receive time).
    fn copy(&self, sent: u64, from: u16, on: u16, at: u64) {
        if let Ok(mut first) = self.first.lock() {
            let (_, times) = first
                .entry(sent)
                .or_insert_with(|| (from, vec![0; self.nodes + 1]));
            if let Some(t) = times.get_mut(usize::from(on)) {
                if *t == 0 || at < *t {
                    *t = at;
                }
            }
        }
    }

    /// The first copies' latencies (µs): `[on the sender's node, on each other node]`.
    fn first_copies(&self) -> [Histogram<u64>; 2] {
        let mut out = [histogram(), histogram()];
        if let Ok(first) = self.first.lock() {
            for (sent, (from, times)) in first.iter() {
                for (node, at) in times.iter().enumerate() {
                    if *at > 0 {
                        let us = (at.saturating_sub(*sent) / 1000).max(1);
                        let _ = out[usize::from(node != usize::from(*from))].record(us);
                    }
                }
            }
        }
        out
    }
}

/// A raw session's node in a cluster, and where it records its deliveries by hop.
#[derive(Clone)]
struct OnNode {
    id: u16,
    by_hop: ByHop,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to 100 s, 2 significant digits (1%): ~50 KiB each, and every
    // raw session has its own.
    Histogram::new_with_bounds(1, 100_000_000, 2).expect("valid histogram bounds")
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "n/a".into();
    }
    format!(
        "p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_owned())
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Counted from /proc (the bench may have pinned itself to one core already).
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    format!("{cpu}, {cores} cores, {mem} RAM")
}

struct Report {
    text: String,
    started: Instant,
    /// The load generator's own CPU seconds at the start.
    own_cpu: Option<f64>,
}

impl Report {
    fn new(command_line: &str, target: &Target) -> Report {
        let mut text = String::new();
        text.push_str(&format!(
            "### salon bench — {}\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        ));
        text.push_str(&format!("command:   {command_line}\n"));
        text.push_str(&format!("machine:   {}\n", machine_line()));
        let own = status_field(std::process::id(), "Cpus_allowed_list:").unwrap_or_default();
        let server = target
            .pid
            .and_then(|p| status_field(p, "Cpus_allowed_list:"))
            .unwrap_or_else(|| "unknown".into());
        text.push_str(&format!(
            "affinity:  server CPUs {server}, load generator CPUs {own}{}\n",
            if target.pinned {
                " (pinned by the bench)"
            } else {
                " (not pinned: they share cores)"
            }
        ));
        let db = target.database.split("://").next().unwrap_or("?");
        text.push_str(&format!(
            "database:  {db}{}\n",
            if target.database.starts_with("sqlite") {
                " (WAL, synchronous=FULL: every acknowledged message is fsynced)"
            } else {
                ""
            }
        ));
        if let (Some(last), Some(name)) = (target.nodes.last(), &target.cluster_name) {
            let per_node = (0..target.nodes.len())
                .map(|i| {
                    (0..target.users.len())
                        .filter(|u| target.node_of(*u) == Some(i))
                        .count()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(" · ");
            text.push_str(&format!(
                "cluster:   {} nodes (node ids 1–{}, `salon serve` each) on that database and NATS, cluster name {name}; clients per node {per_node}\n",
                target.nodes.len(),
                last.id,
            ));
        }
        Report {
            text,
            started: Instant::now(),
            own_cpu: cpu_seconds(std::process::id()),
        }
    }

    fn line(&mut self, line: impl AsRef<str>) {
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    fn server_usage(&mut self, target: &Target) {
        let elapsed = self.started.elapsed().as_secs_f64();
        // /proc/self/stat counts this process only (the server child is not included).
        if let (Some(a), Some(b)) = (self.own_cpu, cpu_seconds(std::process::id())) {
            self.line(format!(
                "loadgen:   CPU {:.0}% of one core over {elapsed:.1} s",
                (b - a) / elapsed * 100.0
            ));
        }
        let Some(pid) = target.pid else {
            self.line("server:    CPU and memory unknown (give --server-pid)");
            return;
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let cpu = match (target.cpu_at_start, cpu_seconds(pid)) {
            (Some(a), Some(b)) if elapsed > 0.0 => format!(
                "{:.0}% of one core over {elapsed:.1} s",
                (b - a) / elapsed * 100.0
            ),
            _ => "unknown".into(),
        };
        let rss = rss_kib(pid).map_or("unknown".into(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        });
        let peak = status_field(pid, "VmHWM:").unwrap_or_else(|| "?".into());
        if target.nodes.is_empty() {
            self.line(format!("server:    CPU {cpu}; RSS now {rss}, peak {peak}"));
            return;
        }
        let mut total = 0.0;
        let mut lines = Vec::new();
        for node in &target.nodes {
            let (cpu, rss) = match (node.pid, node.cpu_at_start) {
                (Some(pid), Some(a)) => (cpu_seconds(pid).map(|b| b - a), rss_kib(pid)),
                _ => (None, None),
            };
            total += cpu.unwrap_or(0.0);
            lines.push(format!(
                "  node {}:  CPU {}; RSS now {}",
                node.id,
                cpu.map_or("unknown".into(), |c| format!(
                    "{:.0}% of one core",
                    c / elapsed * 100.0
                )),
                rss.map_or("unknown".into(), mib)
            ));
        }
        self.line(format!(
            "server:    {} nodes together CPU {:.0}% of one core over {elapsed:.1} s",
            target.nodes.len(),
            total / elapsed * 100.0
        ));
        for line in lines {
            self.line(line);
        }
    }
}

// ----- raw sessions: the load generator's cheap path -----------------------------------------

/// What a raw session's reader saw.
#[derive(Default)]
struct RawTally {
    acked: AtomicU64,
    errors: AtomicU64,
    received: AtomicU64,
    closed: AtomicU64,
}

/// A logged-in connection driven with hand-written request lines, its replies read with
/// a substring search instead of a full JSON decode, so that one load-generator core can
/// keep up with the server. Request ids are the send time in nanoseconds, so an ack's
/// `re` gives its latency without any bookkeeping.
struct RawSession {
    write: tokio::net::tcp::OwnedWriteHalf,
    /// Released by the reader for each reply (flow control for `persist`).
    replies: Arc<Semaphore>,
    /// The id in the last reply that had one: this session's latest stored message
    /// (what `fanout --mix` edits and reacts to).
    last_id: Arc<std::sync::atomic::AtomicI64>,
    /// Its node's id in a cluster, written into every body it sends.
    node: Option<u16>,
}

#[allow(clippy::too_many_arguments)]
async fn raw_session(
    addr: &str,
    token: &str,
    read_buffer: usize,
    timed: bool,
    tally: Arc<RawTally>,
    deliveries: Arc<Mutex<Histogram<u64>>>,
    acks: Arc<Mutex<Histogram<u64>>>,
    on_node: Option<OnNode>,
) -> anyhow::Result<RawSession> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let kernel_times = timed && on_node.is_some();
    if kernel_times {
        rxtime::enable(&stream)?;
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(read_buffer, read);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?; // hello
    write
        .write_all(
            format!("{{\"id\":1,\"cmd\":\"resume\",\"args\":{{\"token\":\"{token}\"}}}}\n")
                .as_bytes(),
        )
        .await?;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            bail!("closed during resume");
        }
        if line.starts_with(b"{\"type\":\"ok\",\"re\":1,") {
            break;
        }
        if line.starts_with(b"{\"type\":\"error\",\"re\":1,") {
            bail!("resume refused: {}", String::from_utf8_lossy(&line));
        }
    }
    let replies = Arc::new(Semaphore::new(0));
    let released = replies.clone();
    let last_id = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stored_id = last_id.clone();
    let node = on_node.as_ref().map(|n| n.id);
    tokio::spawn(async move {
        // Idle sessions time nothing and keep no histograms.
        let (mut local_deliveries, mut local_acks) = if timed {
            (Some(histogram()), Some(histogram()))
        } else {
            (None, None)
        };
        let mut local_by_hop: [Option<Histogram<u64>>; 4] = match &on_node {
            Some(_) if timed => std::array::from_fn(|_| Some(histogram())),
            _ => Default::default(),
        };
        let mut lines = if kernel_times {
            rxtime::Lines::Timed(rxtime::Timed::from(reader))
        } else {
            rxtime::Lines::Buffered(reader)
        };
        let mut flushed = Instant::now();
        loop {
            line.clear();
            let received_at = match lines.next(&mut line).await {
                Ok(Some(at)) => at,
                Ok(None) | Err(_) => break,
            };
            let text = String::from_utf8_lossy(&line);
            if let Some(rest) = text.strip_prefix("{\"type\":\"ok\",\"re\":") {
                tally.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    if let Some(h) = local_acks.as_mut() {
                        let _ = h.record((now_ns().saturating_sub(sent) / 1000).max(1));
                    }
                }
                const DATA_ID: &str = "\"data\":{\"id\":";
                if let Some(at) = text.find(DATA_ID) {
                    if let Some(id) = text[at + DATA_ID.len()..]
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|n| n.parse::<i64>().ok())
                    {
                        stored_id.store(id, Ordering::Relaxed);
                    }
                }
                released.add_permits(1);
            } else if text.starts_with("{\"type\":\"error\"") {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                released.add_permits(1);
            } else if text.starts_with("{\"type\":\"closing\"") {
                tally.closed.fetch_add(1, Ordering::Relaxed);
            } else if text.contains("\"event\":\"reaction\"") {
                // No text to time: counted only.
                tally.received.fetch_add(1, Ordering::Relaxed);
            } else if text.contains("\"event\":\"message\"")
                || text.contains("\"event\":\"edited\"")
            {
                if let Some(at) = text.find("\"text\":\"") {
                    if let Some(sent) = sent_at(&text[at + 8..]) {
                        let us = (now_ns().saturating_sub(sent) / 1000).max(1);
                        if let Some(h) = local_deliveries.as_mut() {
                            let _ = h.record(us);
                        }
                        if let (Some(me), Some(from)) = (&on_node, sent_from(&text[at + 8..])) {
                            let hop = usize::from(from != me.id);
                            if let Some(h) = local_by_hop[hop].as_mut() {
                                let _ = h.record(us);
                            }
                            if received_at > 0 {
                                let us = (received_at.saturating_sub(sent) / 1000).max(1);
                                if let Some(h) = local_by_hop[2 + hop].as_mut() {
                                    let _ = h.record(us);
                                }
                                me.by_hop.copy(sent, from, me.id, received_at);
                            }
                        }
                        tally.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if line.capacity() > 64 * 1024 {
                line = Vec::new(); // do not keep what one large frame grew
            }
            if timed && flushed.elapsed() > Duration::from_millis(100) {
                flush_into(&deliveries, &mut local_deliveries);
                flush_into(&acks, &mut local_acks);
                flush_by_hop(&on_node, &mut local_by_hop);
                flushed = Instant::now();
            }
        }
        flush_into(&deliveries, &mut local_deliveries);
        flush_into(&acks, &mut local_acks);
        flush_by_hop(&on_node, &mut local_by_hop);
    });
    Ok(RawSession {
        write,
        replies,
        last_id,
        node,
    })
}

/// Adds a cluster session's own histograms by hop into the shared ones.
fn flush_by_hop(on_node: &Option<OnNode>, local: &mut [Option<Histogram<u64>>; 4]) {
    if let Some(n) = on_node {
        for (shared, local) in n.by_hop.latencies.iter().zip(local.iter_mut()) {
            flush_into(shared, local);
        }
    }
}

/// Adds a session's own histogram into the shared one and empties it.
fn flush_into(shared: &Mutex<Histogram<u64>>, local: &mut Option<Histogram<u64>>) {
    if let Some(local) = local.as_mut() {
        if let Ok(mut h) = shared.lock() {
            let _ = h.add(&*local);
        }
        local.reset();
    }
}

impl RawSession {
    /// Sends one message to `room`; its request id is the send time, and so is its
    /// idempotency key (as every real client sends one).
    async fn send(&mut self, room: &str, bytes: usize) -> std::io::Result<()> {
        let sent = now_ns();
        let text = body_at(sent, self.node, bytes);
        let line = format!(
            "{{\"id\":{sent},\"cmd\":\"send\",\"args\":{{\"room\":{},\"text\":\"{text}\",\"key\":\"{sent:x}\"}}}}\n",
            serde_json::Value::from(room)
        );
        self.write.write_all(line.as_bytes()).await
    }

    /// Replaces the text of message `id` (timed like a message: its event carries the
    /// edit's send time).
    async fn edit(&mut self, id: i64, bytes: usize) -> std::io::Result<()> {
        let sent = now_ns();
        let text = body_at(sent, self.node, bytes);
        let line = format!(
            "{{\"id\":{sent},\"cmd\":\"edit\",\"args\":{{\"id\":{id},\"text\":\"{text}\"}}}}\n"
        );
        self.write.write_all(line.as_bytes()).await
    }

    /// Adds (`react`) or takes back (`unreact`) a 👍 on message `id`.
    async fn react(&mut self, id: i64, add: bool) -> std::io::Result<()> {
        let cmd = if add { "react" } else { "unreact" };
        let line = format!(
            "{{\"id\":{},\"cmd\":\"{cmd}\",\"args\":{{\"id\":{id},\"emoji\":\"👍\"}}}}\n",
            now_ns()
        );
        self.write.write_all(line.as_bytes()).await
    }

    /// Says the user is typing in `room`.
    async fn typing(&mut self, room: &str) -> std::io::Result<()> {
        let line = format!(
            "{{\"id\":{},\"cmd\":\"typing\",\"args\":{{\"room\":{}}}}}\n",
            now_ns(),
            serde_json::Value::from(room)
        );
        self.write.write_all(line.as_bytes()).await
    }
}

/// Opens raw sessions for users `range` (bounded concurrency), in order; in a cluster,
/// each on its user's node, recording its deliveries by hop into `by_hop`.
async fn raw_sessions(
    target: &Target,
    range: std::ops::Range<usize>,
    tally: &Arc<RawTally>,
    deliveries: &Arc<Mutex<Histogram<u64>>>,
    acks: &Arc<Mutex<Histogram<u64>>>,
    by_hop: Option<&ByHop>,
) -> anyhow::Result<Vec<RawSession>> {
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for user in range {
        let (addr, token) = (
            target.addr_of(user).to_owned(),
            target.users[user].token.clone(),
        );
        let on_node = match (target.node_of(user), by_hop) {
            (Some(i), Some(by_hop)) => Some(OnNode {
                id: target.nodes[i].id,
                by_hop: by_hop.clone(),
            }),
            _ => None,
        };
        let (gate, tally, deliveries, acks) = (
            gate.clone(),
            tally.clone(),
            deliveries.clone(),
            acks.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            raw_session(
                &addr,
                &token,
                64 * 1024,
                true,
                tally,
                deliveries,
                acks,
                on_node,
            )
            .await
        }));
    }
    let mut sessions = Vec::with_capacity(tasks.len());
    for t in tasks {
        sessions.push(t.await??);
    }
    Ok(sessions)
}

// ----- workloads ---------------------------------------------------------------------------

struct FanoutSetup {
    /// One raw session per bench user; user i is in room i % rooms. (A sender's is lent
    /// to its task during a step.)
    sessions: Vec<Option<RawSession>>,
    rooms: Vec<String>,
    /// Members per room.
    members: Vec<usize>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    /// In a cluster: the deliveries' latencies by hop.
    by_hop: Option<ByHop>,
    tally: Arc<RawTally>,
}

async fn fanout_setup(target: &Target, f: &FanoutArgs) -> anyhow::Result<FanoutSetup> {
    if f.rooms == 0 || f.clients < f.rooms || f.senders_per_room * f.rooms > f.clients {
        bail!("need at least one room, one client per room and enough clients for the senders");
    }
    // Room k holds users k, k + rooms, k + 2·rooms…: private channels made for the run.
    let creators = target.connect_many(0..f.rooms).await?;
    let mut rooms = Vec::new();
    let mut members = Vec::new();
    for (k, creator) in creators.iter().enumerate() {
        let names: Vec<String> = (k..f.clients)
            .step_by(f.rooms)
            .skip(1)
            .map(|i| target.users[i].username.clone())
            .collect();
        let name = format!("bench {} {k}", target.run_id);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        creator.create_channel(&name, &refs).await?;
        members.push(names.len() + 1);
        rooms.push(name);
    }
    for c in &creators {
        c.close().await;
    }
    drop(creators);
    let latencies = Arc::new(Mutex::new(histogram()));
    let tally = Arc::new(RawTally::default());
    let acks = Arc::new(Mutex::new(histogram()));
    let by_hop: Option<ByHop> = (!target.nodes.is_empty()).then(|| {
        let highest = target.nodes.iter().map(|n| n.id).max().unwrap_or(0);
        Arc::new(Hops::new(usize::from(highest)))
    });
    let sessions = raw_sessions(
        target,
        0..f.clients,
        &tally,
        &latencies,
        &acks,
        by_hop.as_ref(),
    )
    .await?;
    Ok(FanoutSetup {
        sessions: sessions.into_iter().map(Some).collect(),
        rooms,
        members,
        latencies,
        by_hop,
        tally,
    })
}

struct StepResult {
    sent: u64,
    acked: u64,
    errors: u64,
    closed: u64,
    expected: u64,
    received: u64,
    seconds: f64,
    latencies: Histogram<u64>,
    /// In a cluster: latencies `[same node, cross node]` as read, then at the kernel's
    /// receive time, then of each message's first copy on a node (`Hops`), and each
    /// node's bus counters over the step.
    by_hop: Option<[Histogram<u64>; 6]>,
    bus: Vec<BusCounters>,
}

impl StepResult {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
    fn deliveries_per_second(&self) -> f64 {
        self.received as f64 / self.seconds
    }
}

async fn fanout_step(
    target: &Target,
    setup: &mut FanoutSetup,
    f: &FanoutArgs,
    rate: f64,
) -> anyhow::Result<StepResult> {
    tokio::time::sleep(Duration::from_millis(200)).await; // readers flush the last step
    setup
        .latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .reset();
    if let Some(by_hop) = &setup.by_hop {
        for h in &by_hop.latencies {
            h.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.reset();
        }
        by_hop
            .first
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clear();
    }
    let bus_before = bus_counters_of(target).await?;
    let t = &setup.tally;
    let before = (
        t.acked.load(Ordering::SeqCst),
        t.errors.load(Ordering::SeqCst),
        t.received.load(Ordering::SeqCst),
        t.closed.load(Ordering::SeqCst),
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(f.seconds);
    let period = Duration::from_secs_f64(1.0 / rate);
    // Sender s of room k is user k + s·rooms; each sender task owns its session's write
    // half for the step and hands it back.
    let mut senders = Vec::new();
    let mut taken = Vec::new();
    for s in 0..f.senders_per_room {
        for k in 0..f.rooms {
            let user = k + s * f.rooms;
            taken.push(user);
            let session = setup.sessions[user]
                .take()
                .context("a sender's session is in use")?;
            let (room, bytes, mix) = (setup.rooms[k].clone(), f.bytes, f.mix);
            senders.push(tokio::spawn(async move {
                let mut session = session;
                // Spread the senders' phases over the period.
                tokio::time::sleep(period.mul_f64((user % 97) as f64 / 97.0)).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                // Requests made, and those of them that reach every member.
                let (mut requests, mut fanning) = (0u64, 0u64);
                let mut reacted_on = 0i64;
                while Instant::now() < deadline {
                    tick.tick().await;
                    let op = if mix { requests % 10 } else { 0 };
                    let last = session.last_id.load(Ordering::Relaxed);
                    let done = match op {
                        6 if last > 0 => session.edit(last, bytes).await.map(|()| true),
                        7 if last > 0 => {
                            reacted_on = last;
                            session.react(last, true).await.map(|()| true)
                        }
                        8 if reacted_on > 0 => {
                            let id = std::mem::take(&mut reacted_on);
                            session.react(id, false).await.map(|()| true)
                        }
                        9 => session.typing(&room).await.map(|()| false),
                        _ => session.send(&room, bytes).await.map(|()| true),
                    };
                    match done {
                        Ok(fans_out) => {
                            requests += 1;
                            fanning += u64::from(fans_out);
                        }
                        Err(_) => break,
                    }
                }
                (k, requests, fanning, session)
            }));
        }
    }
    let mut sent_per_room = vec![0u64; f.rooms];
    let mut sent = 0;
    for (task, user) in senders.into_iter().zip(taken) {
        let (k, requests, fanning, session) = task.await?;
        sent_per_room[k] += fanning;
        sent += requests;
        setup.sessions[user] = Some(session);
    }
    // Every sent message is answered (ack or error); wait for the answers, then for the
    // deliveries of the acknowledged ones (at most 20 s).
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    while t.acked.load(Ordering::SeqCst) + t.errors.load(Ordering::SeqCst) - before.0 - before.1
        < sent
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acked = t.acked.load(Ordering::SeqCst) - before.0;
    // Errors are per request, never per room here: each refused message lowers the
    // expectation of the room it was sent to; with none refused this is exact.
    let errors = t.errors.load(Ordering::SeqCst) - before.1;
    let expected: u64 = if errors == 0 {
        (0..f.rooms)
            .map(|k| sent_per_room[k] * setup.members[k] as u64)
            .sum()
    } else {
        acked * (f.clients / f.rooms) as u64
    };
    while t.received.load(Ordering::SeqCst) - before.2 < expected && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(250)).await; // readers flush their histograms
    let latencies = setup
        .latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let by_hop = match setup.by_hop.as_deref() {
        Some(shared) => {
            let mut copies: [Histogram<u64>; 6] = std::array::from_fn(|_| histogram());
            for (copy, h) in copies.iter_mut().zip(&shared.latencies) {
                *copy = h.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
            }
            let [same, cross] = shared.first_copies();
            (copies[4], copies[5]) = (same, cross);
            Some(copies)
        }
        None => None,
    };
    // Every delivery has arrived, so every node has counted what it received (a node
    // counts a bus message before handing it to its sessions).
    let bus = bus_counters_of(target)
        .await?
        .iter()
        .zip(&bus_before)
        .map(|(after, before)| after.since(before))
        .collect();
    Ok(StepResult {
        sent,
        acked,
        errors,
        closed: t.closed.load(Ordering::SeqCst) - before.3,
        expected,
        received: t.received.load(Ordering::SeqCst) - before.2,
        seconds,
        latencies,
        by_hop,
        bus,
    })
}

/// One node's cluster bus counters (`salon_cluster_bus_*_total`).
#[derive(Debug, Clone, Copy, Default)]
struct BusCounters {
    published: u64,
    /// Delivered by NATS from the other nodes (applied).
    from_others: u64,
    /// Its own, delivered back by NATS (skipped).
    own: u64,
}

impl BusCounters {
    fn since(&self, before: &BusCounters) -> BusCounters {
        BusCounters {
            published: self.published.saturating_sub(before.published),
            from_others: self.from_others.saturating_sub(before.from_others),
            own: self.own.saturating_sub(before.own),
        }
    }
}

/// Every cluster node's bus counters, in node order (none for one server).
async fn bus_counters_of(target: &Target) -> anyhow::Result<Vec<BusCounters>> {
    let mut all = Vec::new();
    for node in &target.nodes {
        all.push(
            bus_counters(&node.metrics)
                .await
                .with_context(|| format!("reading node {}'s metrics", node.id))?,
        );
    }
    Ok(all)
}

/// Reads a node's bus counters from its Prometheus listener at `addr` (`/metrics`,
/// plain HTTP/1.0: the answer ends when the connection closes).
async fn bus_counters(addr: &str) -> anyhow::Result<BusCounters> {
    use tokio::io::AsyncReadExt;
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .context("no answer in 10 s")??;
    if !text.starts_with("HTTP/1.") || !text.contains(" 200 ") {
        bail!(
            "unexpected answer: {}",
            text.lines().next().unwrap_or_default()
        );
    }
    let mut counters = BusCounters::default();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let value = value as u64;
        // Room messages only (heartbeats, presence facts and the rest go on the bus too).
        if !name.contains("kind=\"room_message\"") {
            continue;
        }
        if name.starts_with("salon_cluster_bus_published_total{") {
            counters.published += value;
        } else if name.starts_with("salon_cluster_bus_received_total{") {
            if name.contains("from=\"other_nodes\"") {
                counters.from_others += value;
            } else if name.contains("from=\"this_node\"") {
                counters.own += value;
            }
        }
    }
    Ok(counters)
}

async fn fanout(target: &Target, f: &FanoutArgs, report: &mut Report) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  fanout — {} clients, {} rooms, {} senders/room at {} requests/s each, {}-byte bodies, {} s{}",
        f.clients,
        f.rooms,
        f.senders_per_room,
        f.rate,
        f.bytes,
        f.seconds,
        if f.mix {
            "; mixed: per 10 requests 6 messages, 1 edit, 1 reaction added and 1 taken back, 1 typing"
        } else {
            ""
        }
    ));
    let mut setup = fanout_setup(target, f).await?;
    let r = fanout_step(target, &mut setup, f, f.rate).await?;
    report.line(format!(
        "{}  sent {}, acknowledged {}, refused {}; connections closed by the server {}",
        if f.mix { "requests:" } else { "messages:" },
        r.sent,
        r.acked,
        r.errors,
        r.closed
    ));
    report.line(format!(
        "delivered: expected {}, received {}, lost {}",
        r.expected,
        r.received,
        r.lost()
    ));
    report.line(format!(
        "rate:      {:.0} deliveries/s over {:.1} s",
        r.deliveries_per_second(),
        r.seconds
    ));
    report.line(format!(
        "latency:   {} (send → receive)",
        latency_line(&r.latencies)
    ));
    if let Some(by_hop) = &r.by_hop {
        cluster_lines(&r, by_hop, f.mix, report);
    }
    Ok(())
}

/// One `hop:` line: `cross` minus `same` at p50 and p99, named `what`, timed `how`; none
/// without deliveries on both sides.
fn hop_line(
    what: &str,
    same: &Histogram<u64>,
    cross: &Histogram<u64>,
    how: &str,
) -> Option<String> {
    if same.is_empty() || cross.is_empty() {
        return None;
    }
    let at =
        |q: f64| (cross.value_at_quantile(q) as f64 - same.value_at_quantile(q) as f64) / 1000.0;
    Some(format!(
        "hop:       {what}: {:+.2} ms at p50, {:+.2} ms at p99 ({how})",
        at(0.5),
        at(0.99)
    ))
}

/// A cluster run's latency by hop and its bus counts.
fn cluster_lines(r: &StepResult, by_hop: &[Histogram<u64>; 6], mix: bool, report: &mut Report) {
    let [same, cross, same_rx, cross_rx, same_first, cross_first] = by_hop;
    report.line(format!(
        "same node: {} ({} deliveries: sender and receiver on one node)",
        latency_line(same),
        same.len()
    ));
    report.line(format!(
        "cross:     {} ({} deliveries: through NATS to another node)",
        latency_line(cross),
        cross.len()
    ));
    if let Some(line) = hop_line(
        "cross-node minus same-node",
        same,
        cross,
        "timed when the load generator read them",
    ) {
        report.line(line);
    }
    // The same deliveries timed when the kernel received them (`rxtime`): without the
    // load generator's own queue, which the cross-node copies, read last, carry more of.
    if !same_rx.is_empty() && !cross_rx.is_empty() {
        report.line(format!(
            "at socket: same node {}; cross {}",
            latency_line(same_rx),
            latency_line(cross_rx)
        ));
    }
    if let Some(line) = hop_line(
        "at the socket",
        same_rx,
        cross_rx,
        "timed when the kernel received them: the load generator's own queue left out",
    ) {
        report.line(line);
    }
    // Each message's first copy on each node: the bus's own hop, without the nodes'
    // fan-out to their members (which on one shared core runs one node after another).
    if !same_first.is_empty() && !cross_first.is_empty() {
        report.line(format!(
            "first copy: on the sender's node {}; on another node {} ({} messages)",
            latency_line(same_first),
            latency_line(cross_first),
            same_first.len()
        ));
    }
    if let Some(line) = hop_line(
        "first copies",
        same_first,
        cross_first,
        "a message's first copy on another node minus on the sender's, at the socket",
    ) {
        report.line(line);
    }
    let published: u64 = r.bus.iter().map(|b| b.published).sum();
    let per_message = |n: u64, of: u64| {
        if of == 0 {
            "n/a".to_owned()
        } else {
            format!("{:.3}", n as f64 / of as f64)
        }
    };
    report.line(format!(
        "bus:       room messages acknowledged {}, published on NATS {published} ({} per room message; by node {})",
        r.acked,
        per_message(published, r.acked),
        r.bus
            .iter()
            .map(|b| b.published.to_string())
            .collect::<Vec<_>>()
            .join(" · ")
    ));
    let mut one_each = published == r.acked;
    for (i, b) in r.bus.iter().enumerate() {
        // What the other nodes published, each of which this node should get once.
        let others = published - b.published;
        one_each &= b.from_others == others;
        report.line(format!(
            "received:  node {}: {} from the other nodes ({} per room message they published), {} of its own back from NATS (skipped)",
            i + 1,
            b.from_others,
            per_message(b.from_others, others),
            b.own
        ));
    }
    if !mix {
        report.line(format!(
            "bus check: one publish per room message and one delivery per other node: {}",
            if one_each { "yes" } else { "NO" }
        ));
    }
}

async fn saturation(
    target: &Target,
    f: &FanoutArgs,
    steps: u32,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  saturation — {} clients, {} rooms, {} senders/room, {}-byte bodies, {} s per step, rate doubled each step from {} msg/s per sender",
        f.clients, f.rooms, f.senders_per_room, f.bytes, f.seconds, f.rate
    ));
    let mut setup = fanout_setup(target, f).await?;
    let mut best: Option<(f64, StepResult)> = None;
    let mut rate = f.rate;
    for _ in 0..steps {
        let r = fanout_step(target, &mut setup, f, rate).await?;
        report.line(format!(
            "  step {:>7.0} msg/s/sender: {:>9.0} deliveries/s, lost {}, refused {}, closed {}, {}",
            rate,
            r.deliveries_per_second(),
            r.lost(),
            r.errors,
            r.closed,
            latency_line(&r.latencies)
        ));
        let zero_loss = r.lost() == 0 && r.errors == 0 && r.closed == 0;
        let grew = best
            .as_ref()
            .is_none_or(|(_, b)| r.deliveries_per_second() > b.deliveries_per_second() * 1.05);
        if zero_loss && grew {
            best = Some((rate, r));
        } else {
            break;
        }
        rate *= 2.0;
    }
    match best {
        Some((rate, r)) => report.line(format!(
            "best:      {:.0} deliveries/s with zero loss at {rate} msg/s per sender; latency {}",
            r.deliveries_per_second(),
            latency_line(&r.latencies)
        )),
        None => report.line("best:      no step ran without loss"),
    }
    Ok(())
}

async fn idle(target: &Target, clients: usize, report: &mut Report) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  idle — {clients} logged-in clients, member of Général, doing nothing"
    ));
    let pid = target
        .pid
        .context("the idle workload needs the server's pid (--server-pid)")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid).unwrap_or(0);
    // Worker processes, each under the per-process open-file limit; the clients come in
    // two halves so that the memory of the second half alone — the marginal cost of a
    // connection, without fixed costs such as the database's page cache — is measured
    // too.
    let exe = std::env::current_exe()?;
    let half = clients / 2;
    let mut workers = Vec::new();
    let mut samples = Vec::new();
    for part in [&target.users[..half], &target.users[half..clients]] {
        for chunk in part.chunks(CLIENTS_PER_PROCESS) {
            let file = tempfile::NamedTempFile::new()?;
            let lines: Vec<&str> = chunk.iter().map(|u| u.token.as_str()).collect();
            std::fs::write(file.path(), lines.join("\n"))?;
            let mut child = tokio::process::Command::new(&exe)
                .args(["bench", "idle-worker", "--addr", &target.addr, "--tokens"])
                .arg(file.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            let ready = lines.next_line().await?.unwrap_or_default();
            if !ready.starts_with("ready") {
                bail!("an idle worker failed: {ready}");
            }
            workers.push((child, file));
        }
        // Let presence and other after-login traffic settle before sampling.
        tokio::time::sleep(Duration::from_secs(3)).await;
        samples.push(rss_kib(pid).unwrap_or(0));
    }
    let (mid, after) = (samples[0], samples[1]);
    let average = after.saturating_sub(before) as f64 * 1024.0 / clients as f64;
    let marginal = after.saturating_sub(mid) as f64 * 1024.0 / (clients - half).max(1) as f64;
    report.line(format!(
        "memory:    server RSS {:.1} MiB idle, {:.1} MiB with {half} clients, {:.1} MiB with {clients}",
        before as f64 / 1024.0,
        mid as f64 / 1024.0,
        after as f64 / 1024.0,
    ));
    report.line(format!(
        "per conn:  {:.0} bytes ({:.2} KiB) marginal (second half), {:.0} bytes ({:.2} KiB) on average",
        marginal,
        marginal / 1024.0,
        average,
        average / 1024.0
    ));
    for (mut child, _) in workers {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let _ = child.wait().await;
    }
    Ok(())
}

/// Holds the connections of one idle worker until its standard input closes. Each reads
/// (and drops) whatever the server sends, as an idle client would.
async fn idle_worker(addr: &str, tokens: &PathBuf) -> anyhow::Result<()> {
    let tokens = std::fs::read_to_string(tokens)?;
    let tally = Arc::new(RawTally::default());
    let (deliveries, acks) = (
        Arc::new(Mutex::new(histogram())),
        Arc::new(Mutex::new(histogram())),
    );
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for token in tokens.lines().map(str::to_owned) {
        let (addr, gate) = (addr.to_owned(), gate.clone());
        let (tally, deliveries, acks) = (tally.clone(), deliveries.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            raw_session(&addr, &token, 4096, false, tally, deliveries, acks, None).await
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(c) => sessions.push(c),
            Err(e) => {
                println!("error: {e}");
                return Ok(());
            }
        }
    }
    println!("ready {}", sessions.len());
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    drop(sessions);
    Ok(())
}

async fn persist(
    target: &Target,
    clients: usize,
    window: usize,
    seconds: u64,
    bytes: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  persist — {clients} clients, each posting to its own private channel with {window} requests in flight, {bytes}-byte bodies, {seconds} s"
    ));
    let creators = target.connect_many(0..clients).await?;
    let mut rooms = Vec::new();
    for (i, c) in creators.iter().enumerate() {
        let name = format!("persist {} {i}", target.run_id);
        c.create_channel(&name, &[]).await?;
        c.close().await;
        rooms.push(name);
    }
    drop(creators);
    let tally = Arc::new(RawTally::default());
    let (deliveries, acks) = (
        Arc::new(Mutex::new(histogram())),
        Arc::new(Mutex::new(histogram())),
    );
    let sessions = raw_sessions(target, 0..clients, &tally, &deliveries, &acks, None).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (mut session, room) in sessions.into_iter().zip(rooms) {
        session.replies.add_permits(window);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let Ok(permit) = session.replies.acquire().await else {
                    break;
                };
                permit.forget(); // given back by the reader when the reply comes
                if session.send(&room, bytes).await.is_err() {
                    break;
                }
                sent += 1;
            }
            // Wait for the replies still owed.
            let _ = tokio::time::timeout(
                Duration::from_secs(20),
                session.replies.acquire_many(window as u32),
            )
            .await;
            (sent, session)
        }));
    }
    let mut sent = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (n, session) = t.await?;
        sent += n;
        keep.push(session);
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(250)).await; // readers flush their histograms
    let acked = tally.acked.load(Ordering::SeqCst);
    report.line(format!(
        "stored:    {acked} of {sent} messages acknowledged (durably stored) in {elapsed:.1} s: {:.0} messages/s; refused {}",
        acked as f64 / elapsed,
        tally.errors.load(Ordering::SeqCst)
    ));
    let h = acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    report.line(format!(
        "ack:       {} (send → acknowledgement)",
        latency_line(&h)
    ));
    drop(keep);
    Ok(())
}

async fn login(
    target: &Target,
    logins: usize,
    resumes: usize,
    concurrency: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  login — {logins} password logins, then a reconnect storm of {resumes} resumes, {concurrency} at once"
    ));
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let failures = Arc::new(AtomicU64::new(0));
    let timings = Arc::new(Mutex::new(histogram()));
    for (phase, count) in [("login", logins), ("resume", resumes)] {
        timings
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .reset();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for user in 0..count {
            let addr = target.addr.clone();
            let Provisioned {
                username: name,
                token,
                ..
            } = target.users[user].clone();
            let (gate, failures, timings) = (gate.clone(), failures.clone(), timings.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                let t0 = Instant::now();
                let ok = match connect(addr.as_str()).await {
                    Ok(c) => {
                        let r = if phase == "login" {
                            c.login(&name, BENCH_PASSWORD).await.map(drop)
                        } else {
                            c.resume(&token).await.map(drop)
                        };
                        c.close().await;
                        r.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    if let Ok(mut h) = timings.lock() {
                        let _ = h.record((t0.elapsed().as_micros() as u64).max(1));
                    }
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let h = timings.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        report.line(format!(
            "{phase:<9}  {count} in {elapsed:.2} s: {:.0}/s; each {}",
            count as f64 / elapsed,
            latency_line(&h)
        ));
    }
    report.line(format!("failures:  {}", failures.load(Ordering::SeqCst)));
    Ok(())
}

// ----- floods: the connection limits under attack ------------------------------------------

/// This process's open-file limits (soft, hard), from /proc.
fn open_file_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX));
    Some((numbers.next()?, numbers.next()?))
}

/// Makes sure this process may open `needed` files, raising the soft limit to the hard
/// one (with prlimit(1)) if that is what it takes.
fn ensure_open_files(needed: u64) -> anyhow::Result<()> {
    let Some((soft, hard)) = open_file_limits() else {
        return Ok(()); // not Linux: try anyway
    };
    if soft < needed && hard > soft {
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string()])
            .arg(format!("--nofile={hard}:{hard}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    match open_file_limits() {
        Some((soft, _)) if soft < needed => bail!(
            "this needs {needed} open files but the limit is {soft} (hard {hard}): \
             raise it (ulimit -n) or ask for fewer connections"
        ),
        _ => Ok(()),
    }
}

/// A TCP connection from a chosen loopback source address.
async fn connect_from(source: [u8; 4], to: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((source, 0)))?;
    Ok(socket.connect(to.parse()?).await?)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

enum Flooded {
    /// Got its hello: held open.
    Accepted(BufReader<tokio::net::TcpStream>),
    Refused,
    /// No answer within 20 s.
    Unanswered,
    Failed(String),
}

async fn connflood(target: &Target, connections: usize, report: &mut Report) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  connflood — {connections} TCP connections from 127.0.0.1 opened and held, \
         then a user connects from 127.0.0.2 and logs in with a password; production \
         connection limits"
    ));
    ensure_open_files(connections as u64 + 1_000)?;
    // The readiness checks' connections are gone by then.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.pid.and_then(rss_kib);
    let gate = Arc::new(Semaphore::new(512));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (gate, addr) = (gate.clone(), target.addr.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let attempt = async {
                let stream = connect_from([127, 0, 0, 1], &addr).await?;
                let mut reader = BufReader::with_capacity(1024, stream);
                let mut line = String::new();
                reader.read_line(&mut line).await?;
                anyhow::Ok(if line.contains("\"type\":\"hello\"") {
                    Flooded::Accepted(reader)
                } else if line.contains("too_many_connections") {
                    Flooded::Refused
                } else {
                    Flooded::Failed(format!("first line {line:?}"))
                })
            };
            match tokio::time::timeout(Duration::from_secs(20), attempt).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => Flooded::Failed(e.to_string()),
                Err(_) => Flooded::Unanswered,
            }
        }));
    }
    let (mut held, mut refused, mut unanswered) = (Vec::new(), 0u64, 0u64);
    let mut failed: Vec<String> = Vec::new();
    for t in tasks {
        match t.await? {
            Flooded::Accepted(c) => held.push(c),
            Flooded::Refused => refused += 1,
            Flooded::Unanswered => unanswered += 1,
            Flooded::Failed(why) => failed.push(why),
        }
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    let during = target.pid.and_then(rss_kib);

    let t0 = Instant::now();
    let other = async {
        let stream = connect_from([127, 0, 0, 2], &target.addr).await?;
        let client = Client::connect_stream(stream).await?;
        client
            .login(&target.users[0].username, BENCH_PASSWORD)
            .await?;
        client.ping().await?;
        anyhow::Ok(client)
    };
    let other = tokio::time::timeout(Duration::from_secs(30), other).await;
    let other_ms = t0.elapsed().as_secs_f64() * 1000.0;

    report.line(format!(
        "flood:     {connections} connections in {flood_seconds:.1} s: accepted {}, refused {refused} \
         (too_many_connections), unanswered in 20 s {unanswered}, failed {}{}",
        held.len(),
        failed.len(),
        failed.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
    ));
    match &other {
        Ok(Ok(_)) => report.line(format!(
            "other:     a user from 127.0.0.2 connected and logged in (password, Argon2) in \
             {other_ms:.0} ms while the flood was held"
        )),
        Ok(Err(e)) => report.line(format!("other:     a user from 127.0.0.2 FAILED: {e}")),
        Err(_) => report.line("other:     a user from 127.0.0.2 FAILED: no answer in 30 s"),
    }
    report.line(format!(
        "memory:    server RSS {} before, {} with the flood held",
        before.map_or("unknown".into(), mib),
        during.map_or("unknown".into(), mib)
    ));
    drop(held);
    match other {
        Ok(Ok(_)) => Ok(()),
        _ => bail!("a user from another address could not log in during the flood"),
    }
}

/// What the server's memory may grow by whatever the number of clients: the allocator's
/// per-thread arenas and the runtime's own buffers, in KiB.
const PINGFLOOD_FIXED_KIB: u64 = 8 * 1024;

/// Pingflood clients opened from each source address.
const PINGFLOOD_PER_ADDRESS: usize = 50;

async fn pingflood(
    target: &Target,
    clients: usize,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let http = target
        .http
        .clone()
        .context("pingflood needs the server the bench starts (its HTTP listener)")?;
    let pid = target.pid.context("pingflood needs the server's pid")?;
    // What one connection may hold for this: the WebSocket write buffer's bound (the
    // Pongs not yet taken), its allocation at most twice that, plus the read buffer.
    let per_connection =
        (2 * salon_server::WS_MAX_WRITE_BUFFER + salon_server::WS_READ_BUFFER) as u64;
    report.line(format!(
        "workload:  pingflood — {clients} WebSocket clients ({PINGFLOOD_PER_ADDRESS} per address \
         from 127.1.0.1 on), never logged in, each sending 125-byte Pings as fast as it can and \
         never reading (receive buffer 4 KiB), for {seconds} s"
    ));
    ensure_open_files(clients as u64 + 1_000)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid).unwrap_or(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let http = http.clone();
        // Spread over loopback addresses, under the per-address limit: the bound is per
        // connection, whoever opens them.
        let source = [
            127,
            1,
            (i / PINGFLOOD_PER_ADDRESS / 250) as u8,
            1 + (i / PINGFLOOD_PER_ADDRESS % 250) as u8,
        ];
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::from((source, 0)))?;
            socket.set_recv_buffer_size(4096)?;
            let stream = socket.connect(http.parse()?).await?;
            let (ws, _) =
                tokio_tungstenite::client_async(format!("ws://{http}/ws"), stream).await?;
            let (mut sink, _unread) = ws.split();
            let mut sent = 0u64;
            while Instant::now() < deadline {
                // A send that cannot finish before the deadline (the server stopped
                // reading) ends the flood of this client too.
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, sink.send(Message::Ping(vec![7u8; 125].into())))
                    .await
                {
                    Ok(Ok(())) => sent += 1,
                    Ok(Err(_)) => return anyhow::Ok((sent, Some(started.elapsed()))),
                    Err(_) => break,
                }
            }
            anyhow::Ok((sent, None))
        }));
    }
    let mut samples = Vec::new();
    let mut peak = before;
    while Instant::now() < deadline {
        // The peak from a sample every 100 ms; one figure per second reported.
        tokio::time::sleep(
            Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let rss = rss_kib(pid).unwrap_or(0);
        peak = peak.max(rss);
        let t = started.elapsed().as_secs_f64();
        if samples.last().is_none_or(|(last, _)| t - last >= 1.0) {
            samples.push((t, rss));
        }
    }
    let (mut sent, mut cut, mut failed) = (0u64, Vec::new(), 0u64);
    for t in tasks {
        match t.await? {
            Ok((n, at)) => {
                sent += n;
                cut.extend(at);
            }
            Err(_) => failed += 1,
        }
    }
    let bound = clients as u64 * per_connection / 1024 + PINGFLOOD_FIXED_KIB;
    report.line(format!(
        "rss:       {}",
        samples
            .iter()
            .map(|(t, kib)| format!("{t:.0} s {:.0}", *kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
            + " (MiB)"
    ));
    report.line(format!(
        "bound:     peak {} = {} above the {} before; stated bound {} above it ({clients} × {} KiB + {})",
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(before),
        mib(bound),
        per_connection / 1024,
        mib(PINGFLOOD_FIXED_KIB)
    ));
    cut.sort();
    report.line(format!(
        "pings:     {sent} sent ({:.0}/s); clients cut by the server {} of {clients}{}; failed to connect {failed}",
        sent as f64 / seconds.max(1) as f64,
        cut.len(),
        match (cut.first(), cut.last()) {
            (Some(a), Some(b)) => format!(" (from {:.1} s to {:.1} s)", a.as_secs_f64(), b.as_secs_f64()),
            _ => String::new(),
        }
    ));
    if peak.saturating_sub(before) > bound {
        bail!("the server's memory went past its stated bound");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message's first copy on each node counts once, on the sender's node or on
    /// another one; later copies and messages nobody on a node received do not.
    #[test]
    fn first_copies_are_the_earliest_per_node() {
        let hops = Hops::new(3);
        let sent = 1_000_000_000;
        hops.copy(sent, 1, 1, sent + 2_000_000); // a later copy on the sender's node
        hops.copy(sent, 1, 1, sent + 1_000_000); // its first one
        hops.copy(sent, 1, 2, sent + 1_500_000);
        hops.copy(sent, 1, 2, sent + 3_000_000);
        let [same, cross] = hops.first_copies();
        assert_eq!((same.len(), cross.len()), (1, 1));
        // Microseconds, within the histograms' 1%.
        assert!(same.max().abs_diff(1_000) <= 10, "{}", same.max());
        assert!(cross.max().abs_diff(1_500) <= 15, "{}", cross.max());
    }
}
