//! Test helpers: a real server on 127.0.0.1:0 with a temporary database, driven through
//! the real client library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use salon_client::{Client, Incoming};
use salon_proto::{args, ErrorCode, Event, Welcome};
use salon_server::{Config, Deps, Endpoint, Listeners, ManualClock};
use tempfile::TempDir;
use tokio::io::DuplexStream;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The password every test user gets (strong enough for the server's rules).
pub const PASSWORD: &str = "correct horse battery staple";
/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// Waits until `done` answers true, asking every `every`, for [`WAIT`] at most; past it,
/// fails with `what`.
pub async fn eventually<F, Fut>(what: &str, every: Duration, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(WAIT, what, every, done).await;
}

/// [`eventually`], waiting `within` at most.
pub async fn eventually_within<F, Fut>(within: Duration, what: &str, every: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(every).await;
    }
}

/// The database backend the suite runs against: `SALON_TEST_BACKEND` = `sqlite`
/// (default), `postgres` or `mysql`. `scripts/test.sh` runs the suite once per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

pub fn backend() -> Backend {
    match std::env::var("SALON_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("mysql") => Backend::MySql,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("SALON_TEST_BACKEND={other:?}: use sqlite, postgres or mysql"),
    }
}

/// The server URL that test databases are created on.
fn admin_url(backend: Backend) -> String {
    let (var, default) = match backend {
        Backend::Postgres => (
            "SALON_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        Backend::MySql => ("SALON_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        Backend::Sqlite => unreachable!("SQLite needs no server"),
    };
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// A database of its own for one test on PostgreSQL or MariaDB, dropped at the end.
struct TestDatabase {
    backend: Backend,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create(backend: Backend) -> TestDatabase {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "salon_t_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            real_now_ms() % 1_000_000
        );
        let admin = admin_url(backend);
        let create = match backend {
            Backend::Postgres => format!("CREATE DATABASE {name} ENCODING 'UTF8'"),
            _ => format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"),
        };
        on_server(&admin, &create).unwrap_or_else(|e| {
            panic!(
                "cannot create a test database on {admin} ({e}). Is the {backend:?} service \
                 running? scripts/test.sh skips this backend when it is unreachable."
            )
        });
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        TestDatabase {
            backend,
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // The test's server may still be stopping (a `TestServer` dropped without
        // `stop`) with connections open, and this drop blocks the test's runtime, so it
        // cannot close them: the database's sessions are ended first. PostgreSQL's FORCE
        // does that; on MariaDB they are killed, and the DROP waits for locks 30 s at
        // most rather than forever.
        let result = match self.backend {
            Backend::Postgres => on_server(
                &admin_url(self.backend),
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ),
            _ => drop_mysql_database(&admin_url(self.backend), &self.name),
        };
        if let Err(e) = result {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Kills the sessions using a MariaDB/MySQL database, then drops it (own thread, as
/// `on_server`).
fn drop_mysql_database(url: &str, name: &str) -> Result<(), String> {
    let (url, name) = (url.to_owned(), name.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            use sqlx::{Connection, Executor, Row};
            sqlx::any::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let sessions =
                sqlx::query("SELECT id FROM information_schema.processlist WHERE db = ?")
                    .bind(name.as_str())
                    .fetch_all(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            for session in sessions {
                let id: i64 = session.try_get(0).map_err(|e| e.to_string())?;
                // Already gone is fine.
                let _ = conn.execute(format!("KILL {id}").as_str()).await;
            }
            conn.execute("SET SESSION lock_wait_timeout = 30")
                .await
                .map_err(|e| e.to_string())?;
            conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "panicked".to_string())?
}

/// Runs one statement on the database server, on a thread of its own (callable from
/// `Drop` and from inside a runtime).
fn on_server(url: &str, statement: &str) -> Result<(), String> {
    let (url, statement) = (url.to_owned(), statement.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            use sqlx::{Connection, Executor};
            sqlx::any::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            conn.execute(statement.as_str())
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "panicked".to_string())?
}

/// Where a test server keeps its data — a temporary directory, and on PostgreSQL or
/// MariaDB a database of its own; survives restarts of the server.
pub struct DataDir {
    inner: Arc<(TempDir, Option<TestDatabase>)>,
}

impl DataDir {
    pub fn new() -> DataDir {
        let database = match backend() {
            Backend::Sqlite => None,
            other => Some(TestDatabase::create(other)),
        };
        DataDir {
            inner: Arc::new((TempDir::new().expect("temporary directory"), database)),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.inner.0.path().to_owned()
    }

    /// The database URL when not the embedded SQLite.
    pub fn database_url(&self) -> Option<String> {
        self.inner.1.as_ref().map(|db| db.url.clone())
    }

    /// `salon` flags selecting this data: `--data-dir`, plus `--database-url` if any.
    pub fn server_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--data-dir".into(), self.path().into_os_string()];
        if let Some(url) = self.database_url() {
            args.push("--database-url".into());
            args.push(url.into());
        }
        args
    }

    /// Another handle on the same data (a second node on the same database).
    pub fn share(&self) -> DataDir {
        self.clone_handle()
    }

    fn clone_handle(&self) -> DataDir {
        DataDir {
            inner: self.inner.clone(),
        }
    }
}

/// Limits relaxed so that tests exercising other things are not rate limited (tests of
/// the limits set them back).
pub fn test_config(data: &DataDir) -> Config {
    let mut config = Config {
        data_dir: data.path(),
        database_url: data.database_url(),
        // The first administrator, `admin`, gets the test password.
        admin_password: Some(PASSWORD.into()),
        ..Config::default()
    };
    let l = &mut config.limits;
    l.auth_attempts_per_minute_per_address = 100_000;
    l.max_pending_password_hashes = 10_000;
    l.registrations_per_hour_per_address = 100_000;
    l.registrations_per_minute = 100_000;
    l.messages_per_second = 100_000;
    l.message_burst = 100_000;
    l.channels_per_hour_per_user = 100_000;
    l.join_requests_per_hour_per_user = 100_000;
    l.requests_per_second = 100_000;
    l.request_burst = 100_000;
    l.searches_per_second = 100_000;
    l.search_burst = 100_000;
    config
}

pub struct TestServer {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// The plaintext redirecting listener, when `tls.redirect_listen` is configured.
    pub redirect: Option<SocketAddr>,
    /// The metrics listener (`/metrics`), unless `metrics` is off.
    pub metrics: Option<SocketAddr>,
    /// How clients connect when the server has TLS: the certificate file as the only
    /// trusted one, checked for the name `localhost`.
    pub client_tls: Option<salon_client::TlsOptions>,
    pub data: DataDir,
    pub clock: Arc<ManualClock>,
    /// In-process connections, as the console makes them (`Listeners::local`).
    pub local: mpsc::Sender<DuplexStream>,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), salon_server::Error>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test configuration adjusted by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        let data = DataDir::new();
        let mut config = test_config(&data);
        tune(&mut config);
        let clock = Arc::new(ManualClock::new(real_now_ms()));
        Self::launch(config, data, clock).await
    }

    /// Starts on an existing data directory with the test configuration adjusted by `tune`.
    pub async fn start_on(data: DataDir, tune: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config(&data);
        tune(&mut config);
        let clock = Arc::new(ManualClock::new(real_now_ms()));
        Self::launch(config, data, clock).await
    }

    async fn launch(config: Config, data: DataDir, clock: Arc<ManualClock>) -> TestServer {
        init_logging();
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let (tcp_addr, http_addr) = (tcp.local_addr().unwrap(), http.local_addr().unwrap());
        let redirect = match config.tls.redirect_listen {
            Some(_) => Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind redirect"),
            ),
            None => None,
        };
        let redirect_addr = redirect.as_ref().map(|l| l.local_addr().unwrap());
        let metrics = match config.metrics {
            true => Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind metrics"),
            ),
            false => None,
        };
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr().unwrap());
        let client_tls = config.tls.enabled().then(|| salon_client::TlsOptions {
            ca_file: Some(match &config.tls.cert {
                Some(cert) => test_ca_of(cert),
                None => data.path().join("tls").join("self-signed.crt"),
            }),
            server_name: Some("localhost".into()),
            insecure_skip_verify: false,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let (local, local_rx) = mpsc::channel(4);
        let deps = Deps {
            clock: clock.clone(),
        };
        let task = tokio::spawn(salon_server::run(
            config.clone(),
            Listeners {
                local: Some(local_rx),
                ..Listeners::default()
            }
            .with(Endpoint::Native, tcp)
            .with(Endpoint::Http, http)
            .with_optional(Endpoint::Redirect, redirect)
            .with_optional(Endpoint::Metrics, metrics),
            deps,
            async move {
                let _ = stopped.await;
            },
        ));
        let server = TestServer {
            tcp: tcp_addr,
            http: http_addr,
            redirect: redirect_addr,
            metrics: metrics_addr,
            client_tls,
            data,
            clock,
            local,
            config,
            stop: Some(stop),
            task: Some(task),
        };
        // Ready once a client gets its hello (migrations done, loops running). With a
        // self-signed certificate, its file appears when the server has made it.
        if let Some(tls) = &server.client_tls {
            let deadline = tokio::time::Instant::now() + WAIT;
            while Client::connect_tls(&tcp_addr.to_string(), tls)
                .await
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "TLS server never ready"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        server.client().await;
        server
    }

    /// Stops gracefully and waits until the server has fully stopped.
    pub async fn stop(mut self) -> (Config, DataDir, Arc<ManualClock>) {
        self.shutdown().await;
        (
            self.config.clone(),
            self.data.clone_handle(),
            self.clock.clone(),
        )
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within 30 s")
                .expect("server task did not panic")
                .expect("server stopped without error");
        }
    }

    /// The server's (manual) clock now.
    pub fn clock_now(&self) -> i64 {
        salon_server::Clock::now_ms(&*self.clock)
    }

    /// Waits until the server stops by itself (an administrator's shutdown).
    pub async fn wait_stopped(mut self) -> (Config, DataDir, Arc<ManualClock>) {
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("server stops by itself")
                .expect("server task did not panic")
                .expect("server stopped without error");
        }
        (
            self.config.clone(),
            self.data.clone_handle(),
            self.clock.clone(),
        )
    }

    /// Starts on an existing data directory (after `stop`, or after a killed process).
    pub async fn restart_from(
        config: Config,
        data: DataDir,
        clock: Arc<ManualClock>,
    ) -> TestServer {
        Self::launch(config, data, clock).await
    }

    /// Stops gracefully and starts again on the same database.
    pub async fn restart(self) -> TestServer {
        let (config, data, clock) = self.stop().await;
        Self::launch(config, data, clock).await
    }

    pub async fn client(&self) -> Client {
        match &self.client_tls {
            Some(tls) => Client::connect_tls(&self.tcp.to_string(), tls)
                .await
                .expect("connect over TLS"),
            None => Client::connect_tcp(self.tcp).await.expect("connect"),
        }
    }

    pub async fn ws_client(&self) -> Client {
        match &self.client_tls {
            Some(tls) => Client::connect_ws_with(&format!("wss://{}/ws", self.http), tls)
                .await
                .expect("connect wss"),
            None => Client::connect_ws(&format!("ws://{}/ws", self.http))
                .await
                .expect("connect ws"),
        }
    }

    /// Registers `name` (alias: capitalised name) without logging in.
    pub async fn register(&self, name: &str) {
        let c = self.client().await;
        c.register(registration(name)).await.expect("register");
    }

    /// Registers `name` and returns a logged-in client.
    pub async fn user(&self, name: &str) -> (Client, Welcome) {
        self.register(name).await;
        self.login(name).await
    }

    /// A new logged-in session of an existing user.
    pub async fn login(&self, name: &str) -> (Client, Welcome) {
        let c = self.client().await;
        let welcome = c.login(name, PASSWORD).await.expect("login");
        (c, welcome)
    }

    /// Logs in on a new connection, which must be refused; returns the error code.
    pub async fn login_refused(&self, login: &str, password: &str) -> Option<ErrorCode> {
        self.client()
            .await
            .login(login, password)
            .await
            .expect_err("this login must be refused")
            .code()
    }

    pub fn store_url(&self) -> String {
        self.config.effective_database_url()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Server logs in test output when `SALON_TEST_LOG` is set (e.g. `warn`, `debug`).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("SALON_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

pub fn alias_of(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub fn registration(name: &str) -> args::Register {
    args::Register {
        username: name.into(),
        alias: alias_of(name),
        first_name: "Test".into(),
        last_name: "User".into(),
        password: PASSWORD.into(),
        invite: None,
    }
}

pub fn real_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A free port on loopback for a child process's listener, which binds it a moment later.
///
/// `bind(0)` would hand out a port from the kernel's ephemeral range (32768–60999 on
/// Linux), the range every in-process test server's `bind(0)` and every outgoing
/// connection also draws from: in the moment between this check and the child's own
/// bind, another test could take it, and the child then fails to start or, worse, a
/// test talks to another test's server (seen in CI). So the port is taken below that
/// range, from a counter that never hands out the same port twice in this process,
/// starting at an offset of the process id so that two test runs side by side start
/// apart; a port something else already listens on is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % SPAN).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN)
}

/// A client of a server started as a child process, once it accepts connections.
pub async fn connect_when_ready(port: u16) -> Client {
    for _ in 0..400 {
        if let Ok(c) = Client::connect_tcp(("127.0.0.1", port)).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the child server never accepted connections on port {port}")
}

/// Waits for the first pushed item matching `pick`, skipping others.
pub async fn expect<T>(
    client: &mut Client,
    what: &str,
    mut pick: impl FnMut(&Incoming) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, client.next_event()).await {
            Ok(Some(item)) => {
                if let Some(found) = pick(&item) {
                    return found;
                }
            }
            Ok(None) => panic!("connection ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Waits for an event matching `pick`.
pub async fn expect_event<T>(
    client: &mut Client,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    expect(client, what, |i| match i {
        Incoming::Event(e) => pick(e),
        _ => None,
    })
    .await
}

/// Asserts that nothing matching `bad` arrives within [`QUIET`].
pub async fn expect_none(client: &mut Client, what: &str, mut bad: impl FnMut(&Incoming) -> bool) {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, client.next_event()).await {
            Ok(Some(item)) => assert!(!bad(&item), "unexpected {what}: {item:?}"),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Waits until the connection is closed by the server and returns its closing reason.
pub async fn expect_closing(client: &mut Client) -> (salon_proto::CloseCode, String) {
    expect(client, "closing frame", |i| match i {
        Incoming::Closing { code, message, .. } => Some((*code, message.clone())),
        _ => None,
    })
    .await
}

/// The message event's text, if `e` is a room message in `room`.
pub fn room_text(e: &Event, room: &str) -> Option<String> {
    match e {
        Event::Message(m) if m.room == room => Some(m.text.clone()),
        _ => None,
    }
}

/// The CA file of a test certificate made by [`TestCa`]: `ca.pem` next to it.
fn test_ca_of(cert: &std::path::Path) -> PathBuf {
    cert.with_file_name("ca.pem")
}

/// A certificate authority made with rcgen for a test, and certificates it signs.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// A certificate for `localhost` and `127.0.0.1`: (chain PEM, key PEM).
    pub fn issue(&self) -> (String, String) {
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes `ca.pem`, `cert.pem` (a new certificate) and `key.pem` into `dir`; returns
    /// the certificate and key paths.
    pub fn write_into(&self, dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let (chain, key) = self.issue();
        std::fs::write(dir.join("ca.pem"), self.pem()).expect("write CA");
        std::fs::write(dir.join("cert.pem"), chain).expect("write certificate");
        std::fs::write(dir.join("key.pem"), key).expect("write key");
        (dir.join("cert.pem"), dir.join("key.pem"))
    }
}

/// A plain HTTP/1.1 GET on the server's HTTP listener (no TLS): the status code and body.
pub async fn http_get(server: &TestServer, path: &str) -> (u16, String) {
    http_get_as(server, &server.http.to_string(), path).await
}

/// [`http_get`] naming `host` in its `Host` header.
pub async fn http_get_as(server: &TestServer, host: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an HTTP answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, body.to_owned())
}

/// `/metrics` of a metrics listener (the process-wide figures: tests run side by side, so
/// check that a counter grew, never its exact value).
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("scraped in time")
        .unwrap();
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    body.to_owned()
}

/// The value of one Prometheus series (`name` or `name{labels}` exactly as rendered), 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// The standard output of a finished `salon` process, which must have succeeded (its
/// standard error is shown otherwise).
pub fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
