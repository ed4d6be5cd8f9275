//! Issue 12: `salon backup FILE` copies the embedded database while the server runs and
//! accepts messages; restoring the copy into a new data directory gives back every
//! message acknowledged before the backup began. PostgreSQL and MariaDB URLs are refused
//! with a pointer to their own tools.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::harness::*;

/// Runs `salon backup` with these arguments: exit code, stdout, stderr.
async fn salon_backup(args: &[std::ffi::OsString]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .arg("backup")
        .args(args)
        .env("SALON_LOG", "error")
        .output()
        .await
        .expect("run salon backup");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether this is the SQLite pass, where `salon backup` runs (said when it is not).
fn on_the_sqlite_pass() -> bool {
    let sqlite = backend() == Backend::Sqlite;
    if !sqlite {
        eprintln!("NOTE: `salon backup` copies the embedded SQLite database; this test runs on the SQLite pass");
    }
    sqlite
}

/// Every message id of a room's history, page by page.
async fn all_ids(client: &salon_client::Client, room: &str) -> HashSet<i64> {
    let mut ids = HashSet::new();
    let mut before = None;
    loop {
        let page = client.room_history(room, before, Some(100)).await.unwrap();
        ids.extend(page.messages.iter().map(|m| m.id));
        before = page.messages.iter().map(|m| m.id).min();
        if !page.more || before.is_none() {
            return ids;
        }
    }
}

#[tokio::test]
async fn a_backup_under_load_restores_every_message_acknowledged_before_it() {
    if !on_the_sqlite_pass() {
        return;
    }
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let accepted = alice
                    .send("Général", &format!("load {i}"))
                    .await
                    .expect("accepted during the backup");
                acked.lock().unwrap().push(accepted.id);
            }
            i
        })
    };
    let ten_ms = std::time::Duration::from_millis(10);
    eventually("the sender is stuck", ten_ms, || async {
        acked.lock().unwrap().len() >= 50
    })
    .await;

    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("salon-backup.db");
    let before: Vec<i64> = acked.lock().unwrap().clone();
    let mut args = vec![file.clone().into_os_string()];
    args.extend(server.data.server_args());
    let (code, stdout, stderr) = salon_backup(&args).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("backup written to"), "{stdout}");
    // The sender kept going during and after the backup.
    let during = acked.lock().unwrap().len();
    eventually("the sender is stuck", ten_ms, || async {
        acked.lock().unwrap().len() >= during + 10
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup is private: {mode:o}");
    }
    // Never over an existing file.
    let size = std::fs::metadata(&file).unwrap().len();
    let (code, _, stderr) = salon_backup(&args).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size);

    // Restore: the file becomes a new data directory's database.
    let data = DataDir::new();
    std::fs::copy(&file, data.path().join("salon.db")).unwrap();
    let restored = TestServer::start_on(data, |_| {}).await;
    let (alice, _) = restored.login("alice").await;
    let ids = all_ids(&alice, "Général").await;
    let missing: Vec<_> = before.iter().filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing after restore",
        missing.len(),
        before.len()
    );
    restored.stop().await;
    server.stop().await;
}

/// Copies directory `from` into `to` (created), as an operator's `cp -a` would.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The backup carries the attached files its database names, next to it in `FILE.files`
/// (an image's preview included); a restore of both serves them. Files no longer on disk
/// by then are counted, not fatal.
#[tokio::test]
async fn a_backup_carries_the_attached_files_and_a_restore_serves_them() {
    if !on_the_sqlite_pass() {
        return;
    }
    let server = TestServer::start().await;
    let (alice, a) = server.user("alice").await;
    let notes = b"minutes of the meeting\n".as_slice();
    let file = crate::files::uploaded(server.http, &a.token, "minutes.txt", notes).await;
    alice
        .send_files("Général", "the minutes", &[file.id])
        .await
        .unwrap();

    let dir = tempfile::TempDir::new().unwrap();
    let target = dir.path().join("salon-backup.db");
    let mut args = vec![target.clone().into_os_string()];
    args.extend(server.data.server_args());
    let (code, stdout, stderr) = salon_backup(&args).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let files = dir.path().join("salon-backup.db.files");
    assert!(
        stdout.contains(&format!(
            "its attached files: 1 ({} bytes) copied to {}",
            notes.len(),
            files.display()
        )),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the files are private: {mode:o}");
    }
    // A file gone from the disk by the time it is copied (here taken away by hand; in
    // life, its message deleted after the copy was taken) is counted, not fatal.
    let other = crate::files::uploaded(server.http, &a.token, "other.txt", b"other\n").await;
    alice.send_files("Général", "", &[other.id]).await.unwrap();
    let blob = std::fs::read_dir(server.data.path().join("files"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|f| f.unwrap().path())
        .find(|p| std::fs::read(p).is_ok_and(|b| b == b"other\n"))
        .expect("the stored blob");
    std::fs::remove_file(&blob).unwrap();
    let second = dir.path().join("second.db");
    let mut args = vec![second.into_os_string()];
    args.extend(server.data.server_args());
    let (code, stdout, stderr) = salon_backup(&args).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("its attached files: 1 ("), "{stdout}");
    assert!(
        stdout.contains("1 files it names were already removed"),
        "{stdout}"
    );
    server.stop().await;

    // Restore: the database and the files become a new data directory's.
    let data = DataDir::new();
    std::fs::copy(&target, data.path().join("salon.db")).unwrap();
    copy_tree(&files, &data.path().join("files"));
    let restored = TestServer::start_on(data, |_| {}).await;
    let (_, a) = restored.login("alice").await;
    let got = crate::files::download(restored.http, &a.token, file.id).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, notes);
    restored.stop().await;
}

#[tokio::test]
async fn backup_refuses_postgres_and_mariadb_with_their_tools_named() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("copy.db");
    for (url, tool) in [
        ("postgres://salon@127.0.0.1:1/salon", "pg_dump"),
        ("mysql://salon@127.0.0.1:1/salon", "mariadb-dump"),
    ] {
        let (code, _, stderr) = salon_backup(&[
            file.clone().into_os_string(),
            "--database-url".into(),
            url.into(),
        ])
        .await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(tool), "{stderr}");
        assert!(!file.exists(), "nothing written");
    }
    // No database in the data directory: said so, and nothing created there.
    let empty = tempfile::TempDir::new().unwrap();
    let (code, _, stderr) = salon_backup(&[
        file.clone().into_os_string(),
        "--data-dir".into(),
        empty.path().into(),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no database"), "{stderr}");
    assert!(!file.exists() && !empty.path().join("salon.db").exists());
}
