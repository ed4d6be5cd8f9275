//! R21, R24: database trouble. Unreachable at start: a clear error and exit code. Gone
//! while running: clients get `unavailable` for what needs it, the server stays up,
//! nothing acknowledged is lost, and service resumes when the database returns. A
//! partition or a lost connection at COMMIT: answered within the database timeout, and
//! a retry with the message's key stores it once.

use std::net::SocketAddr;

use salon_client::{Client, Incoming};
use salon_proto::{ErrorCode, Event};

use crate::harness::*;
use crate::proxy::{AtCommit, CuttableProxy};

#[tokio::test]
async fn an_unreachable_database_at_start_is_a_clear_error_and_exit_code() {
    let port = free_port(); // nothing listens there
    for url in [
        format!("postgres://salon@127.0.0.1:{port}/salon"),
        format!("mysql://salon@127.0.0.1:{port}/salon"),
        "oracle://somewhere/db".to_owned(),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
            .args([
                "serve",
                "--no-console",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--database-url", &url])
            .env("SALON_METRICS_LISTEN", "127.0.0.1:0")
            .env("SALON_LOG", "error")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot open the database"),
            "{url}: {stderr}"
        );
    }
}

/// A server on this test's database through a proxy (PostgreSQL and MariaDB only).
async fn behind_a_proxy(
    tune: impl FnOnce(&mut salon_server::Config),
) -> (TestServer, CuttableProxy) {
    let data = DataDir::new();
    let url = data.database_url().unwrap();
    // postgres://user@host:port/name → the proxy's port instead.
    let (head, tail) = url.split_once('@').unwrap();
    let (hostport, name) = tail.split_once('/').unwrap();
    let target: SocketAddr = hostport.parse().unwrap();
    let proxy = CuttableProxy::start(target).await;
    let proxied = format!("{head}@{}/{name}", proxy.addr);
    let server = TestServer::start_on(data, |c| {
        c.database_url = Some(proxied);
        tune(c);
    })
    .await;
    (server, proxy)
}

#[tokio::test]
async fn losing_the_database_while_running_is_survived_without_losing_accepted_messages() {
    if backend() == Backend::Sqlite {
        eprintln!("NOTE: the embedded SQLite database cannot go away; this test runs on the PostgreSQL and MariaDB passes");
        return;
    }
    let (server, proxy) = behind_a_proxy(|_| {}).await;

    let (alice, _) = server.user("alice").await;
    alice.set_send_attempts(1);
    let before = alice.send("Général", "before the outage").await.unwrap();

    proxy.cut();
    let err = alice
        .send("Général", "during the outage")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    let err = alice
        .send_with_key("Général", "sent again later", "again-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    let err = alice.room_history("Général", None, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    // The session and the server are still up.
    alice.ping().await.unwrap();
    assert_eq!(
        server.login_refused("alice", PASSWORD).await,
        Some(ErrorCode::Unavailable)
    );

    proxy.restore();
    let after = alice.send("Général", "after the outage").await.unwrap();
    // The refused message, sent again with its key: stored now, once.
    let again = alice
        .send_with_key("Général", "sent again later", "again-1")
        .await
        .unwrap();
    let again_twice = alice
        .send_with_key("Général", "sent again later", "again-1")
        .await
        .unwrap();
    assert_eq!(again.id, again_twice.id);
    let page = alice.room_history("Général", None, None).await.unwrap();
    let texts: Vec<_> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["before the outage", "after the outage", "sent again later"],
        "nothing acknowledged lost, nothing refused stored, the retry stored once"
    );
    assert_eq!(page.messages[0].id, before.id);
    assert_eq!(page.messages[1].id, after.id);
    assert_eq!(page.messages[2].id, again.id);
    server.login("alice").await;
}

/// How many `message` events with `text` a client gets (until quiet).
async fn copies_received(c: &mut Client, text: &str) -> usize {
    let mut n = 0;
    while let Some(item) = c.event_within(QUIET).await {
        if matches!(&item, Incoming::Event(Event::Message(m)) if m.text == text) {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn readyz_says_unavailable_while_the_database_is_unreachable() {
    if backend() == Backend::Sqlite {
        eprintln!("NOTE: the embedded SQLite database cannot go away; this test runs on the PostgreSQL and MariaDB passes");
        return;
    }
    let (server, proxy) = behind_a_proxy(|c| c.limits.database_timeout_ms = 500).await;
    assert_eq!(http_get(&server, "/readyz").await, (200, "ready\n".into()));
    let (alice, _) = server.user("alice").await;
    alice.set_send_attempts(1);
    let metrics = server.metrics.expect("metrics");
    let errors = "salon_database_errors_total";
    let before = metric(&scrape_metrics(metrics).await, errors);
    proxy.cut();
    let err = alice.room_history("Général", None, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    assert!(
        metric(&scrape_metrics(metrics).await, errors) > before,
        "{errors} grew"
    );
    assert_eq!(
        http_get(&server, "/readyz").await,
        (503, "database unavailable\n".into())
    );
    // The process itself still answers.
    assert_eq!(http_get(&server, "/healthz").await, (200, "ok".into()));
    proxy.restore();
    let every = std::time::Duration::from_millis(50);
    eventually("never ready again", every, || async {
        http_get(&server, "/readyz").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn a_partition_at_commit_is_answered_in_bounded_time_and_a_keyed_retry_stores_once() {
    if backend() == Backend::Sqlite {
        eprintln!("NOTE: the embedded SQLite database has no network; this test runs on the PostgreSQL and MariaDB passes");
        return;
    }
    let (server, proxy) = behind_a_proxy(|c| c.limits.database_timeout_ms = 1000).await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    alice.set_send_attempts(1);

    let text = "marked: partition at commit";
    proxy.arm(text, AtCommit::Partition);
    let err = tokio::time::timeout(WAIT, alice.send_with_key("Général", text, "p-1"))
        .await
        .expect("answered within the database timeout, not left hanging")
        .unwrap_err();
    assert!(
        proxy.triggered(),
        "the partition started at the message's COMMIT"
    );
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    assert!(
        err.to_string().contains("may or may not") && err.to_string().contains("same key"),
        "the outcome is unknown, and the client is told a keyed retry is safe: {err}"
    );
    // Meanwhile everything else is answered too.
    let err = tokio::time::timeout(WAIT, alice.room_history("Général", None, None))
        .await
        .expect("answered")
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");

    proxy.heal();
    let stored = alice.send_with_key("Général", text, "p-1").await.unwrap();
    let page = alice.room_history("Général", None, None).await.unwrap();
    let copies: Vec<_> = page.messages.iter().filter(|m| m.text == text).collect();
    assert_eq!(copies.len(), 1, "stored exactly once");
    assert_eq!(copies[0].id, stored.id);
    assert_eq!(
        copies_received(&mut bob, text).await,
        1,
        "delivered exactly once"
    );
    server.login("alice").await;
}

#[tokio::test]
async fn a_connection_lost_after_commit_is_retried_by_the_client_and_stored_once() {
    if backend() == Backend::Sqlite {
        eprintln!("NOTE: the embedded SQLite database has no network; this test runs on the PostgreSQL and MariaDB passes");
        return;
    }
    let (server, proxy) = behind_a_proxy(|_| {}).await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;

    let text = "marked: cut after commit";
    proxy.arm(text, AtCommit::Cut);
    // The client library keys the message and sends it again by itself on `unavailable`.
    let stored = alice.send("Général", text).await.unwrap();
    assert!(proxy.triggered(), "the connection was cut after the COMMIT");
    let page = alice.room_history("Général", None, None).await.unwrap();
    let copies: Vec<_> = page.messages.iter().filter(|m| m.text == text).collect();
    assert_eq!(copies.len(), 1, "stored exactly once");
    assert_eq!(copies[0].id, stored.id);
    assert_eq!(
        copies_received(&mut bob, text).await,
        1,
        "delivered exactly once"
    );
}

#[tokio::test]
async fn salon_migrate_creates_the_schema_explicitly() {
    let data = DataDir::new();
    let (ok, said) = salon_migrate(&data).await;
    assert!(ok, "{said}");
    let expected = match backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::MySql => "mysql",
    };
    assert!(said.contains(&format!("up to date ({expected})")), "{said}");
    // A server then starts on it as on any database.
    let server = TestServer::start_on(data, |_| {}).await;
    server.login("admin").await;
}

/// Runs `salon migrate` on `data`: whether it succeeded, and what it wrote.
async fn salon_migrate(data: &DataDir) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .arg("migrate")
        .args(data.server_args())
        .output()
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Records in `data`'s database that a newer version applied migration `version`,
/// named `description`, as sqlx does.
async fn newer_version_applied(data: &DataDir, version: i64, description: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = data
        .database_url()
        .unwrap_or_else(|| format!("sqlite://{}", data.path().join("salon.db").display()));
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
    let marks = match backend() {
        Backend::Postgres => "$1, $2, $3, $4, $5",
        Backend::Sqlite | Backend::MySql => "?, ?, ?, ?, ?",
    };
    let sql = format!(
        "INSERT INTO _sqlx_migrations \
         (version, description, success, checksum, execution_time) VALUES ({marks})"
    );
    sqlx::query(&sql)
        .bind(version)
        .bind(description)
        .bind(true)
        .bind(vec![0u8; 48])
        .bind(1i64)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
}

/// A cluster half-way through a rolling upgrade: a node of the older version starts on
/// the database the newer one migrated if the newer migrations are additive, and
/// refuses, naming the migration, if one is not.
#[tokio::test]
async fn an_older_version_runs_on_a_newer_schema_only_if_its_changes_are_additive() {
    let data = DataDir::new();
    let (ok, said) = salon_migrate(&data).await;
    assert!(ok, "{said}");
    newer_version_applied(&data, 9_000, "additive reaction counts").await;
    let (ok, said) = salon_migrate(&data).await;
    assert!(ok, "{said}");
    assert!(
        said.contains("additive migrations of a newer version"),
        "{said}"
    );
    // A server starts on it and serves.
    let server = TestServer::start_on(data.share(), |_| {}).await;
    server.login("admin").await;
    let (_, data, _) = server.stop().await;

    newer_version_applied(&data, 9_001, "split messages").await;
    let (ok, said) = salon_migrate(&data).await;
    assert!(!ok, "an older version ran on a schema it cannot: {said}");
    assert!(
        said.contains(
            "the database was migrated by a newer version of Salon (migration 9001, \
             \"split messages\"; this version knows migrations up to"
        ),
        "{said}"
    );
}

#[tokio::test]
async fn text_is_stored_and_returned_exactly() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let samples = [
        "accents: Général, Comptabilité, çà et là, Œuvre",
        "4-byte UTF-8: 🎉👩‍💻🇫🇷 𝄞 𠜎",
        "quotes ' \" ` and backslash \\ and percent % _ ; -- DROP TABLE users;",
        "newlines\nand\ttabs",
        "右から左 עברית العربية",
    ];
    for text in samples {
        alice.send("Général", text).await.unwrap();
        alice.direct("alice", text).await.unwrap();
    }
    let room: Vec<_> = alice
        .room_history("Général", None, None)
        .await
        .unwrap()
        .messages;
    let dms: Vec<_> = alice
        .direct_history("alice", None, None)
        .await
        .unwrap()
        .messages;
    assert_eq!(
        room.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        samples
    );
    assert_eq!(
        dms.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        samples
    );
    // Ordering by id is the order of acceptance, and timestamps never go backwards.
    assert!(room
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].ts <= w[1].ts));
    // Names with accents and 4-byte characters too.
    let c = server.client().await;
    c.register(salon_proto::args::Register {
        alias: "Zoé 🎨".into(),
        ..registration("zoe")
    })
    .await
    .unwrap_err(); // emoji are not allowed in aliases…
    c.register(salon_proto::args::Register {
        alias: "Zoé Ÿvain".into(),
        ..registration("zoe")
    })
    .await
    .unwrap();
    let users = alice.who().await.unwrap();
    assert!(users.iter().any(|u| u.alias == "Zoé Ÿvain"));
    assert_eq!(
        c.register(salon_proto::args::Register {
            alias: "ZOÉ ŸVAIN".into(),
            ..registration("zoe2")
        })
        .await
        .unwrap_err()
        .code(),
        Some(ErrorCode::AliasTaken),
        "case-insensitive with accents, on every backend"
    );
    assert!(
        c.register(salon_proto::args::Register {
            alias: "Zoe Yvain".into(),
            ..registration("zoe3")
        })
        .await
        .is_ok(),
        "accents are significant"
    );
}
