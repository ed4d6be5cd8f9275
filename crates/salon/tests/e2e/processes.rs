//! A cluster of real `salon serve` processes (issue 16): n child processes of the built
//! binary on loopback, nodes 1…n, each with a data directory of its own, all on one new
//! PostgreSQL or MariaDB database and one NATS, in a cluster name no other test uses.
//! Each node reaches NATS through a [`CuttableProxy`] of its own, so a test can cut one
//! node's bus link. Unlike `cluster.rs`, whose nodes run in the test's process, a node
//! here can be killed with SIGKILL, stopped with SIGTERM and started again, as an
//! operator would.
//!
//! Run in the suite's PostgreSQL and MariaDB passes; skipped with a loud message on
//! SQLite or when NATS cannot be reached (unless `SALON_REQUIRE_SERVICES=1`). Each
//! node's logs (standard output and error) go to `salon.log` in its data directory; a
//! failing test prints the end of every node's log.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use salon_client::Client;
use salon_proto::{args, CloseCode, ErrorCode, Event, MemberState, Status};
use tempfile::TempDir;
use tokio::process::Child;
use tokio::time::{sleep, Instant};

use crate::authorization::ModelNode;
use crate::cluster::{
    cluster_setting, collect_room, exactly_once, keep_sending, nats_proxy, none_of, presence_of,
    receive_all, who_shows,
};
use crate::harness::*;
use crate::proxy::CuttableProxy;

/// How long a node may take to accept connections after it is spawned.
const START_WAIT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after SIGTERM or the shutdown command.
const EXIT_WAIT: Duration = Duration::from_secs(15);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL: usize = 40;

/// One `salon serve` child process and what it keeps across restarts.
pub struct ProcNode {
    pub id: u16,
    /// Its native protocol and HTTP listeners (new ports at each start).
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// Its metrics listener (`/metrics`: this process's own figures).
    pub metrics: SocketAddr,
    /// Its own data directory (the log is `salon.log` there).
    dir: TempDir,
    /// Its link to NATS.
    proxy: CuttableProxy,
    /// `None` once it has exited and been waited for.
    child: Option<Child>,
    /// The `salon` binary it runs: this build's, or an older one's until
    /// [`ProcCluster::upgrade`].
    binary: PathBuf,
}

impl ProcNode {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("salon.log")
    }

    /// The last `lines` lines of its log.
    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until it exits, at most `within`.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        let status = match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => status.expect("wait for the node"),
            Err(_) => panic!(
                "node {} did not exit within {within:?}; its log ends:\n{}",
                self.id,
                self.log_tail(LOG_TAIL)
            ),
        };
        self.child = None;
        status
    }
}

impl ModelNode for ProcNode {
    async fn client(&self) -> Client {
        Client::connect_tcp(self.tcp)
            .await
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", self.id))
    }

    fn http(&self) -> SocketAddr {
        self.http
    }

    fn advance_clock(&self, _ms: i64) -> bool {
        false
    }
}

/// n `salon serve` processes forming one cluster (see the module's documentation).
/// Nodes are named by their node id, 1…n.
pub struct ProcCluster {
    nodes: Vec<ProcNode>,
    /// The shared database; its directory holds the configuration file and the files
    /// directory every node uses.
    data: DataDir,
    name: String,
    /// Each node's native protocol address, by index (node id − 1), kept current across
    /// restarts: what `keep_sending` connects to, as behind a load balancer.
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
}

impl ProcCluster {
    /// Starts `n` nodes, or returns `None` (the test is skipped) on SQLite or without
    /// NATS. Node 1 starts first (it creates the schema and the administrator `admin`,
    /// password [`PASSWORD`]), then the others together.
    pub async fn start(n: u16) -> Option<ProcCluster> {
        ProcCluster::start_on(n, PathBuf::from(env!("CARGO_BIN_EXE_salon"))).await
    }

    /// As [`Self::start`], every node running `binary` (an older build's `salon`).
    pub async fn start_on(n: u16, binary: PathBuf) -> Option<ProcCluster> {
        let (url, name) = cluster_setting("salon_procs").await?;
        let data = DataDir::new();
        write_config(&data);
        let mut cluster = ProcCluster {
            nodes: Vec::new(),
            data,
            name,
            addrs: Arc::new(Mutex::new(Vec::new())),
        };
        // Ports are chosen at each start.
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        for id in 1..=n {
            let node = ProcNode {
                id,
                tcp: unbound,
                http: unbound,
                metrics: unbound,
                dir: TempDir::new().expect("a data directory"),
                proxy: nats_proxy(&url).await,
                child: None,
                binary: binary.clone(),
            };
            cluster.addrs.lock().unwrap().push(node.tcp);
            cluster.nodes.push(node);
            if id == 1 {
                cluster.spawn(1);
                cluster.ready(1).await;
            }
        }
        for id in 2..=n {
            cluster.spawn(id);
        }
        for id in 2..=n {
            cluster.ready(id).await;
        }
        Some(cluster)
    }

    pub fn node(&self, id: u16) -> &ProcNode {
        &self.nodes[usize::from(id) - 1]
    }

    fn node_mut(&mut self, id: u16) -> &mut ProcNode {
        &mut self.nodes[usize::from(id) - 1]
    }

    /// Every node's native protocol address by index (node id − 1), updated when a node
    /// restarts.
    pub fn addrs(&self) -> Arc<Mutex<Vec<SocketAddr>>> {
        self.addrs.clone()
    }

    /// Spawns node `id` on new ports (its last ones may be taken by now).
    fn spawn(&mut self, id: u16) {
        let (tcp, http, metrics) = (free_addr(), free_addr(), free_addr());
        let config = self.data.path().join("salon.toml");
        let (name, database) = (
            self.name.clone(),
            self.data.database_url().expect("a shared database"),
        );
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is running already");
        node.tcp = tcp;
        node.http = http;
        node.metrics = metrics;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("open the node's log");
        let child = tokio::process::Command::new(&node.binary)
            .args(["serve", "--no-console", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(node.dir.path())
            .args(["--database-url", &database])
            .args(["--listen", &tcp.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--node-id", &id.to_string()])
            .args(["--cluster-name", &name])
            .args(["--nats-url", &format!("nats://{}", node.proxy.addr)])
            .env("SALON_ADMIN_PASSWORD", PASSWORD)
            .env(
                "SALON_LOG",
                std::env::var("SALON_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            // Logs go to standard output, errors at start to standard error: both kept.
            .stdout(log.try_clone().expect("share the node's log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn salon serve");
        node.child = Some(child);
        self.addrs.lock().unwrap()[usize::from(id) - 1] = tcp;
    }

    /// Waits until node `id` answers a client with its hello.
    async fn ready(&mut self, id: u16) {
        let deadline = Instant::now() + START_WAIT;
        let node = self.node_mut(id);
        loop {
            if let Ok(_client) = Client::connect_tcp(node.tcp).await {
                return;
            }
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "node {id} exited at start ({status}); its log ends:\n{}",
                    node.log_tail(LOG_TAIL)
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {id} never accepted connections; its log ends:\n{}",
                node.log_tail(LOG_TAIL)
            );
            sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn client(&self, id: u16) -> Client {
        self.node(id).client().await
    }

    pub async fn register(&self, id: u16, name: &str) {
        let c = self.client(id).await;
        c.register(registration(name)).await.expect("register");
    }

    /// Registers `name` on node `id` and returns a logged-in client there.
    pub async fn user(&self, id: u16, name: &str) -> (Client, salon_proto::Welcome) {
        self.node(id).user(name).await
    }

    pub async fn login(&self, id: u16, name: &str) -> (Client, salon_proto::Welcome) {
        self.node(id).login(name).await
    }

    /// Kills node `id` with SIGKILL (nothing of it says goodbye) and waits for it.
    pub async fn kill9(&mut self, id: u16) {
        let node = self.node_mut(id);
        node.child
            .as_mut()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .start_kill()
            .expect("SIGKILL");
        node.wait_exit(EXIT_WAIT).await;
    }

    /// Sends SIGTERM to node `id` (it drains: its sessions are told and closed) and waits
    /// for it to exit, which it must do successfully.
    pub async fn term(&mut self, id: u16) {
        let node = self.node_mut(id);
        let pid = node
            .child
            .as_ref()
            .and_then(Child::id)
            .unwrap_or_else(|| panic!("node {id} is not running"));
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = node.wait_exit(EXIT_WAIT).await;
        assert!(
            status.success(),
            "node {id} exited with {status} after SIGTERM"
        );
    }

    /// Waits until node `id` exits by itself (the shutdown command); its exit status.
    pub async fn wait_exit(&mut self, id: u16) -> ExitStatus {
        self.node_mut(id).wait_exit(EXIT_WAIT).await
    }

    /// Starts node `id` again (same node id, data directory and database), after
    /// [`Self::kill9`], [`Self::term`] or [`Self::wait_exit`], and waits until it serves.
    pub async fn restart(&mut self, id: u16) {
        self.spawn(id);
        self.ready(id).await;
    }

    /// Node `id` runs this build's binary from its next start on.
    pub fn upgrade(&mut self, id: u16) {
        self.node_mut(id).binary = PathBuf::from(env!("CARGO_BIN_EXE_salon"));
    }

    /// Cuts node `id`'s link to NATS: its connections through the proxy end and new ones
    /// are refused, until [`Self::heal`].
    pub fn cut(&self, id: u16) {
        self.node(id).proxy.cut();
    }

    pub fn heal(&self, id: u16) {
        self.node(id).proxy.restore();
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        // Killed before the database is dropped (the `data` field, after this).
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "--- node {} ({}), end of its log:\n{}",
                    node.id,
                    node.log_path().display(),
                    node.log_tail(LOG_TAIL)
                );
            }
        }
    }
}

/// A free loopback address for a child's listener (see [`free_port`]).
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The configuration every node reads: the test limits of [`test_config`] (so that tests
/// of other things are not rate limited) and one files directory for all the nodes (a
/// file uploaded on one node is served by the others, as on a shared filesystem).
fn write_config(data: &DataDir) {
    let l = test_config(data).limits;
    let files = data.path().join("files");
    let toml = format!(
        "files_dir = {files:?}\n\
         [limits]\n\
         auth_attempts_per_minute_per_address = {}\n\
         max_pending_password_hashes = {}\n\
         registrations_per_hour_per_address = {}\n\
         registrations_per_minute = {}\n\
         messages_per_second = {}\n\
         message_burst = {}\n\
         requests_per_second = {}\n\
         request_burst = {}\n\
         searches_per_second = {}\n\
         search_burst = {}\n",
        l.auth_attempts_per_minute_per_address,
        l.max_pending_password_hashes,
        l.registrations_per_hour_per_address,
        l.registrations_per_minute,
        l.messages_per_second,
        l.message_burst,
        l.requests_per_second,
        l.request_burst,
        l.searches_per_second,
        l.search_burst,
    );
    std::fs::write(data.path().join("salon.toml"), toml).expect("write the configuration");
}

impl ProcCluster {
    /// The nodes, node 1 first.
    pub fn nodes(&self) -> &[ProcNode] {
        &self.nodes
    }
}

/// Every id stored in `room`, read through `client`'s history, page by page.
async fn stored_ids(client: &Client, room: &str) -> HashSet<i64> {
    let mut ids = HashSet::new();
    let mut before = None;
    loop {
        let page = client
            .room_history(room, before, Some(100))
            .await
            .expect("history");
        before = page.messages.iter().map(|m| m.id).min();
        ids.extend(page.messages.iter().map(|m| m.id));
        if !page.more || before.is_none() {
            return ids;
        }
    }
}

/// Waits until `name` has no private message waiting (their client acknowledged what it
/// received; the acknowledgement may still be on its way).
async fn nothing_waiting(cluster: &ProcCluster, node: u16, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, welcome) = cluster.login(node, name).await;
        if welcome.offline_directs == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} private messages still waiting for {name}",
            welcome.offline_directs
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// A login on node `node` that must be refused: its error code.
async fn login_refused(cluster: &ProcCluster, node: u16, name: &str) -> Option<ErrorCode> {
    cluster
        .client(node)
        .await
        .login(name, PASSWORD)
        .await
        .expect_err("this login must be refused")
        .code()
}

#[tokio::test]
async fn messages_private_messages_and_presence_cross_three_processes() {
    let Some(cluster) = ProcCluster::start(3).await else {
        return;
    };
    let (mut alice, _) = cluster.user(1, "alice").await;
    let (mut bob, _) = cluster.user(2, "bob").await;
    let (mut carol, _) = cluster.user(3, "carol").await;
    cluster.register(1, "dave").await;

    // A room message from node 1 reaches the members on nodes 2 and 3, once.
    let sent = HashSet::from([alice
        .send("Général", "bonjour les processus")
        .await
        .unwrap()
        .id]);
    for (who, client) in [("bob on 2", &mut bob), ("carol on 3", &mut carol)] {
        let got = receive_all(client, who, &sent).await;
        exactly_once(who, &got, &sent);
    }

    // A private message from node 1 reaches bob live on node 2, once, and nobody else.
    let live = HashSet::from([alice.direct("bob", "en direct").await.unwrap().id]);
    let got = receive_all(&mut bob, "bob on 2", &live).await;
    exactly_once("bob on 2", &got, &live);
    none_of(&mut carol, "carol on 3", "Général").await;

    // One to dave, who is connected nowhere: he gets it when he logs in on node 3, once,
    // and it is no longer waiting at his next login on node 2.
    let offline = HashSet::from([alice.direct("dave", "en attente").await.unwrap().id]);
    let (mut dave, welcome) = cluster.login(3, "dave").await;
    assert_eq!(welcome.offline_directs, 1);
    let got = receive_all(&mut dave, "dave on 3", &offline).await;
    exactly_once("dave on 3", &got, &offline);
    nothing_waiting(&cluster, 2, "dave").await;

    // Presence: `who` on node 1 shows carol, on node 3, online, then offline once she
    // logs out; alice is told both ways.
    who_shows(&alice, "carol", Status::Online, WAIT).await;
    carol.logout().await.unwrap();
    presence_of(&mut alice, "carol", Status::Offline).await;
    who_shows(&alice, "carol", Status::Offline, WAIT).await;
}

#[tokio::test]
async fn join_requests_kicks_bans_and_broadcasts_cross_three_processes() {
    let Some(cluster) = ProcCluster::start(3).await else {
        return;
    };
    let (mut admin, _) = cluster.login(1, "admin").await;
    let (mut gina_2, _) = cluster.user(2, "gina").await;
    let (mut gina_3, _) = cluster.login(3, "gina").await;

    // A request made on node 2 reaches the administrator on node 1; the acceptance made
    // there reaches gina's session on node 3, which can then post in the room.
    gina_2.join("Informatique").await.unwrap();
    let request = expect_event(&mut admin, "join request", |e| match e {
        Event::JoinRequest(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (request.user.as_str(), request.room.as_str()),
        ("gina", "Informatique")
    );
    admin.accept("gina", "Informatique", None).await.unwrap();
    let state = expect_event(&mut gina_3, "decision on node 3", |e| match e {
        Event::Membership { room, .. }
            if room.name == "Informatique" && room.state != MemberState::Pending =>
        {
            Some(room.state)
        }
        _ => None,
    })
    .await;
    assert_eq!(state, MemberState::Member);
    gina_3.send("Informatique", "merci !").await.unwrap();

    // A kick and a ban from node 1 close the target's session on node 2 and refuse
    // their logins on node 3.
    let (mut eve, _) = cluster.user(2, "eve").await;
    admin
        .kick(args::Kick {
            user: "eve".into(),
            seconds: Some(60),
            reason: Some("flood".into()),
        })
        .await
        .unwrap();
    let (code, message) = expect_closing(&mut eve).await;
    assert_eq!(code, CloseCode::Kicked);
    assert!(message.contains("flood"), "{message}");
    assert_eq!(
        login_refused(&cluster, 3, "eve").await,
        Some(ErrorCode::Kicked)
    );
    let (mut frank, _) = cluster.user(2, "frank").await;
    admin.ban("frank", Some("spam")).await.unwrap();
    let (code, _) = expect_closing(&mut frank).await;
    assert_eq!(code, CloseCode::Banned);
    assert_eq!(
        login_refused(&cluster, 3, "frank").await,
        Some(ErrorCode::Banned)
    );

    // A broadcast from node 1 reaches sessions on every node.
    let (mut henri, _) = cluster.user(1, "henri").await;
    admin.broadcast("Maintenance à 18h").await.unwrap();
    for (who, client) in [
        ("henri on 1", &mut henri),
        ("gina on 2", &mut gina_2),
        ("gina on 3", &mut gina_3),
    ] {
        let text = expect_event(client, who, |e| match e {
            Event::Notice { text, .. } => Some(text.clone()),
            _ => None,
        })
        .await;
        assert_eq!(text, "Maintenance à 18h", "{who}");
    }
}

#[tokio::test]
async fn the_shutdown_command_on_one_process_stops_all_three() {
    let Some(mut cluster) = ProcCluster::start(3).await else {
        return;
    };
    let (mut admin, _) = cluster.login(1, "admin").await;
    let (mut bob, _) = cluster.user(2, "bob").await;
    let (mut carol, _) = cluster.user(3, "carol").await;
    admin
        .shutdown(Some(1), Some("mise à jour du cluster"))
        .await
        .unwrap();
    for (who, client) in [
        ("admin on 1", &mut admin),
        ("bob on 2", &mut bob),
        ("carol on 3", &mut carol),
    ] {
        let (code, message) = expect_closing(client).await;
        assert_eq!(
            (code, message.as_str()),
            (CloseCode::Shutdown, "mise à jour du cluster"),
            "{who}"
        );
    }
    // Every process exits by itself, successfully.
    for id in 1..=3 {
        let status = cluster.wait_exit(id).await;
        assert!(status.success(), "node {id} exited with {status}");
    }
}

#[tokio::test]
async fn the_randomized_authorization_model_holds_over_three_processes() {
    let Some(cluster) = ProcCluster::start(3).await else {
        return;
    };
    crate::authorization::run_model(cluster.nodes()).await;
}

/// The room of the load tests, its members and non-members: a sender and a reader per
/// node (by index, node id − 1) and an outsider per node, who is not a member.
const ROOM: &str = "Projet";
const SENDERS: [&str; 3] = ["sender1", "sender2", "sender3"];
const READERS: [&str; 3] = ["reader1", "reader2", "reader3"];
const OUTSIDERS: [&str; 3] = ["outsider1", "outsider2", "outsider3"];

/// Registers the load tests' users and makes the channel [`ROOM`] of the senders and
/// readers, through node 1; returns a session of its owner (a member) on node 1.
async fn load_room(cluster: &ProcCluster) -> Client {
    let names = SENDERS.iter().chain(&READERS).chain(&OUTSIDERS);
    futures_util::future::join_all(names.map(|name| cluster.register(1, name))).await;
    let (owner, _) = cluster.user(1, "owner").await;
    let members: Vec<&str> = SENDERS.iter().chain(&READERS).copied().collect();
    owner.create_channel(ROOM, &members).await.unwrap();
    owner
}

/// The room loaded, a reader and an outsider (not a member) logged in on each node, and
/// the senders sending until `stop`, messages flowing.
struct Loaded {
    owner: Client,
    readers: Vec<Client>,
    outsiders: Vec<Client>,
    stop: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<Vec<(i64, Instant)>>>,
}

async fn under_load(cluster: &ProcCluster) -> Loaded {
    let mut owner = load_room(cluster).await;
    let mut readers = Vec::new();
    let mut outsiders = Vec::new();
    for id in 1..=3 {
        readers.push(cluster.login(id, READERS[usize::from(id) - 1]).await.0);
        outsiders.push(cluster.login(id, OUTSIDERS[usize::from(id) - 1]).await.0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let senders = start_senders(cluster, &stop);
    flowing(&mut owner, 10).await;
    Loaded {
        owner,
        readers,
        outsiders,
        stop,
        senders,
    }
}

/// Starts one sender per node, each sending to [`ROOM`] until `stop` (moving to the next
/// node when its own goes away).
fn start_senders(
    cluster: &ProcCluster,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(i64, Instant)>>> {
    SENDERS
        .iter()
        .enumerate()
        .map(|(home, name)| {
            tokio::spawn(keep_sending(
                cluster.addrs(),
                home,
                name,
                ROOM,
                stop.clone(),
            ))
        })
        .collect()
}

/// Waits until `member` has received `n` messages of [`ROOM`] from each sender: they are
/// logged in and sending.
async fn flowing(member: &mut Client, n: usize) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    while SENDERS
        .iter()
        .any(|s| counts.get(*s).copied().unwrap_or(0) < n)
    {
        let author = expect_event(member, "the senders' messages", |e| match e {
            Event::Message(m) if m.room == ROOM => Some(m.author.clone()),
            _ => None,
        })
        .await;
        *counts.entry(author).or_default() += 1;
    }
}

/// Stops the senders; every acknowledgement, with when it came.
async fn stop_senders(
    stop: &AtomicBool,
    senders: Vec<tokio::task::JoinHandle<Vec<(i64, Instant)>>>,
) -> Vec<(i64, Instant)> {
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for sender in senders {
        acked.extend(sender.await.unwrap());
    }
    acked
}

#[tokio::test]
async fn a_process_killed_with_sigkill_under_load_loses_and_repeats_nothing_acknowledged() {
    let Some(mut cluster) = ProcCluster::start(3).await else {
        return;
    };
    let Loaded {
        owner,
        mut readers,
        mut outsiders,
        stop,
        senders,
    } = under_load(&cluster).await;
    // Node 3 dies mid-flight: whatever it acknowledged before must be stored, and reach
    // the members on the other nodes.
    cluster.kill9(3).await;
    sleep(Duration::from_millis(1_500)).await;
    let acked = stop_senders(&stop, senders).await;
    let ids: HashSet<i64> = acked.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), acked.len(), "one id acknowledged twice");
    assert!(
        acked.len() > 100,
        "under load: {} acknowledged",
        acked.len()
    );

    let stored = stored_ids(&owner, ROOM).await;
    eprintln!(
        "kill -9: {} acknowledged, {} stored",
        acked.len(),
        stored.len()
    );
    let lost: Vec<_> = ids.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged, not stored: {lost:?}");
    // The members on the surviving nodes, connected throughout: every acknowledged
    // message once, and only stored ones (a message stored whose acknowledgement died
    // with node 3 may come too).
    for (i, reader) in readers.iter_mut().enumerate().take(2) {
        let who = format!("{} on node {}", READERS[i], i + 1);
        let got = receive_all(reader, &who, &ids).await;
        exactly_once(&who, &got, &stored);
    }
    for (i, outsider) in outsiders.iter_mut().enumerate().take(2) {
        none_of(outsider, OUTSIDERS[i], ROOM).await;
    }
}

#[tokio::test]
async fn a_nats_cut_of_one_process_under_load_loses_and_repeats_nothing_acknowledged() {
    let Some(cluster) = ProcCluster::start(3).await else {
        return;
    };
    let Loaded {
        owner,
        mut readers,
        mut outsiders,
        stop,
        senders,
    } = under_load(&cluster).await;
    drop(owner);
    // Node 2 loses NATS for 1.5 s while every node keeps storing and acknowledging.
    cluster.cut(2);
    sleep(Duration::from_millis(1_500)).await;
    cluster.heal(2);
    sleep(Duration::from_millis(1_000)).await;
    let acked = stop_senders(&stop, senders).await;
    let ids: HashSet<i64> = acked.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), acked.len(), "one id acknowledged twice");
    assert!(
        acked.len() > 100,
        "under load: {} acknowledged",
        acked.len()
    );

    // Every member on every node gets every acknowledged message once (node 2's from
    // the database for what it missed, the others' likewise for node 2's), and nothing
    // reaches a non-member.
    for (i, reader) in readers.iter_mut().enumerate() {
        let who = format!("{} on node {}", READERS[i], i + 1);
        let got = receive_all(reader, &who, &ids).await;
        exactly_once(&who, &got, &ids);
    }
    for (i, outsider) in outsiders.iter_mut().enumerate() {
        none_of(outsider, OUTSIDERS[i], ROOM).await;
    }
}

/// A reader's session on one node between two restarts of it: what it received, from
/// when it was attached until its node was told to stop.
struct Segment {
    who: String,
    since: Instant,
    until: Option<Instant>,
    received: tokio::task::JoinHandle<Vec<i64>>,
}

/// Attaches `name` on node `id` again: with the token of its last session (`resume`),
/// or a new login the first time; the segment and the token.
async fn attach(
    cluster: &ProcCluster,
    id: u16,
    name: &str,
    token: Option<&str>,
) -> (Segment, String) {
    let client = cluster.client(id).await;
    let welcome = match token {
        Some(token) => client.resume(token).await.expect("resume"),
        None => client.login(name, PASSWORD).await.expect("login"),
    };
    let segment = Segment {
        who: format!("{name} on node {id}"),
        since: Instant::now(),
        until: None,
        received: collect_room(client, ROOM),
    };
    (segment, welcome.token)
}

#[tokio::test]
async fn a_rolling_restart_of_three_processes_under_load_loses_no_acknowledged_message() {
    let Some(cluster) = ProcCluster::start(3).await else {
        return;
    };
    rolling_restart(cluster, false).await;
}

/// The previous version's `salon`, built by `scripts/test.sh` from the commit named in
/// `scripts/previous-version` (`SALON_PREVIOUS_BINARY`); `None`, and the test is skipped
/// loudly, when it is not set, unless `SALON_REQUIRE_SERVICES=1`.
fn previous_binary() -> Option<PathBuf> {
    match std::env::var_os("SALON_PREVIOUS_BINARY") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "SALON_PREVIOUS_BINARY: no file at {path:?}");
            Some(path)
        }
        None if std::env::var("SALON_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!(
                "SALON_PREVIOUS_BINARY is not set and SALON_REQUIRE_SERVICES=1 (scripts/test.sh sets it)"
            )
        }
        None => {
            eprintln!(
                "\n=== SKIPPED: the rolling upgrade test needs the previous version's binary \
                 in SALON_PREVIOUS_BINARY (scripts/test.sh builds it) ===\n"
            );
            None
        }
    }
}

/// Three nodes of the previous version (`scripts/previous-version`), under load, upgraded one
/// by one to this build as an operator would (SIGTERM, new binary, start): the first
/// upgraded node migrates the shared database under the two older nodes still serving,
/// and the two versions exchange bus messages until the last is upgraded. The same
/// checks as the rolling restart: no acknowledged message lost, none twice, none to a
/// non-member.
#[tokio::test]
async fn a_rolling_upgrade_from_the_previous_version_under_load_loses_no_acknowledged_message() {
    if backend() == Backend::Sqlite {
        eprintln!("cluster test: needs PostgreSQL or MariaDB, run in those passes");
        return;
    }
    let Some(previous) = previous_binary() else {
        return;
    };
    let Some(cluster) = ProcCluster::start_on(3, previous).await else {
        return;
    };
    rolling_restart(cluster, true).await;
}

/// SIGTERM and start again node 1, then 2, then 3 (each on this build's binary if
/// `upgrade`) while senders send, and check what each node's reader received.
async fn rolling_restart(mut cluster: ProcCluster, upgrade: bool) {
    // A message acknowledged this long before its reader's node is told to stop must
    // have reached that reader: far more than a bus hop and a delivery take, even on a
    // busy machine.
    const SETTLE: Duration = Duration::from_millis(1_000);
    let mut owner = load_room(&cluster).await;
    let mut tokens: HashMap<u16, String> = HashMap::new();
    let mut current: HashMap<u16, Segment> = HashMap::new();
    let mut done: Vec<Segment> = Vec::new();
    let mut outsiders = Vec::new();
    let (readers, others) = tokio::join!(
        futures_util::future::join_all((1..=3).map(|id| attach(
            &cluster,
            id,
            READERS[usize::from(id) - 1],
            None
        ))),
        futures_util::future::join_all(
            (1..=3).map(|id| cluster.login(id, OUTSIDERS[usize::from(id) - 1]))
        ),
    );
    for (id, (segment, token)) in (1..=3).zip(readers) {
        current.insert(id, segment);
        tokens.insert(id, token);
    }
    outsiders.extend(others.into_iter().map(|(c, _)| collect_room(c, ROOM)));
    let stop = Arc::new(AtomicBool::new(false));
    let senders = start_senders(&cluster, &stop);
    flowing(&mut owner, 10).await;
    drop(owner);

    // SIGTERM and start again node 1, then 2, then 3, while the senders send (each
    // moving to the next node when its own stops). The reader of the restarted node
    // resumes its session there; the outsider logs in again.
    for id in 1..=3 {
        sleep(Duration::from_millis(1_200)).await;
        let mut segment = current.remove(&id).expect("a reader");
        segment.until = Some(Instant::now());
        cluster.term(id).await;
        done.push(segment);
        if upgrade {
            cluster.upgrade(id);
        }
        cluster.restart(id).await;
        let name = READERS[usize::from(id) - 1];
        let token = tokens.get(&id).map(String::as_str);
        let ((segment, token), (outsider, _)) = tokio::join!(
            attach(&cluster, id, name, token),
            cluster.login(id, OUTSIDERS[usize::from(id) - 1]),
        );
        current.insert(id, segment);
        tokens.insert(id, token);
        outsiders.push(collect_room(outsider, ROOM));
    }
    sleep(Duration::from_millis(1_000)).await;
    let acked = stop_senders(&stop, senders).await;
    let stopped = Instant::now();
    eprintln!("rolling restart: {} acknowledged", acked.len());
    assert!(
        acked.len() > 100,
        "under load: {} acknowledged",
        acked.len()
    );

    // The sessions still attached read until the messages stop coming (a new session's
    // presence event would keep them reading: the owner logs in after).
    done.extend(current.into_values());
    let mut received = Vec::new();
    for segment in done {
        let ids = segment.received.await.unwrap();
        received.push((segment.who, segment.since, segment.until, ids));
    }
    for outsider in outsiders {
        let got = outsider.await.unwrap();
        assert!(got.is_empty(), "a non-member received {got:?}");
    }
    // Nothing acknowledged is missing from storage (read on node 1, restarted since the
    // owner's first session there).
    let stored = stored_ids(&cluster.login(1, "owner").await.0, ROOM).await;
    let lost: Vec<_> = acked
        .iter()
        .filter(|(id, _)| !stored.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged, not stored: {lost:?}");
    // Each reader's session got, once each, every message acknowledged while it was
    // attached (up to its node's stop, less the settling time), and only stored ones.
    for (who, since, until, received) in received {
        // A session still attached at the end read until the messages stopped: no
        // settling time.
        let (until, settle) = match until {
            Some(until) => (until, SETTLE),
            None => (stopped, Duration::ZERO),
        };
        let once: HashSet<i64> = received.iter().copied().collect();
        assert_eq!(once.len(), received.len(), "{who} received a message twice");
        let stray: Vec<_> = once.difference(&stored).collect();
        assert!(stray.is_empty(), "{who} received unstored {stray:?}");
        let due: Vec<i64> = acked
            .iter()
            .filter(|(_, at)| *at > since && *at + settle < until)
            .map(|(id, _)| *id)
            .collect();
        eprintln!("{who}: {} due, {} received", due.len(), once.len());
        assert!(
            due.len() > 20,
            "{who}: only {} messages to check",
            due.len()
        );
        let missing: Vec<_> = due.iter().filter(|id| !once.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "{who} never received {} of {} acknowledged while attached: {missing:?}",
            missing.len(),
            due.len()
        );
    }
}

/// Node 3, cut from NATS, stores and acknowledges messages of dora's that only its own
/// sessions hear of (its bus messages wait in its queue), then is killed with SIGKILL:
/// the window between a message's acknowledgement and its publication on NATS, held
/// open. Returns the acknowledged ids.
async fn acknowledged_by_a_cut_node_then_killed(cluster: &mut ProcCluster) -> HashSet<i64> {
    let (dora, _) = cluster.user(3, "dora").await;
    cluster.cut(3);
    let mut sent = HashSet::new();
    for i in 0..5 {
        let accepted = dora.send("Général", &format!("coupé {i}")).await.unwrap();
        sent.insert(accepted.id);
    }
    cluster.kill9(3).await;
    sent
}

#[tokio::test]
async fn what_a_killed_process_acknowledged_unpublished_reaches_the_others_once_it_expires() {
    let Some(mut cluster) = ProcCluster::start(3).await else {
        return;
    };
    let (mut bob, _) = cluster.user(1, "bob").await;
    let (mut carol, _) = cluster.user(2, "carol").await;
    let sent = acknowledged_by_a_cut_node_then_killed(&mut cluster).await;
    // Its bus messages died with it: the others catch up from the database when they
    // take it for dead (5 s without a word).
    for (who, client) in [("bob on 1", &mut bob), ("carol on 2", &mut carol)] {
        let got = receive_all(client, who, &sent).await;
        exactly_once(who, &got, &sent);
    }
}

#[tokio::test]
async fn what_a_killed_process_acknowledged_unpublished_reaches_the_others_once_it_restarts() {
    let Some(mut cluster) = ProcCluster::start(3).await else {
        return;
    };
    let (mut bob, _) = cluster.user(1, "bob").await;
    let (mut carol, _) = cluster.user(2, "carol").await;
    let sent = acknowledged_by_a_cut_node_then_killed(&mut cluster).await;
    // Back within a second, before anyone takes it for dead: its new boot tells the
    // others that what its last one had not published yet may be lost.
    cluster.heal(3);
    let restarted = Instant::now();
    cluster.restart(3).await;
    for (who, client) in [("bob on 1", &mut bob), ("carol on 2", &mut carol)] {
        let got = receive_all(client, who, &sent).await;
        exactly_once(who, &got, &sent);
    }
    assert!(
        restarted.elapsed() < Duration::from_secs(4),
        "caught up only after {:?}: by the expiry, not the new boot",
        restarted.elapsed()
    );
}

/// How many times node `id` found it may have missed bus messages from another node
/// (`gap`: a jump in its numbers or a new boot; `node_gone`: taken for dead).
async fn missed_from_others(cluster: &ProcCluster, id: u16) -> f64 {
    let text = scrape_metrics(cluster.node(id).metrics).await;
    ["gap", "node_gone"]
        .iter()
        .map(|why| {
            metric(
                &text,
                &format!("salon_cluster_bus_missed_total{{why=\"{why}\"}}"),
            )
        })
        .sum()
}

#[tokio::test]
async fn a_node_stopped_cleanly_says_goodbye_and_its_restart_costs_the_others_no_catch_up() {
    let Some(mut cluster) = ProcCluster::start(3).await else {
        return;
    };
    let (mut bob, _) = cluster.user(1, "bob").await;
    let (alice, _) = cluster.user(2, "alice").await;
    let first = HashSet::from([alice.send("Général", "avant").await.unwrap().id]);
    exactly_once(
        "bob on 1",
        &receive_all(&mut bob, "bob on 1", &first).await,
        &first,
    );
    drop(alice);

    // SIGTERM: node 2 drains and says goodbye. Its new boot, once heard, is then a first
    // one to nodes 1 and 3, not a gap they would catch up from; nor is it taken for dead
    // (longer than the 5 s expiry before it comes back).
    cluster.term(2).await;
    sleep(Duration::from_millis(5_500)).await;
    cluster.restart(2).await;
    let (alice, _) = cluster.login(2, "alice").await;
    let second = HashSet::from([alice.send("Général", "après").await.unwrap().id]);
    exactly_once(
        "bob on 1",
        &receive_all(&mut bob, "bob on 1", &second).await,
        &second,
    );
    // Node 2's heartbeats reach node 3 too (a second of them at least).
    sleep(Duration::from_millis(1_500)).await;
    for id in [1, 3] {
        assert_eq!(
            missed_from_others(&cluster, id).await,
            0.0,
            "node {id} caught up after a clean stop"
        );
    }

    // A kill -9 says nothing: the others take it for dead and catch up (the check above
    // can fail).
    cluster.kill9(2).await;
    eventually_within(
        Duration::from_secs(15),
        "node 1 never took node 2 for dead",
        Duration::from_millis(200),
        || async { missed_from_others(&cluster, 1).await > 0.0 },
    )
    .await;
}

#[tokio::test]
async fn a_bus_message_only_a_newer_version_sends_is_skipped_and_caught_up_from_the_database() {
    let Some(cluster) = ProcCluster::start(2).await else {
        return;
    };
    let (mut bob, _) = cluster.user(1, "bob").await;
    let (alice, _) = cluster.user(2, "alice").await;
    let url = crate::cluster::nats()
        .await
        .expect("NATS, as the cluster has");
    let nats = async_nats::connect(url.as_str())
        .await
        .expect("connect to NATS");
    // Node 9, of a newer version during a rolling upgrade, publishes a barrier, a kind
    // of message this version does not know, another barrier, then says goodbye.
    let at = real_now_ms();
    let messages = [
        r#"{"Barrier":{"node":9,"token":1}}"#,
        r#"{"FromANewerVersion":{"room":1,"what":"unknown here"}}"#,
        r#"{"Barrier":{"node":9,"token":2}}"#,
        r#"{"Goodbye":{"node":9}}"#,
    ];
    for (seq, message) in (1..).zip(messages) {
        let envelope =
            format!(r#"{{"node":9,"boot":77,"seq":{seq},"at":{at},"message":{message}}}"#);
        nats.publish(format!("{}.bus", cluster.name), envelope.into())
            .await
            .expect("publish on the bus");
    }
    nats.flush().await.expect("flush to NATS");
    // Each node skips what it cannot read, and the jump it then sees in node 9's numbers
    // makes it catch up from the database, as after any message lost.
    for id in [1, 2] {
        eventually_within(
            Duration::from_secs(10),
            &format!("node {id} did not catch up after the unreadable message"),
            Duration::from_millis(100),
            || async { missed_from_others(&cluster, id).await > 0.0 },
        )
        .await;
        let log = std::fs::read_to_string(cluster.node(id).log_path()).unwrap_or_default();
        assert!(
            log.contains("an unreadable message on the cluster bus"),
            "node {id} did not say it skipped a message; its log:\n{log}"
        );
    }
    // The cluster goes on as before: a message sent on node 2 reaches bob on node 1 once.
    let sent = HashSet::from([alice.send("Général", "après").await.unwrap().id]);
    exactly_once(
        "bob on 1",
        &receive_all(&mut bob, "bob on 1", &sent).await,
        &sent,
    );
}
