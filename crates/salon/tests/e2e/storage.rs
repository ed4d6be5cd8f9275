//! Storage trouble and exactly-once effects: idempotency keys on `send` and `direct`; a
//! database that is full (SQLite's size cap, a real full filesystem) or locked refuses
//! writes `unavailable`, loses nothing it acknowledged, and recovers by itself.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use salon_client::{Client, Incoming};
use salon_proto::{ErrorCode, Event};

use crate::harness::*;

#[tokio::test]
async fn a_message_sent_again_with_its_key_is_stored_and_delivered_once() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    alice.set_send_attempts(1);

    let first = alice
        .send_with_key("Général", "only once", "k-1")
        .await
        .unwrap();
    // The reply was "lost": the client sends it again with the same key.
    let again = alice
        .send_with_key("Général", "only once", "k-1")
        .await
        .unwrap();
    assert_eq!((again.id, again.ts), (first.id, first.ts));
    let dm = alice.direct_with_key("bob", "psst", "k-1").await.unwrap();
    assert_ne!(
        dm.id, first.id,
        "keys of room and private messages are separate"
    );
    let dm_again = alice.direct_with_key("bob", "psst", "k-1").await.unwrap();
    assert_eq!((dm_again.id, dm_again.ts), (dm.id, dm.ts));
    // Another user's key is theirs alone.
    let bobs = bob
        .send_with_key("Général", "only once", "k-1")
        .await
        .unwrap();
    assert_ne!(bobs.id, first.id);

    let room = alice.room_history("Général", None, None).await.unwrap();
    assert_eq!(
        room.messages
            .iter()
            .map(|m| (m.id, m.text.as_str()))
            .collect::<Vec<_>>(),
        [(first.id, "only once"), (bobs.id, "only once")]
    );
    let dms = alice.direct_history("bob", None, None).await.unwrap();
    assert_eq!(dms.messages.len(), 1);
    assert_eq!(dms.messages[0].id, dm.id);
    // Bob was sent alice's message once.
    let got = expect_event(&mut bob, "alice's message", |e| match e {
        Event::Message(m) if m.author == "alice" => Some(m.id),
        _ => None,
    })
    .await;
    assert_eq!(got, first.id);
    expect_none(
        &mut bob,
        "a second copy",
        |i| matches!(i, Incoming::Event(Event::Message(m)) if m.author == "alice"),
    )
    .await;

    // A key names one message: reusing it for another is refused, not merged silently.
    let err = alice
        .send_with_key("Général", "something else", "k-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert_eq!(field_of(&err).as_deref(), Some("key"));
    // Keys follow a rule: 1–64 printable ASCII characters, no spaces.
    let long = "k".repeat(65);
    for bad in ["", "two words", "clé", "tab\there", long.as_str()] {
        let err = alice
            .send_with_key("Général", "bad key", bad)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidRequest),
            "{bad:?}: {err}"
        );
        assert_eq!(field_of(&err).as_deref(), Some("key"), "{bad:?}");
        let err = alice
            .direct_with_key("bob", "bad key", bad)
            .await
            .unwrap_err();
        assert_eq!(field_of(&err).as_deref(), Some("key"), "{bad:?}");
    }
    let room = alice.room_history("Général", None, None).await.unwrap();
    assert_eq!(room.messages.len(), 2, "nothing refused was stored");
    // Without a key, as before, each send is a new message.
    let raw = server.client().await;
    raw.login("alice", PASSWORD).await.unwrap();
    let a = raw
        .call::<salon_proto::cmd::Send>(salon_proto::args::Send {
            room: "Général".into(),
            text: "no key".into(),
            key: None,
            reply_to: None,
            attachments: Vec::new(),
        })
        .await
        .unwrap();
    assert_ne!(a.id, first.id);
}

#[tokio::test]
async fn retries_racing_their_original_still_store_each_message_once() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let alice = Arc::new(alice);
    // Each message sent three times at once: some copies land in the same commit as
    // their original, some in a later one.
    let mut sends = Vec::new();
    for i in 0..40 {
        for _ in 0..3 {
            let alice = alice.clone();
            sends.push(tokio::spawn(async move {
                let text = format!("m{i}");
                let accepted = alice
                    .send_with_key("Général", &text, &format!("key-{i}"))
                    .await
                    .unwrap();
                (text, accepted.id)
            }));
        }
    }
    let mut ids = std::collections::HashMap::new();
    for s in sends {
        let (text, id) = s.await.unwrap();
        assert_eq!(*ids.entry(text.clone()).or_insert(id), id, "{text}");
    }
    let page = alice
        .room_history("Général", None, Some(100))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 40);
    for m in &page.messages {
        assert_eq!(ids[&m.text], m.id);
    }
}

/// Sends one message and sorts out its answer: acknowledged, or refused `unavailable`
/// (any other refusal fails the test).
#[derive(Default)]
struct Tally {
    acked: Vec<(i64, String)>,
    refused: usize,
    /// Refused with "may or may not be stored" (the commit's outcome was unknown).
    unknown: HashSet<String>,
}

impl Tally {
    fn record(&mut self, text: String, result: salon_client::Result<salon_proto::Accepted>) {
        match result {
            Ok(a) => self.acked.push((a.id, text)),
            Err(e) => {
                assert_eq!(
                    e.code(),
                    Some(ErrorCode::Unavailable),
                    "storage trouble is `unavailable`: {e}"
                );
                if e.to_string().contains("may or may not") {
                    self.unknown.insert(text);
                }
                self.refused += 1;
            }
        }
    }
}

/// Fills the database with alice's messages until the server refuses them, keeps sending
/// for a while, frees space with `free`, checks that the server recovers without a
/// restart, then restarts it (after `while_stopped`) and checks that every acknowledged
/// message is there, and nothing else.
async fn fill_free_and_recover<F>(server: TestServer, free: F, while_stopped: impl FnOnce())
where
    F: std::future::Future<Output = ()>,
{
    let (alice, _) = server.user("alice").await;
    alice.set_send_attempts(1);
    let alice = Arc::new(alice);
    let body = "x".repeat(1500);
    let mut tally = Tally::default();
    let mut round = 0;
    while tally.refused == 0 {
        round += 1;
        assert!(round < 500, "the database never filled up");
        let mut sends = Vec::new();
        for j in 0..16 {
            let (alice, text) = (alice.clone(), format!("fill {round}.{j} {body}"));
            sends.push(tokio::spawn(async move {
                let r = alice.send("Général", &text).await;
                (text, r)
            }));
        }
        for s in sends {
            let (text, r) = s.await.unwrap();
            tally.record(text, r);
        }
    }
    // Full: keep going. Whatever is acknowledged now must be stored too (the failure
    // this guards against: acknowledged after a failed commit, lost at restart).
    for i in 0..30 {
        let text = format!("while full {i} {body}");
        let r = alice.send("Général", &text).await;
        tally.record(text, r);
    }
    match server.client().await.login("bob", PASSWORD).await {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e.code(),
                Some(ErrorCode::Unavailable) | Some(ErrorCode::InvalidCredentials)
            ),
            "{e}"
        ),
    }
    let refused_while_full = tally.refused;

    free.await;
    // Recovered without a restart: every send is acknowledged, logins work.
    for i in 0..20 {
        let text = format!("after {i}");
        let accepted = alice.send("Général", &text).await.unwrap_or_else(|e| {
            panic!("the server did not recover once space was freed: {e}");
        });
        tally.acked.push((accepted.id, text));
    }
    server.login("alice").await;
    assert!(
        tally.refused == refused_while_full,
        "nothing refused after recovery"
    );

    let (config, data, clock) = server.stop().await;
    while_stopped();
    let server = TestServer::restart_from(config, data, clock).await;
    let (c, _) = server.login("alice").await;
    let stored = all_room_messages(&c, "Général").await;
    let stored_ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    let lost: Vec<_> = tally
        .acked
        .iter()
        .filter(|(id, _)| !stored_ids.contains(id))
        .map(|(_, text)| text.get(..20).unwrap_or(text))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost: {lost:?}",
        lost.len(),
        tally.acked.len()
    );
    let acked: HashSet<i64> = tally.acked.iter().map(|(id, _)| *id).collect();
    for (id, text) in &stored {
        assert!(
            acked.contains(id) || tally.unknown.contains(text),
            "a message refused as not stored was stored: {}",
            text.get(..20).unwrap_or(text)
        );
    }
    eprintln!(
        "full database: {} acknowledged, {} refused, {} stored after restart",
        tally.acked.len(),
        tally.refused,
        stored.len()
    );
    let _ = server.stop().await;
}

/// Every message of a room, oldest first: (id, text).
async fn all_room_messages(c: &Client, room: &str) -> Vec<(i64, String)> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = c.room_history(room, before, Some(100)).await.unwrap();
        before = page.messages.first().map(|m| m.id);
        let mut texts: Vec<_> = page.messages.into_iter().map(|m| (m.id, m.text)).collect();
        texts.append(&mut all);
        all = texts;
        if !page.more {
            return all;
        }
    }
}

async fn sqlite_connection(server: &TestServer) -> sqlx::AnyConnection {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&server.store_url())
        .await
        .unwrap();
    db.execute("PRAGMA busy_timeout = 10000").await.unwrap();
    db
}

#[tokio::test]
async fn a_database_at_its_size_cap_refuses_unavailable_loses_nothing_and_recovers() {
    if backend() != Backend::Sqlite {
        eprintln!("NOTE: sqlite_max_size_mb applies to the embedded SQLite database; this test runs on the SQLite pass");
        return;
    }
    use sqlx::Executor;
    let server = TestServer::start_with(|c| c.sqlite_max_size_mb = Some(1)).await;
    // Room to give back later: filler rows written by another connection (without the
    // cap), deleted to free space while the server runs.
    let mut db = sqlite_connection(&server).await;
    db.execute("CREATE TABLE filler (b BLOB)").await.unwrap();
    for _ in 0..20 {
        db.execute("INSERT INTO filler VALUES (randomblob(16000))")
            .await
            .unwrap();
    }
    fill_free_and_recover(
        server,
        async move {
            db.execute("DELETE FROM filler").await.unwrap();
        },
        || {},
    )
    .await;
}

/// A small tmpfs mounted for one test on a temporary directory, unmounted (and the
/// directory removed) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with a loud note) when not running as root.
    fn mount(size: &str) -> Option<Tmpfs> {
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if uid != "0" {
            eprintln!(
                "\n*** SKIPPED: the full-filesystem test mounts a tmpfs and needs root (uid {uid:?}); \
                 the size-cap test covers the same path without root ***\n"
            );
            return None;
        }
        let dir = tempfile::TempDir::new().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "salon-test"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "running as root but cannot mount a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Tmpfs {
    fn grow(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "cannot grow the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: even if something still holds a file there, the mount goes away; then
        // the empty directory is removed.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_filesystem_refuses_unavailable_loses_nothing_and_recovers() {
    if backend() != Backend::Sqlite {
        eprintln!("NOTE: the full-filesystem test concerns the embedded SQLite database; it runs on the SQLite pass");
        return;
    }
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        return;
    };
    let dir = tmpfs.path().join("data");
    let server = TestServer::start_on(DataDir::new(), |c| c.data_dir = dir.clone()).await;
    // Space to give back later: a file of our own on the same filesystem.
    let filler = tmpfs.path().join("filler");
    std::fs::write(&filler, vec![0x5a_u8; 1024 * 1024]).unwrap();
    fill_free_and_recover(
        server,
        async move {
            std::fs::remove_file(&filler).unwrap();
        },
        || {
            // Stopping checkpoints the write-ahead log into the database file, which on
            // a filesystem this small fills it again; the check after the restart logs in
            // (a write), so it gets room first.
            tmpfs.grow("16m");
        },
    )
    .await;
    drop(tmpfs);
}

#[tokio::test]
async fn a_locked_database_is_answered_unavailable_within_the_timeout_and_recovers() {
    if backend() != Backend::Sqlite {
        eprintln!("NOTE: this test holds SQLite's write lock; the PostgreSQL and MariaDB passes cut the network instead (database.rs)");
        return;
    }
    use sqlx::Executor;
    let server = TestServer::start_with(|c| c.limits.database_timeout_ms = 300).await;
    let (alice, _) = server.user("alice").await;
    alice.set_send_attempts(1);
    let before = alice.send("Général", "before").await.unwrap();
    // Another process holds the write lock.
    let mut db = sqlite_connection(&server).await;
    db.execute("BEGIN IMMEDIATE").await.unwrap();
    let err = tokio::time::timeout(WAIT, alice.send_with_key("Général", "blocked", "b-1"))
        .await
        .expect("answered, not left hanging")
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    // Reading still works meanwhile.
    let page = alice.room_history("Général", None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    db.execute("COMMIT").await.unwrap();
    // The retry with the key is stored once.
    let stored = alice
        .send_with_key("Général", "blocked", "b-1")
        .await
        .unwrap();
    let page = alice.room_history("Général", None, None).await.unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [before.id, stored.id]
    );
    server.login("alice").await;
}

pub fn field_of(e: &salon_client::ClientError) -> Option<String> {
    match e {
        salon_client::ClientError::Server(body) => body.field.clone(),
        _ => None,
    }
}

/// Issue 12: the data directory is `0700` and the database files `0600`, whatever the
/// umask (the test process's is the usual 022, which would give 0755/0644).
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    if backend() != Backend::Sqlite {
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("fresh").join("data");
    let server = TestServer::start_with(|c| c.data_dir = dir.clone()).await;
    let (alice, _) = server.user("alice").await;
    alice.send("Général", "hello").await.expect("send");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    for name in ["salon.db", "salon.db-wal", "salon.db-shm"] {
        let file = dir.join(name);
        assert!(file.exists(), "{name} exists");
        assert_eq!(mode(&file), 0o600, "{name}");
    }
}

#[tokio::test]
async fn files_are_private_even_under_a_permissive_umask() {
    use std::os::unix::fs::PermissionsExt;
    if backend() != Backend::Sqlite {
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let data = outer.path().join("data");
    let (tcp, http) = (free_port(), free_port());
    // The real binary, started by a shell whose umask lets everyone read and write.
    let command = format!(
        "umask 000; exec \"$0\" serve --no-console --data-dir '{}' --listen 127.0.0.1:{tcp} \
         --http-listen 127.0.0.1:{http}",
        data.display()
    );
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &command, env!("CARGO_BIN_EXE_salon")])
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .env("SALON_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let c = connect_when_ready(tcp).await;
    c.register(registration("alice")).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory");
    for name in ["salon.db", "salon.db-wal", "salon.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_retry_after_its_message_was_edited_or_deleted_is_still_the_same_message() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (_bob, _) = server.user("bob").await;
    // Sent, then edited from another device; the first device's late retry carries the
    // original text: it is answered with the message, not refused as another.
    let sent = alice
        .send_with_key("Général", "rendez-vous à 10 h", "k-edit")
        .await
        .unwrap();
    alice.edit(sent.id, "rendez-vous à 11 h").await.unwrap();
    let again = alice
        .send_with_key("Général", "rendez-vous à 10 h", "k-edit")
        .await
        .unwrap();
    assert_eq!((again.id, again.ts), (sent.id, sent.ts));
    // The same for a deleted message (room and private), which stays deleted.
    let gone = alice
        .send_with_key("Général", "oups", "k-delete")
        .await
        .unwrap();
    alice.delete(gone.id, None).await.unwrap();
    let again = alice
        .send_with_key("Général", "oups", "k-delete")
        .await
        .unwrap();
    assert_eq!(again.id, gone.id);
    let dm = alice.direct_with_key("bob", "salut", "k-dm").await.unwrap();
    alice.delete(dm.id, None).await.unwrap();
    assert_eq!(
        alice
            .direct_with_key("bob", "salut", "k-dm")
            .await
            .unwrap()
            .id,
        dm.id
    );
    let page = alice.room_history("Général", None, None).await.unwrap();
    let texts: Vec<_> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["rendez-vous à 11 h", ""], "nothing stored twice");
    // The key still names that message only: elsewhere it is another message.
    alice.join("Blabla").await.unwrap();
    let err = alice
        .send_with_key("Blabla", "rendez-vous à 10 h", "k-edit")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
}
