//! R21, R24: database trouble. Unreachable at start: a clear error and exit code. Gone
//! while running: clients get `unavailable` for what needs it, the server stays up,
//! nothing acknowledged is lost, and service resumes when the database returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use salon_proto::ErrorCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::harness::*;

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

/// A TCP proxy in front of the database that can cut every connection and refuse new
/// ones, then let them through again.
struct CuttableProxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let accept = tokio::spawn({
            let (open, links) = (open.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: connection refused in effect
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        CuttableProxy {
            addr,
            open,
            links,
            accept,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn losing_the_database_while_running_is_survived_without_losing_accepted_messages() {
    if backend() == Backend::Sqlite {
        eprintln!("NOTE: the embedded SQLite database cannot go away; this test runs on the PostgreSQL and MariaDB passes");
        return;
    }
    let data = DataDir::new();
    let url = data.database_url().unwrap();
    // postgres://user@host:port/name → the proxy's port instead.
    let (head, tail) = url.split_once('@').unwrap();
    let (hostport, name) = tail.split_once('/').unwrap();
    let target: SocketAddr = hostport.parse().unwrap();
    let proxy = CuttableProxy::start(target).await;
    let proxied = format!("{head}@{}/{name}", proxy.addr);
    let server = TestServer::start_on(data, |c| c.database_url = Some(proxied)).await;

    let (alice, _) = server.user("alice").await;
    let before = alice.send("Général", "before the outage").await.unwrap();

    proxy.cut();
    let err = alice
        .send("Général", "during the outage")
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
    let page = alice.room_history("Général", None, None).await.unwrap();
    let texts: Vec<_> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["before the outage", "after the outage"],
        "nothing acknowledged lost, nothing refused stored"
    );
    assert_eq!(page.messages[0].id, before.id);
    assert_eq!(page.messages[1].id, after.id);
    server.login("alice").await;
}

#[tokio::test]
async fn salon_migrate_creates_the_schema_explicitly() {
    let data = DataDir::new();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .arg("migrate")
        .args(data.server_args())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = match backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::MySql => "mysql",
    };
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("up to date ({expected})")));
    // A server then starts on it as on any database.
    let server = TestServer::start_on(data, |_| {}).await;
    server.login("admin").await;
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
