//! `salon-bench`: Salon's load generator over the native protocol, with named workloads
//! (R25), run as `salon bench`. It drives a server it starts itself (a temporary data
//! directory, production limits except the per-session rates, pinned to CPU 0 while the
//! load runs on CPU 1) or one already running (`--server`, with `--database-url` for the
//! set-up). It prints one result block to paste into an issue or `docs/BENCHMARKS.md`.
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
mod search;

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
}

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
        let database = match &args.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                data.path().join("salon.db").display()
            ),
        };
        let run_id = format!("{:x}", std::process::id() ^ (now_ns() as u32));
        let users = create_users(&database, users, &run_id).await?;

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pin = !args.no_pin && cores >= 2 && taskset_available();
        let (addr, http, server, pid) = match &args.server {
            Some(addr) => (addr.clone(), None, None, args.server_pid),
            None => {
                let (tcp, http) = (free_port()?, free_port()?);
                let config = data.path().join("bench.toml");
                std::fs::write(&config, config_text)?;
                let exe = std::env::current_exe()?;
                let mut cmd = if pin {
                    let mut c = tokio::process::Command::new("taskset");
                    c.args(["-c", "0"]).arg(exe);
                    c
                } else {
                    tokio::process::Command::new(exe)
                };
                cmd.args(["serve", "--no-console", "--config"])
                    .arg(&config)
                    .args(["--listen", &format!("127.0.0.1:{tcp}")])
                    .args(["--http-listen", &format!("127.0.0.1:{http}")])
                    // Metrics on as in production, on a port of their own.
                    .args(["--metrics-listen", "127.0.0.1:0"])
                    .args(["--database-url", &database])
                    .env("SALON_LOG", "warn")
                    .env("SALON_ADMIN_PASSWORD", BENCH_PASSWORD)
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                let child = cmd.spawn().context("cannot start the server")?;
                let pid = child.id();
                if pin {
                    // The load generator (this process, every thread) on the other core.
                    let _ = std::process::Command::new("taskset")
                        .args(["-a", "-pc", "1", &std::process::id().to_string()])
                        .stdout(Stdio::null())
                        .status();
                }
                (
                    format!("127.0.0.1:{tcp}"),
                    Some(format!("127.0.0.1:{http}")),
                    Some(child),
                    pid,
                )
            }
        };
        // Wait until it answers.
        let mut ready = false;
        for _ in 0..400 {
            if connect(addr.as_str()).await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !ready {
            bail!("the server at {addr} does not answer");
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
        })
    }

    /// Connects users `range` concurrently (bounded), in order.
    async fn connect_many(&self, range: std::ops::Range<usize>) -> anyhow::Result<Vec<Client>> {
        let gate = Arc::new(Semaphore::new(64));
        let mut tasks = Vec::new();
        for user in range {
            let (addr, token) = (self.addr.clone(), self.users[user].token.clone());
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
        if let Some(mut child) = self.server.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
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
/// latency.
fn body_at(sent_ns: u64, bytes: usize) -> String {
    let mut text = format!("{sent_ns:020}|");
    while text.len() < bytes {
        text.push('x');
    }
    text
}

fn sent_at(text: &str) -> Option<u64> {
    text.get(..20)?.parse().ok()
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
        self.line(format!("server:    CPU {cpu}; RSS now {rss}, peak {peak}"));
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
}

async fn raw_session(
    addr: &str,
    token: &str,
    read_buffer: usize,
    timed: bool,
    tally: Arc<RawTally>,
    deliveries: Arc<Mutex<Histogram<u64>>>,
    acks: Arc<Mutex<Histogram<u64>>>,
) -> anyhow::Result<RawSession> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
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
    tokio::spawn(async move {
        // Idle sessions time nothing and keep no histograms.
        let (mut local_deliveries, mut local_acks) = if timed {
            (Some(histogram()), Some(histogram()))
        } else {
            (None, None)
        };
        let mut flushed = Instant::now();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
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
                        if let Some(h) = local_deliveries.as_mut() {
                            let _ = h.record((now_ns().saturating_sub(sent) / 1000).max(1));
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
                flushed = Instant::now();
            }
        }
        flush_into(&deliveries, &mut local_deliveries);
        flush_into(&acks, &mut local_acks);
    });
    Ok(RawSession {
        write,
        replies,
        last_id,
    })
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
        let text = body_at(sent, bytes);
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
        let text = body_at(sent, bytes);
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

/// Opens raw sessions for users `range` (bounded concurrency), in order.
async fn raw_sessions(
    target: &Target,
    range: std::ops::Range<usize>,
    tally: &Arc<RawTally>,
    deliveries: &Arc<Mutex<Histogram<u64>>>,
    acks: &Arc<Mutex<Histogram<u64>>>,
) -> anyhow::Result<Vec<RawSession>> {
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for user in range {
        let (addr, token) = (target.addr.clone(), target.users[user].token.clone());
        let (gate, tally, deliveries, acks) = (
            gate.clone(),
            tally.clone(),
            deliveries.clone(),
            acks.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            raw_session(&addr, &token, 64 * 1024, true, tally, deliveries, acks).await
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
    let sessions = raw_sessions(target, 0..f.clients, &tally, &latencies, &acks).await?;
    Ok(FanoutSetup {
        sessions: sessions.into_iter().map(Some).collect(),
        rooms,
        members,
        latencies,
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
    Ok(StepResult {
        sent,
        acked,
        errors,
        closed: t.closed.load(Ordering::SeqCst) - before.3,
        expected,
        received: t.received.load(Ordering::SeqCst) - before.2,
        seconds,
        latencies,
    })
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
    let r = fanout_step(&mut setup, f, f.rate).await?;
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
    Ok(())
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
        let r = fanout_step(&mut setup, f, rate).await?;
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
            raw_session(&addr, &token, 4096, false, tally, deliveries, acks).await
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
    let sessions = raw_sessions(target, 0..clients, &tally, &deliveries, &acks).await?;
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
