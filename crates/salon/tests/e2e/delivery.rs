//! R13 exactly once: a private message counts as delivered only once the recipient's
//! client acknowledged it (`ack_directs`); the backlog waiting at login comes a page at
//! a time, each after the previous one was acknowledged. A connection that is cut, a
//! client that never acknowledges, a reconnection storm: nothing is lost, and no session
//! receives the same message twice.

use std::collections::HashSet;
use std::time::Duration;

use salon_proto::{DirectMessage, Event, ServerFrame};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::harness::*;

/// A logged-in session on the raw line protocol that acknowledges only what it is told
/// to (`ack`). Also used by the cluster tests.
pub(crate) struct Raw {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Raw {
    pub(crate) async fn login(server: &TestServer, name: &str) -> (Raw, serde_json::Value) {
        let stream = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
        let (read, write) = stream.into_split();
        let mut raw = Raw {
            lines: BufReader::new(read).lines(),
            write,
        };
        raw.next().await; // hello
        let login = format!(
            r#"{{"id":1,"cmd":"login","args":{{"login":"{name}","password":"{PASSWORD}"}}}}"#
        );
        raw.write
            .write_all(format!("{login}\n").as_bytes())
            .await
            .unwrap();
        let welcome = loop {
            if let ServerFrame::Ok { re: 1, data } = raw.next().await {
                break data;
            }
        };
        (raw, welcome)
    }

    async fn next(&mut self) -> ServerFrame {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a frame in time")
            .unwrap()
            .expect("connection open");
        serde_json::from_str(&line).unwrap()
    }

    /// Acknowledges these private messages (the reply is not waited for).
    pub(crate) async fn ack(&mut self, ids: &[i64]) {
        let ack = serde_json::json!({"id": 2, "cmd": "ack_directs", "args": {"ids": ids}});
        self.write
            .write_all(format!("{ack}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next `n` private messages pushed.
    pub(crate) async fn directs(&mut self, n: usize) -> Vec<DirectMessage> {
        let mut got = Vec::new();
        while got.len() < n {
            if let ServerFrame::Event(Event::Direct(d)) = self.next().await {
                got.push(d);
            }
        }
        got
    }

    /// Asserts that no private message arrives within [`QUIET`].
    pub(crate) async fn no_more_directs(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.lines.next_line()).await {
                Err(_) => return,
                Ok(line) => {
                    let line = line.unwrap().expect("connection open");
                    assert!(!line.contains("\"event\":\"direct\""), "unexpected {line}");
                }
            }
        }
    }
}

/// Logs `name` in until nothing waits for them any more (acknowledgements travel on
/// the previous session and may still be on their way).
pub(crate) async fn wait_nothing_waiting(server: &TestServer, name: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, welcome) = server.login(name).await;
        if welcome.offline_directs == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} private messages still waiting for {name}",
            welcome.offline_directs
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn collect_directs(client: &mut salon_client::Client, n: usize) -> Vec<DirectMessage> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(
            expect_event(client, "private message", |e| match e {
                Event::Direct(d) => Some(d.clone()),
                _ => None,
            })
            .await,
        );
    }
    got
}

#[tokio::test]
async fn the_backlog_comes_a_page_per_acknowledgement_and_again_if_the_connection_is_cut() {
    let server = TestServer::start().await;
    server.register("bob").await;
    let (alice, _) = server.user("alice").await;
    let mut sent = Vec::new();
    for i in 0..250 {
        sent.push(
            alice
                .direct("bob", &format!("while away {i}"))
                .await
                .unwrap()
                .id,
        );
    }

    // A client that never acknowledges gets the first page only, then nothing.
    let (mut raw, welcome) = Raw::login(&server, "bob").await;
    assert_eq!(welcome["offline_directs"], 250);
    let first = raw.directs(100).await;
    assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), sent[..100]);
    raw.no_more_directs().await;
    drop(raw); // cut in the middle of the backlog

    // Nothing was recorded as delivered: a client that acknowledges gets all 250, in
    // order, page after page, each once.
    let (mut bob, welcome) = server.login("bob").await;
    assert_eq!(welcome.offline_directs, 250);
    let got = collect_directs(&mut bob, 250).await;
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), sent);
    expect_none(&mut bob, "a private message twice", |i| {
        matches!(i, salon_client::Incoming::Event(Event::Direct(_)))
    })
    .await;
    wait_nothing_waiting(&server, "bob").await;
}

#[tokio::test]
async fn live_private_messages_never_acknowledged_come_again_at_the_next_login() {
    let server = TestServer::start().await;
    server.register("bob").await;
    let (alice, _) = server.user("alice").await;
    // Bob's connection receives the messages live but his client never confirms them
    // (a half-open connection, a crash before they were shown).
    let (mut raw, _) = Raw::login(&server, "bob").await;
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(alice.direct("bob", &format!("live {i}")).await.unwrap().id);
    }
    let live = raw.directs(20).await;
    assert_eq!(live.iter().map(|d| d.id).collect::<Vec<_>>(), sent);
    drop(raw);

    let (mut bob, welcome) = server.login("bob").await;
    assert_eq!(welcome.offline_directs, 20);
    let again = collect_directs(&mut bob, 20).await;
    assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), sent);
    wait_nothing_waiting(&server, "bob").await;
}

#[tokio::test]
async fn reconnecting_all_the_time_loses_nothing_and_no_session_sees_a_message_twice() {
    let server = TestServer::start().await;
    server.register("bob").await;
    let (alice, _) = server.user("alice").await;
    let total = 120;
    let sender = tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 0..total {
            sent.push(alice.direct("bob", &format!("m{i}")).await.unwrap().id);
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        sent
    });
    let mut seen: HashSet<i64> = HashSet::new();
    let mut sessions = 0;
    while seen.len() < total {
        sessions += 1;
        assert!(sessions < 500, "never received everything: {}", seen.len());
        let (mut bob, _) = server.login("bob").await;
        let mut this_session = HashSet::new();
        // Read for a short while, then drop the connection without logging out.
        let until = tokio::time::Instant::now() + Duration::from_millis(30);
        while let Ok(Some(item)) = tokio::time::timeout_at(until, bob.next_event()).await {
            if let salon_client::Incoming::Event(Event::Direct(d)) = item {
                assert!(this_session.insert(d.id), "pushed twice on one session");
                seen.insert(d.id);
            }
        }
    }
    let sent: HashSet<i64> = sender.await.unwrap().into_iter().collect();
    assert_eq!(seen, sent);
    wait_nothing_waiting(&server, "bob").await;
}

#[tokio::test]
async fn acknowledging_too_many_at_once_or_others_messages_changes_nothing() {
    let server = TestServer::start().await;
    server.register("bob").await;
    server.register("carol").await;
    let (alice, _) = server.user("alice").await;
    let to_bob = alice.direct("bob", "for bob").await.unwrap().id;
    // Carol acknowledging bob's message does not mark it delivered.
    let (carol, _) = server.login("carol").await;
    carol.ack_directs(&[to_bob]).await.unwrap();
    let err = carol.ack_directs(&vec![1; 257]).await.unwrap_err();
    assert_eq!(err.code(), Some(salon_proto::ErrorCode::InvalidRequest));
    let (raw, welcome) = Raw::login(&server, "bob").await;
    assert_eq!(welcome["offline_directs"], 1);
    drop(raw);
}

#[tokio::test]
async fn a_session_without_presence_gets_no_backlog_and_cannot_mark_messages_read() {
    let server = TestServer::start().await;
    server.register("bob").await;
    let (alice, _) = server.user("alice").await;
    let id = alice.direct("bob", "for bob's eyes").await.unwrap().id;
    // A tool (`salon admin`, a bot) logged in as bob without presence.
    let mut tool = server.client().await;
    let welcome = tool
        .login_with(salon_proto::args::Login {
            login: "bob".into(),
            password: PASSWORD.into(),
            presence: Some(false),
        })
        .await
        .unwrap();
    assert_eq!(welcome.offline_directs, 0);
    expect_none(&mut tool, "the backlog", |i| {
        matches!(i, salon_client::Incoming::Event(Event::Direct(_)))
    })
    .await;
    tool.ack_directs(&[id]).await.unwrap();
    // Bob himself still finds it waiting.
    let (mut bob, welcome) = server.login("bob").await;
    assert_eq!(welcome.offline_directs, 1);
    assert_eq!(collect_directs(&mut bob, 1).await[0].id, id);
}
