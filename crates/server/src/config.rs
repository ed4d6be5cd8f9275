//! Server configuration: a TOML file, overridden by environment variables and flags (the
//! binary maps those onto [`Config`]). Every limit the server enforces is named here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything `salon serve` can be told. Unknown keys are an error, so a typo in the file
/// is reported rather than silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Native protocol over TCP (one JSON frame per line).
    pub listen: SocketAddr,
    /// HTTP: WebSocket endpoint `/ws` (and later the web client).
    pub http_listen: SocketAddr,
    /// Where the embedded database lives when `database_url` is not set.
    pub data_dir: PathBuf,
    /// `sqlite://…`, `postgres://…` or `mysql://…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// SQLite only: the largest the database may grow, in MiB. Past it, writes are refused
    /// `unavailable` as on a full disk, and accepted again once space is freed. Unset:
    /// unlimited.
    pub sqlite_max_size_mb: Option<u64>,
    /// Where attached files are stored, by content hash; default `data_dir/files`. With
    /// several nodes (issue 16) every node must mount the same directory (a shared POSIX
    /// filesystem): files are written once under their hash and moved into place
    /// atomically, so nodes never see half a file.
    pub files_dir: Option<PathBuf>,
    /// Password of the first administrator (`admin`), created when the database has no
    /// administrator. Never read from the file (environment or flag only); when absent a
    /// random one is generated and shown once.
    #[serde(skip)]
    pub admin_password: Option<String>,
    /// This server's node number, 0 to 13, unique among the servers sharing one database:
    /// it is part of every id the server makes, so that two nodes never make the same.
    /// (14 and 15 are reserved for the offline tools: `salon admin adduser`, the bench.)
    pub node_id: u16,
    /// Lock the server console after this many seconds without a command.
    pub console_idle_lock_secs: u64,
    /// How accounts come to exist: `open` (anyone registers), `approval` (an
    /// administrator approves each new account before it can log in), `invite` (a
    /// single-use invitation code from an administrator is needed) or `closed` (only
    /// administrators create accounts).
    pub registration: salon_proto::RegistrationMode,
    /// Origins (`scheme://host[:port]`) besides the server's own whose web pages may open
    /// the WebSocket `/ws`, e.g. `["https://chat.example.com"]`. The server's own origin
    /// (the `Host` header's, `http` or `https` as served) is always allowed, and so are
    /// clients that send no `Origin` (non-browser clients); any other is refused with 403.
    pub allowed_origins: Vec<String>,
    /// Host names the HTTP listener answers to when it serves plain HTTP (no TLS), e.g.
    /// `["chat.example.internal"]`, besides IP addresses and `localhost`: a request
    /// naming another host is refused (421), so that a web page whose name was made to
    /// point at this server (DNS rebinding) cannot use it from an employee's browser.
    /// With TLS, the certificate already refuses other names.
    pub allowed_hosts: Vec<String>,
    /// Serve Prometheus metrics at `/metrics` on `metrics_listen`.
    pub metrics: bool,
    /// The metrics listener: its own address, loopback by default, since the figures are
    /// for the operators only (plain HTTP, no TLS, no login).
    pub metrics_listen: SocketAddr,
    pub tls: TlsConfig,
    pub cluster: ClusterConfig,
    pub limits: Limits,
}

/// Several nodes behind one name (issue 16): live traffic between them over NATS, state in
/// the shared PostgreSQL or MariaDB database. Off (one node, no NATS) while `nats_urls`
/// is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers, e.g. `["nats://10.0.0.5:4222"]`; empty: no cluster.
    pub nats_urls: Vec<String>,
    /// The cluster's name, the first part of every NATS subject it uses, so that several
    /// clusters (or a test and a production one) can share one NATS.
    pub name: String,
    /// NATS credentials, if its server asks for them: a `.creds` file, or a user and
    /// password, or a token.
    pub nats_credentials: Option<PathBuf>,
    pub nats_user: Option<String>,
    pub nats_password: Option<String>,
    pub nats_token: Option<String>,
    /// TLS to NATS: the certificate authority (PEM) that signed the NATS server's
    /// certificate, trusted besides the system's; with it, plaintext is refused.
    pub nats_tls_ca: Option<PathBuf>,
    /// TLS to NATS: this node's client certificate and key (PEM), for a NATS server that
    /// verifies its clients (`verify: true` in its `tls` block); both or neither.
    pub nats_tls_cert: Option<PathBuf>,
    pub nats_tls_key: Option<PathBuf>,
    /// Bus messages a node holds from NATS before it counts as a slow subscriber (the
    /// NATS client then drops the newest and the node catches up from the database:
    /// docs/CLUSTER.md). Tests make it tiny to provoke that.
    pub nats_pending_max: usize,
    /// Room and private message ids a node remembers having delivered (8 to 24 bytes
    /// each), so that a catch-up from the database delivers each once. A node that must
    /// catch up further back than it remembers closes its sessions instead (`resync`).
    pub delivered_ids_max: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_urls: Vec::new(),
            name: "salon".into(),
            nats_credentials: None,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_pending_max: 65_536,
            delivered_ids_max: 131_072,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.nats_urls.is_empty()
    }
}

/// TLS on both listeners. Off unless `cert` and `key` are set, or `self_signed`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (the server's certificate first, then intermediates). With
    /// `key`, both listeners speak TLS only: native protocol over TLS, HTTPS and WSS.
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// For a first trial: when `cert` and `key` are not set, make a self-signed
    /// certificate for `hosts` into `data_dir/tls/` (once; reused after) and print its
    /// SHA-256 fingerprint. Clients must be told to trust it explicitly.
    pub self_signed: bool,
    /// Host names (or IP addresses) the self-signed certificate is made for.
    pub hosts: Vec<String>,
    /// How often the certificate and key files are checked for changes (a change reloads
    /// them, as does SIGHUP), in milliseconds.
    pub reload_check_ms: u64,
    /// `max-age` of the Strict-Transport-Security header on HTTPS responses, in seconds
    /// (0: no header).
    pub hsts_max_age_secs: u64,
    /// A plaintext HTTP address that only redirects to HTTPS (`308`, same host and
    /// path, the HTTPS listener's port). Unset: none.
    pub redirect_listen: Option<SocketAddr>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            self_signed: false,
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            reload_check_ms: 5_000,
            hsts_max_age_secs: 31_536_000,
            redirect_listen: None,
        }
    }
}

impl TlsConfig {
    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        (self.cert.is_some() && self.key.is_some()) || self.self_signed
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("salon-data"),
            database_url: None,
            sqlite_max_size_mb: None,
            files_dir: None,
            admin_password: None,
            node_id: 0,
            console_idle_lock_secs: 600,
            registration: salon_proto::RegistrationMode::Open,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            metrics: true,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            tls: TlsConfig::default(),
            cluster: ClusterConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// Bounds on what one client may cost the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest inbound frame in bytes; a larger one closes the connection (`frame_too_large`).
    pub max_frame_bytes: usize,
    /// Longest message text in characters (`message_too_long`).
    pub max_message_chars: usize,
    /// Frames that may wait in one session's outbound queue; when full the session is
    /// disconnected as a slow consumer.
    pub outbound_queue_frames: usize,
    /// Bytes one session may have accepted for it and not yet written to its socket
    /// (queued frames and the write in progress). Events past it disconnect the session
    /// as a slow consumer; its own replies wait for room, which pauses its reading. A
    /// history page is cut to half of it.
    pub outbound_queue_bytes: usize,
    /// How long a connection being closed may take to write what it still owes (the rest
    /// of a write in progress, then the closing frame), in milliseconds.
    pub close_grace_ms: u64,
    /// Open connections, TCP and HTTP together (an HTTP connection counts from its accept,
    /// and keeps its place when it becomes a WebSocket); more are refused
    /// (`too_many_connections`, or HTTP 503).
    pub max_connections: usize,
    /// Open connections from one IP address (an IPv6 /64 counts as one address); more
    /// from that address are refused the same way, saying it is the address's limit.
    pub max_connections_per_address: usize,
    /// Addresses not subject to `max_connections_per_address`, e.g. a trusted reverse
    /// proxy's (`["10.0.0.5"]`). They still count towards `max_connections`.
    pub connection_limit_exempt: Vec<IpAddr>,
    /// How long an HTTP client may take to send a request's headers (and, for `/ws`, to
    /// complete the WebSocket handshake), in milliseconds. It also closes an idle
    /// keep-alive HTTP connection after that long.
    pub http_header_timeout_ms: u64,
    /// How long a client of a TLS listener may take to complete the TLS handshake, in
    /// milliseconds; past it the connection is closed.
    pub tls_handshake_timeout_ms: u64,
    /// A connection that has not logged in (or resumed) this long after it opened is
    /// closed (`login_timeout`), in milliseconds.
    pub login_timeout_ms: u64,
    /// A logged-in session from which nothing is received for half this time is probed
    /// (WebSocket Ping frame, or the `ping` event on TCP); if still nothing arrives by the
    /// full time it is closed (`idle_timeout`). In milliseconds.
    pub idle_timeout_ms: u64,
    /// Logged-in sessions one account may have at once; more logins are refused
    /// (`too_many_sessions`).
    pub max_sessions_per_user: usize,
    /// Sustained messages (room and private; and edits, deletions, reactions, read
    /// markers) per second per session, and the burst above it; the same again for each
    /// user, all their sessions together.
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Private channels one user may create per hour (each adds its members without
    /// asking them).
    pub channels_per_hour_per_user: u32,
    /// Requests to join a room one user may make per hour (each is told to every
    /// administrator).
    pub join_requests_per_hour_per_user: u32,
    /// Rooms and channels one user may be a member of: what each login reads and sends
    /// grows with them, and a channel adds its members without asking them.
    pub rooms_per_user_max: usize,
    /// Sustained other requests per second per session, and the burst above it.
    pub requests_per_second: u32,
    pub request_burst: u32,
    /// Sustained searches per second per user (all their sessions), and the burst above
    /// it: each search costs index look-ups.
    pub searches_per_second: u32,
    pub search_burst: u32,
    /// Searches running at once on this node (each holds a database connection while it
    /// runs); one user's searches also run one at a time. On SQLite the searches have a
    /// pool of their own, of this many read-only connections, apart from the writer's; on
    /// PostgreSQL and MariaDB they share the pool, and the default leaves the rest of it
    /// to the message writer and everything else.
    pub searches_at_once: usize,
    /// Longest a search statement may run: the database stops it (MariaDB's
    /// `max_statement_time`, MySQL's `MAX_EXECUTION_TIME`, PostgreSQL's
    /// `statement_timeout`, SQLite's progress handler) and the search is refused
    /// `invalid_request` (narrow it).
    pub search_time_max_ms: u64,
    /// Login and registration attempts per minute from one peer address.
    pub auth_attempts_per_minute_per_address: u32,
    /// Failed password checks of one account from one address (an IPv6 /64) before each
    /// further attempt from there must wait: 1 s after the previous one, then 2 s, 4 s…
    /// (`login`, `change_password`; see `throttle.rs`).
    pub login_failures_before_delay: u32,
    /// The longest such delay, in seconds.
    pub login_delay_max_secs: u64,
    /// Failed password checks of one account per hour from all addresses together; past
    /// it, only addresses the account logged in from within `session_ttl_hours` are still
    /// checked, others are told to wait. Local sessions (console, TCP from 127.0.0.1 or
    /// ::1) have a ceiling of their own.
    pub login_failures_per_hour_per_account: u32,
    /// Password hashes (logins, registrations, password changes) waiting or running at
    /// once; past it a request is refused at once with `rate_limited` rather than queued.
    /// Local sessions have 4 more of their own.
    pub max_pending_password_hashes: usize,
    /// Registrations (attempts, refused ones included) per hour from one address.
    pub registrations_per_hour_per_address: u32,
    /// Registrations (attempts) per minute from all addresses together.
    pub registrations_per_minute: u32,
    /// Messages committed to the database in one transaction at most (group commit).
    pub commit_batch_max: usize,
    /// While busy (a commit of 8 messages or more), the least time between the starts of
    /// two commits, in milliseconds: gathering more per commit means fewer writes to every
    /// recipient. A quiet server commits at once. 0 disables pacing.
    pub commit_pacing_ms: u64,
    /// Accepted messages waiting for the database writer; when full, senders wait.
    pub persist_queue: usize,
    /// Largest history page a client may ask for (`history` `limit`); a larger `limit` is
    /// refused with `invalid_request`. Pages are 50 messages when no `limit` is given (or
    /// this, if smaller).
    pub history_page_max: u32,
    /// Different emoji one message may have as reactions (`too_many_reactions` past it).
    pub reactions_per_message_max: u32,
    /// Largest file one upload may be, in bytes (`POST /api/files`: 413 past it, before
    /// the body is read when its length is announced).
    pub upload_max_bytes: u64,
    /// Bytes of files one user may have stored (attached or waiting to be), counted as
    /// stored; past it uploads are refused (`quota_exceeded`) until some are removed.
    pub upload_quota_bytes: u64,
    /// An upload whose body sends nothing for this long is abandoned (400
    /// `interrupted`), its temporary file removed: a slow-drip client holds a
    /// connection and a temporary file no longer. In milliseconds.
    pub upload_idle_timeout_ms: u64,
    /// The longest one upload may take, however steadily its body comes (408
    /// `too_slow` past it): a client sending a byte now and then, never idle for
    /// `upload_idle_timeout_ms`, holds a connection and a temporary file no longer. In
    /// milliseconds; the default (10 minutes) lets 25 MB come at 42 KB/s.
    pub upload_timeout_ms: u64,
    /// Files one message may carry.
    pub attachments_per_message_max: u32,
    /// Uploads of one user that no message carries yet; past it uploads are refused
    /// (`too_many_pending_uploads`) until some are sent or swept (after a day). Bounds
    /// the rows a user can make with tiny files, which the quota alone does not.
    pub pending_uploads_max: u32,
    /// How long a session token (for `resume`) stays valid, in hours.
    pub session_ttl_hours: u32,
    /// Longest any one database call may take, waiting for a connection included, in
    /// milliseconds. Past it the request is answered `unavailable` and the connection is
    /// closed, so a database that stops answering never leaves a request hanging.
    pub database_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_message_chars: 4000,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 512 * 1024,
            close_grace_ms: 5_000,
            max_connections: 10_000,
            max_connections_per_address: 64,
            connection_limit_exempt: Vec::new(),
            http_header_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            login_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            max_sessions_per_user: 16,
            messages_per_second: 20,
            message_burst: 50,
            channels_per_hour_per_user: 20,
            join_requests_per_hour_per_user: 10,
            rooms_per_user_max: 1_000,
            requests_per_second: 50,
            request_burst: 200,
            searches_per_second: 5,
            search_burst: 20,
            searches_at_once: 2,
            search_time_max_ms: 2_000,
            auth_attempts_per_minute_per_address: 60,
            login_failures_before_delay: 5,
            login_delay_max_secs: 900,
            login_failures_per_hour_per_account: 100,
            max_pending_password_hashes: 128,
            registrations_per_hour_per_address: 30,
            registrations_per_minute: 20,
            commit_batch_max: 1024,
            commit_pacing_ms: 8,
            persist_queue: 65_536,
            history_page_max: 100,
            reactions_per_message_max: 20,
            upload_max_bytes: 25_000_000,
            upload_quota_bytes: 1_000_000_000,
            upload_idle_timeout_ms: 60_000,
            upload_timeout_ms: 600_000,
            attachments_per_message_max: 10,
            pending_uploads_max: 200,
            session_ttl_hours: 720,
            database_timeout_ms: 5_000,
        }
    }
}

/// Errors reading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Where attached files are stored.
    pub fn files_dir(&self) -> PathBuf {
        self.files_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("files"))
    }

    /// Parses a TOML document.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id > crate::ids::MAX_SERVER_NODE {
            return Err(ConfigError::Invalid(format!(
                "node_id must be from 0 to 13, not {} (14 and 15 are reserved for the \
                 offline tools)",
                self.node_id
            )));
        }
        if self.cluster.enabled() {
            if self.effective_database_url().starts_with("sqlite:") {
                return Err(ConfigError::Invalid(
                    "a cluster (cluster.nats_urls) needs a database every node shares: \
                     PostgreSQL or MariaDB (database_url); SQLite is one node's file"
                        .into(),
                ));
            }
            let name = &self.cluster.name;
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::Invalid(format!(
                    "cluster.name must be 1 to 64 letters, digits, - or _ (it is part of \
                     NATS subjects), not {name:?}"
                )));
            }
            if self.cluster.nats_tls_cert.is_some() != self.cluster.nats_tls_key.is_some() {
                return Err(ConfigError::Invalid(
                    "cluster.nats_tls_cert and cluster.nats_tls_key go together: a client \
                     certificate needs its key"
                        .into(),
                ));
            }
        }
        let l = &self.limits;
        let positive = [
            ("max_frame_bytes", l.max_frame_bytes),
            ("max_message_chars", l.max_message_chars),
            ("outbound_queue_frames", l.outbound_queue_frames),
            ("outbound_queue_bytes", l.outbound_queue_bytes),
            ("max_connections", l.max_connections),
            ("max_connections_per_address", l.max_connections_per_address),
            ("http_header_timeout_ms", l.http_header_timeout_ms as usize),
            (
                "tls_handshake_timeout_ms",
                l.tls_handshake_timeout_ms as usize,
            ),
            ("login_timeout_ms", l.login_timeout_ms as usize),
            // Half of it is when the probe goes out.
            ("idle_timeout_ms", (l.idle_timeout_ms / 2) as usize),
            ("max_sessions_per_user", l.max_sessions_per_user),
            ("messages_per_second", l.messages_per_second as usize),
            ("message_burst", l.message_burst as usize),
            (
                "channels_per_hour_per_user",
                l.channels_per_hour_per_user as usize,
            ),
            (
                "join_requests_per_hour_per_user",
                l.join_requests_per_hour_per_user as usize,
            ),
            ("rooms_per_user_max", l.rooms_per_user_max),
            ("requests_per_second", l.requests_per_second as usize),
            ("request_burst", l.request_burst as usize),
            ("searches_per_second", l.searches_per_second as usize),
            ("search_burst", l.search_burst as usize),
            ("searches_at_once", l.searches_at_once),
            ("search_time_max_ms", l.search_time_max_ms as usize),
            (
                "auth_attempts_per_minute_per_address",
                l.auth_attempts_per_minute_per_address as usize,
            ),
            ("login_delay_max_secs", l.login_delay_max_secs as usize),
            (
                "login_failures_per_hour_per_account",
                l.login_failures_per_hour_per_account as usize,
            ),
            ("max_pending_password_hashes", l.max_pending_password_hashes),
            (
                "registrations_per_hour_per_address",
                l.registrations_per_hour_per_address as usize,
            ),
            (
                "registrations_per_minute",
                l.registrations_per_minute as usize,
            ),
            ("commit_batch_max", l.commit_batch_max),
            ("persist_queue", l.persist_queue),
            ("history_page_max", l.history_page_max as usize),
            (
                "reactions_per_message_max",
                l.reactions_per_message_max as usize,
            ),
            ("upload_max_bytes", l.upload_max_bytes.min(1) as usize),
            ("upload_quota_bytes", l.upload_quota_bytes.min(1) as usize),
            (
                "upload_idle_timeout_ms",
                l.upload_idle_timeout_ms.min(1) as usize,
            ),
            ("upload_timeout_ms", l.upload_timeout_ms.min(1) as usize),
            (
                "attachments_per_message_max",
                l.attachments_per_message_max as usize,
            ),
            ("pending_uploads_max", l.pending_uploads_max as usize),
            ("session_ttl_hours", l.session_ttl_hours as usize),
            ("database_timeout_ms", l.database_timeout_ms as usize),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!(
                "limits.{name} must be at least 1"
            )));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together: set both, or neither".into(),
            ));
        }
        if self.tls.enabled() && self.tls.reload_check_ms == 0 {
            return Err(ConfigError::Invalid(
                "tls.reload_check_ms must be at least 1".into(),
            ));
        }
        if self.tls.self_signed && self.tls.hosts.is_empty() {
            return Err(ConfigError::Invalid(
                "tls.self_signed needs at least one name in tls.hosts".into(),
            ));
        }
        if self.tls.redirect_listen.is_some() && !self.tls.enabled() {
            return Err(ConfigError::Invalid(
                "tls.redirect_listen redirects to HTTPS: it needs TLS (tls.cert and tls.key, \
                 or tls.self_signed)"
                    .into(),
            ));
        }
        for origin in &self.allowed_origins {
            if crate::net::normalize_origin(origin).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "allowed_origins: {origin:?} is not an origin like \"https://chat.example.com\" \
                     or \"http://host:8080\""
                )));
            }
        }
        for host in &self.allowed_hosts {
            let name = host.trim_end_matches('.');
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "allowed_hosts: {host:?} is not a host name like \"chat.example.com\" (no \
                     scheme, no port)"
                )));
            }
        }
        if self.sqlite_max_size_mb == Some(0) {
            return Err(ConfigError::Invalid(
                "sqlite_max_size_mb must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        // The message columns of the MySQL/MariaDB schema hold 16000 characters.
        if l.max_message_chars > 16_000 {
            return Err(ConfigError::Invalid(format!(
                "limits.max_message_chars ({}) is above the 16000 characters a stored \
                 message may have",
                l.max_message_chars
            )));
        }
        // A message at its longest, every character escaped as \uXXXX, must fit a frame.
        if l.max_message_chars * 6 + 512 > l.max_frame_bytes {
            return Err(ConfigError::Invalid(format!(
                "limits.max_frame_bytes ({}) is too small for limits.max_message_chars ({}): \
                 it must be at least 6 × max_message_chars + 512",
                l.max_frame_bytes, l.max_message_chars
            )));
        }
        // The largest event (a message at its longest, every character escaped) must fit.
        if l.outbound_queue_bytes < l.max_message_chars * 6 + 1024 {
            return Err(ConfigError::Invalid(format!(
                "limits.outbound_queue_bytes ({}) is too small for limits.max_message_chars \
                 ({}): it must be at least 6 × max_message_chars + 1024",
                l.outbound_queue_bytes, l.max_message_chars
            )));
        }
        Ok(())
    }

    /// How the server's store talks to its database.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            timeout: std::time::Duration::from_millis(self.limits.database_timeout_ms),
            sqlite_max_size_mb: self.sqlite_max_size_mb,
            record_changes: self.cluster.enabled(),
            search_time_max: std::time::Duration::from_millis(self.limits.search_time_max_ms),
            search_connections: u32::try_from(self.limits.searches_at_once).unwrap_or(u32::MAX),
        }
    }

    /// The database URL actually used: the configured one, or SQLite in `data_dir`.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("salon.db").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotated_example_config_parses_to_the_defaults() {
        let text = include_str!("../../../salon.example.toml");
        let config = Config::from_toml(text, Path::new("salon.example.toml")).unwrap();
        let defaults = Config::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.http_listen, defaults.http_listen);
        assert_eq!(config.data_dir, defaults.data_dir);
        assert_eq!(config.database_url, None);
        assert_eq!(config.sqlite_max_size_mb, defaults.sqlite_max_size_mb);
        assert_eq!(config.allowed_origins, defaults.allowed_origins);
        assert_eq!(config.registration, defaults.registration);
        assert_eq!(config.metrics, defaults.metrics);
        assert_eq!(config.metrics_listen, defaults.metrics_listen);
        assert_eq!(format!("{:?}", config.tls), format!("{:?}", defaults.tls));
        assert_eq!(
            format!("{:?}", config.limits),
            format!("{:?}", defaults.limits)
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("lisen = \"0.0.0.0:1\"", Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn a_nats_client_certificate_without_its_key_is_rejected() {
        let text = "database_url = \"postgres://db/salon\"\n[cluster]\n\
                    nats_urls = [\"tls://nats:4222\"]\nnats_tls_cert = \"c.pem\"";
        let err = Config::from_toml(text, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("nats_tls_key"), "{err}");
    }

    #[test]
    fn impossible_limits_are_rejected() {
        let err = Config::from_toml(
            "[limits]\nmax_frame_bytes = 1000\nmax_message_chars = 4000",
            Path::new("x"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_frame_bytes"), "{err}");
    }
}
