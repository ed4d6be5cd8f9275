//! `salon bench amplify`: the history-amplification attack, as a workload. One employee
//! stores messages that are as large as possible on the wire (control characters, each
//! escaped as six bytes — as data stored before the protocol edge refused them would
//! be), then opens as many sessions as the server lets them and pipelines `history`
//! requests on each without ever reading. The server must hold no more than its stated
//! per-connection bound for each (docs/LIMITS.md): the result reports the server's RSS
//! against that bound and fails when it is exceeded.

use std::time::Duration;

use anyhow::{bail, Context};
use salon_server::provision::{OfflineTool, Provisioner};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{database_config, rss_kib, Report, Target};

/// A default room, which every account is a member of.
const GENERAL: &str = "Général";

pub(super) struct AmplifyArgs {
    pub sessions: usize,
    pub seconds: u64,
    pub messages: usize,
}

/// The server's limits the bound is computed from (the bench's server runs with the
/// defaults for these): docs/LIMITS.md.
fn per_connection_bound() -> u64 {
    let limits = salon_server::Limits::default();
    // Bytes accepted and not yet written, one reply waiting for room (at most a history
    // page, half the budget), and the read buffer; plus a tenth for the allocator
    // (rounding up, fragmentation), as the stated bound says.
    let data =
        limits.outbound_queue_bytes + limits.outbound_queue_bytes / 2 + limits.max_frame_bytes;
    (data + data / 10) as u64
}

pub(super) async fn amplify(
    target: &Target,
    a: &AmplifyArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(pid) = target.pid else {
        bail!("amplify measures the server's memory: start it with the bench or give --server-pid");
    };
    let user = target.users.first().context("no bench user")?;
    let token = user.token.clone();
    store_heavy_messages(&target.database, user.id, a.messages).await?;
    // The baseline is a server that has served these pages, several at once, so that
    // every pooled database connection has read them (their page caches are a fixed
    // cost, not a client's).
    let mut readers = Vec::new();
    for _ in 0..8 {
        let reader = salon_client::Client::connect_tcp(target.addr.as_str()).await?;
        reader.resume(&token).await?;
        readers.push(reader);
    }
    for _ in 0..3 {
        let mut pages = tokio::task::JoinSet::new();
        for reader in std::mem::take(&mut readers) {
            pages.spawn(async move {
                reader.room_history(GENERAL, None, Some(100)).await?;
                anyhow::Ok(reader)
            });
        }
        while let Some(done) = pages.join_next().await {
            readers.push(done??);
        }
    }
    drop(readers);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_kib(pid).unwrap_or(0);

    let mut attackers = Vec::new();
    let mut refused = 0;
    for _ in 0..a.sessions {
        match attacker(&target.addr, &token).await? {
            Some(task) => attackers.push(task),
            None => refused += 1,
        }
    }
    let accepted = attackers.len() as u64;
    let mut peak = baseline;
    let until = tokio::time::Instant::now() + Duration::from_secs(a.seconds);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    let requests: u64 = attackers
        .iter()
        .map(|t| t.sent.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    for t in &attackers {
        t.task.abort();
    }
    drop(attackers);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid).unwrap_or(0);

    let bound_kib = baseline + accepted * per_connection_bound() / 1024;
    report.line(format!(
        "amplify:   {} messages of 4000 control characters (~24 KB each on the wire); \
         {accepted} sessions of one user pipelining `history` without reading, {refused} \
         refused (max_sessions_per_user); {requests} requests written in {} s",
        a.messages, a.seconds
    ));
    report.line(format!(
        "memory:    server RSS {:.1} MiB before, peak {:.1} MiB, {:.1} MiB 3 s after the \
         sessions closed; bound {:.1} MiB (before + {accepted} × {:.0} KiB per connection)",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        after as f64 / 1024.0,
        bound_kib as f64 / 1024.0,
        per_connection_bound() as f64 / 1024.0,
    ));
    if peak > bound_kib {
        bail!("the server's RSS ({peak} KiB) went past the bound ({bound_kib} KiB)");
    }
    Ok(())
}

/// Stores `n` messages of 4,000 control characters in Général, straight into the
/// database (the protocol refuses control characters now; older data may hold them).
async fn store_heavy_messages(database: &str, author: i64, n: usize) -> anyhow::Result<()> {
    let provisioner = Provisioner::open(&database_config(database), OfflineTool::Bench).await?;
    let bodies = vec!["\u{1}".repeat(4000); n];
    let stored = provisioner
        .seed_room_messages(GENERAL, author, bodies)
        .await;
    provisioner.close().await;
    Ok(stored?)
}

struct Attacker {
    task: tokio::task::JoinHandle<()>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A session that resumes, then writes `history` requests forever and reads nothing.
/// `None` if the server refused the session.
async fn attacker(addr: &str, token: &str) -> anyhow::Result<Option<Attacker>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await?; // hello
    let resume = format!("{{\"id\":0,\"cmd\":\"resume\",\"args\":{{\"token\":\"{token}\"}}}}\n");
    write.write_all(resume.as_bytes()).await?;
    let reply = lines.next_line().await?.unwrap_or_default();
    if !reply.contains("\"type\":\"ok\"") {
        return Ok(None);
    }
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        // Keeps the read half open (and unread) for as long as it writes.
        let _unread = lines;
        for id in 1u64.. {
            let request = format!(
                "{{\"id\":{id},\"cmd\":\"history\",\"args\":{{\"room\":\"Général\",\"limit\":100}}}}\n"
            );
            if write.write_all(request.as_bytes()).await.is_err() {
                return;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    Ok(Some(Attacker { task, sent }))
}
