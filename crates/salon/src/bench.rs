//! `salon bench`: a load generator over the native protocol, with named workloads
//! (R25). It drives a server it starts itself (a temporary data directory, production
//! limits except the per-session rates, pinned to CPU 0 while the load runs on CPU 1) or
//! one already running (`--server`, with `--database-url` for the set-up). It prints one
//! result block to paste into an issue or `docs/BENCHMARKS.md`.
//!
//! Set-up writes accounts and session tokens straight into the database, so thousands of
//! clients connect with `resume` instead of thousands of Argon2 logins (the `login`
//! workload measures those on their own).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use salon_client::{Client, Incoming};
use salon_proto::Event;
use salon_server::store::NewUser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

/// The password every bench account has (set-up hashes it once).
const BENCH_PASSWORD: &str = "bench password not for production";
/// Connections one load process opens at most (the machine allows 20,000 open files per
/// process; leave room for everything else).
const CLIENTS_PER_PROCESS: usize = 9_000;

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

#[derive(Debug, Subcommand)]
enum Workload {
    /// Clients over rooms, some of them sending at a fixed rate: loss and latency.
    Fanout(FanoutArgs),
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
}

pub async fn run(args: BenchArgs, command_line: String) -> anyhow::Result<()> {
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
        Workload::IdleWorker { .. } => 0,
    };
    let target = Target::prepare(&args, users).await?;
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
        Workload::IdleWorker { .. } => Ok(()),
    };
    report.server_usage(&target);
    println!("{}", report.text);
    target.stop().await;
    result
}

// ----- the server under test --------------------------------------------------------------

struct Target {
    addr: String,
    database: String,
    /// One token per bench user, in user order.
    tokens: Vec<(String, String)>,
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
    async fn prepare(args: &BenchArgs, users: usize) -> anyhow::Result<Target> {
        let data = tempfile::TempDir::new()?;
        let database = match &args.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                data.path().join("salon.db").display()
            ),
        };
        let run_id = format!("{:x}", std::process::id() ^ (now_ns() as u32));
        let tokens = provision(&database, users, &run_id).await?;

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pin = !args.no_pin && cores >= 2 && taskset_available();
        let (addr, server, pid) = match &args.server {
            Some(addr) => (addr.clone(), None, args.server_pid),
            None => {
                let (tcp, http) = (free_port()?, free_port()?);
                let config = data.path().join("bench.toml");
                std::fs::write(&config, BENCH_CONFIG)?;
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
                (format!("127.0.0.1:{tcp}"), Some(child), pid)
            }
        };
        // Wait until it answers.
        let mut ready = false;
        for _ in 0..400 {
            if Client::connect_tcp(addr.as_str()).await.is_ok() {
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
            database,
            tokens,
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
            let (addr, token) = (self.addr.clone(), self.tokens[user].1.clone());
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                let client = Client::connect_tcp(addr.as_str()).await?;
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
auth_attempts_per_minute_per_address = 1000000
login_attempts_per_minute_per_account = 1000000
max_connections = 19500
";

/// Creates `n` bench accounts with one session token each; returns (username, token).
async fn provision(
    database: &str,
    n: usize,
    run_id: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let config = salon_server::Config {
        database_url: Some(database.to_owned()),
        ..salon_server::Config::default()
    };
    let store = salon_server::open_store(&config).await?;
    let hash = salon_server::accounts::hash_password(BENCH_PASSWORD.into()).await?;
    let ids = salon_server::ids::IdGenerator::new(15);
    let now = now_ms();
    let mut users = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let username = format!("b{run_id}u{i}");
        let id = ids.next(now);
        users.push(NewUser {
            id,
            username: username.clone(),
            alias: format!("B{run_id}U{i}"),
            first_name: "Bench".into(),
            last_name: "User".into(),
            password_hash: hash.clone(),
            is_admin: false,
            created_at: now,
        });
        let (token, token_hash) = salon_server::accounts::new_session_token();
        tokens.push((token_hash, id, now + 86_400_000));
        out.push((username, token));
    }
    store.import_users(&users, &tokens).await?;
    store.close().await;
    Ok(out)
}

// ----- measurement helpers ----------------------------------------------------------------

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn now_ms() -> i64 {
    (now_ns() / 1_000_000) as i64
}

/// A body of `bytes` bytes starting with the send time, so any receiver can compute the
/// latency.
fn body(bytes: usize) -> String {
    let mut text = format!("{:020}|", now_ns());
    while text.len() < bytes {
        text.push('x');
    }
    text
}

fn sent_at(text: &str) -> Option<u64> {
    text.get(..20)?.parse().ok()
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
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
        }
    }

    fn line(&mut self, line: impl AsRef<str>) {
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    fn server_usage(&mut self, target: &Target) {
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

// ----- workloads ---------------------------------------------------------------------------

/// Live counters of one fanout run.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    received: AtomicU64,
}

struct FanoutSetup {
    clients: Vec<Arc<Client>>,
    rooms: Vec<String>,
    /// Members per room.
    members: Vec<usize>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    tally: Arc<Tally>,
}

async fn fanout_setup(target: &Target, f: &FanoutArgs) -> anyhow::Result<FanoutSetup> {
    if f.rooms == 0 || f.clients < f.rooms || f.senders_per_room * f.rooms > f.clients {
        bail!("need at least one room, one client per room and enough clients for the senders");
    }
    let mut clients = target.connect_many(0..f.clients).await?;
    // Room k holds clients k, k + rooms, k + 2·rooms…: private channels made for the run.
    let mut rooms = Vec::new();
    let mut members = Vec::new();
    for (k, creator) in clients.iter().take(f.rooms).enumerate() {
        let names: Vec<String> = (k..f.clients)
            .step_by(f.rooms)
            .skip(1)
            .map(|i| target.tokens[i].0.clone())
            .collect();
        let name = format!("bench {} {k}", target.run_id);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        creator.create_channel(&name, &refs).await?;
        members.push(names.len() + 1);
        rooms.push(name);
    }
    let latencies = Arc::new(Mutex::new(histogram()));
    let tally = Arc::new(Tally::default());
    // One receiving task per client: count and time every message of its room.
    for client in clients.iter_mut() {
        let mut events = client.take_events();
        let (latencies, tally) = (latencies.clone(), tally.clone());
        tokio::spawn(async move {
            let mut local = histogram();
            let mut flush_at = Instant::now();
            while let Some(item) = events.recv().await {
                if let Incoming::Event(Event::Message(m)) = item {
                    if let Some(sent) = sent_at(&m.text) {
                        let us = now_ns().saturating_sub(sent) / 1000;
                        let _ = local.record(us.max(1));
                        tally.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if flush_at.elapsed() > Duration::from_millis(200) {
                    if let Ok(mut h) = latencies.lock() {
                        let _ = h.add(&local);
                    }
                    local.reset();
                    flush_at = Instant::now();
                }
                if events.is_empty() && !local.is_empty() {
                    if let Ok(mut h) = latencies.lock() {
                        let _ = h.add(&local);
                    }
                    local.reset();
                }
            }
        });
    }
    Ok(FanoutSetup {
        clients: clients.into_iter().map(Arc::new).collect(),
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

async fn fanout_step(setup: &FanoutSetup, f: &FanoutArgs, rate: f64) -> anyhow::Result<StepResult> {
    setup
        .latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .reset();
    let before = (
        setup.tally.sent.load(Ordering::SeqCst),
        setup.tally.acked.load(Ordering::SeqCst),
        setup.tally.errors.load(Ordering::SeqCst),
        setup.tally.received.load(Ordering::SeqCst),
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(f.seconds);
    let acked_per_room: Arc<Vec<AtomicU64>> =
        Arc::new((0..f.rooms).map(|_| AtomicU64::new(0)).collect());
    let mut senders = Vec::new();
    for k in 0..f.rooms {
        for s in 0..f.senders_per_room {
            let client = setup.clients[k + s * f.rooms].clone();
            let room = setup.rooms[k].clone();
            let (tally, acked_per_room, bytes) =
                (setup.tally.clone(), acked_per_room.clone(), f.bytes);
            let period = Duration::from_secs_f64(1.0 / rate);
            senders.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut inflight = Vec::new();
                while Instant::now() < deadline {
                    tick.tick().await;
                    let (client, room, tally, acked_per_room) = (
                        client.clone(),
                        room.clone(),
                        tally.clone(),
                        acked_per_room.clone(),
                    );
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    inflight.push(tokio::spawn(async move {
                        match client.send(&room, &body(bytes)).await {
                            Ok(_) => {
                                tally.acked.fetch_add(1, Ordering::Relaxed);
                                acked_per_room[k].fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                tally.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }));
                }
                for t in inflight {
                    let _ = t.await;
                }
            }));
        }
    }
    for s in senders {
        s.await?;
    }
    let expected: u64 = (0..f.rooms)
        .map(|k| acked_per_room[k].load(Ordering::SeqCst) * setup.members[k] as u64)
        .sum();
    // Let deliveries drain (at most 15 s after the last send).
    let drain_deadline = Instant::now() + Duration::from_secs(15);
    while setup.tally.received.load(Ordering::SeqCst) - before.3 < expected
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await; // receivers flush their histograms
    let latencies = setup
        .latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(StepResult {
        sent: setup.tally.sent.load(Ordering::SeqCst) - before.0,
        acked: setup.tally.acked.load(Ordering::SeqCst) - before.1,
        errors: setup.tally.errors.load(Ordering::SeqCst) - before.2,
        expected,
        received: setup.tally.received.load(Ordering::SeqCst) - before.3,
        seconds,
        latencies,
    })
}

async fn fanout(target: &Target, f: &FanoutArgs, report: &mut Report) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  fanout — {} clients, {} rooms, {} senders/room at {} msg/s each, {}-byte bodies, {} s",
        f.clients, f.rooms, f.senders_per_room, f.rate, f.bytes, f.seconds
    ));
    let setup = fanout_setup(target, f).await?;
    let r = fanout_step(&setup, f, f.rate).await?;
    report.line(format!(
        "messages:  sent {}, acknowledged {}, refused {}",
        r.sent, r.acked, r.errors
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
    let setup = fanout_setup(target, f).await?;
    let mut best: Option<(f64, StepResult)> = None;
    let mut rate = f.rate;
    for _ in 0..steps {
        let r = fanout_step(&setup, f, rate).await?;
        report.line(format!(
            "  step {:>7.0} msg/s/sender: {:>9.0} deliveries/s, lost {}, refused {}, {}",
            rate,
            r.deliveries_per_second(),
            r.lost(),
            r.errors,
            latency_line(&r.latencies)
        ));
        let zero_loss = r.lost() == 0 && r.errors == 0;
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
    // Worker processes, each under the per-process open-file limit.
    let mut workers = Vec::new();
    let exe = std::env::current_exe()?;
    for chunk in target.tokens[..clients].chunks(CLIENTS_PER_PROCESS) {
        let file = tempfile::NamedTempFile::new()?;
        let lines: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid).unwrap_or(0);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / clients as f64;
    report.line(format!(
        "memory:    server RSS {:.1} MiB before, {:.1} MiB with {clients} clients: {:.0} bytes ({:.2} KiB) per connection",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per,
        per / 1024.0
    ));
    for (mut child, _) in workers {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let _ = child.wait().await;
    }
    Ok(())
}

/// Holds the connections of one idle worker until its standard input closes.
async fn idle_worker(addr: &str, tokens: &PathBuf) -> anyhow::Result<()> {
    let tokens = std::fs::read_to_string(tokens)?;
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for token in tokens.lines().map(str::to_owned) {
        let (addr, gate) = (addr.to_owned(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let client = Client::connect_tcp(addr.as_str()).await?;
            client.resume(&token).await?;
            anyhow::Ok(client)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(c) => clients.push(c),
            Err(e) => {
                println!("error: {e}");
                return Ok(());
            }
        }
    }
    println!("ready {}", clients.len());
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    drop(clients);
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
    let connected = target.connect_many(0..clients).await?;
    let mut rooms = Vec::new();
    for (i, c) in connected.iter().enumerate() {
        let name = format!("persist {} {i}", target.run_id);
        c.create_channel(&name, &[]).await?;
        rooms.push(name);
    }
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(histogram()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (client, room) in connected.into_iter().zip(rooms) {
        let client = Arc::new(client);
        let (acked, errors, latencies) = (acked.clone(), errors.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let gate = Arc::new(Semaphore::new(window));
            let mut local = histogram();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            while Instant::now() < deadline {
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                let (client, room, acked, errors, tx) = (
                    client.clone(),
                    room.clone(),
                    acked.clone(),
                    errors.clone(),
                    tx.clone(),
                );
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    match client.send(&room, &body(bytes)).await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send(t0.elapsed().as_micros() as u64);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    drop(permit);
                });
                while let Ok(us) = rx.try_recv() {
                    let _ = local.record(us.max(1));
                }
            }
            let _ = gate.acquire_many(window as u32).await;
            while let Ok(us) = rx.try_recv() {
                let _ = local.record(us.max(1));
            }
            if let Ok(mut h) = latencies.lock() {
                let _ = h.add(&local);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::SeqCst);
    report.line(format!(
        "stored:    {acked} messages acknowledged (durably stored) in {elapsed:.1} s: {:.0} messages/s; refused {}",
        acked as f64 / elapsed,
        errors.load(Ordering::SeqCst)
    ));
    let h = latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    report.line(format!("ack:       {}", latency_line(&h)));
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
            let (addr, (name, token)) = (target.addr.clone(), target.tokens[user].clone());
            let (gate, failures, timings) = (gate.clone(), failures.clone(), timings.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                let t0 = Instant::now();
                let ok = match Client::connect_tcp(addr.as_str()).await {
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
