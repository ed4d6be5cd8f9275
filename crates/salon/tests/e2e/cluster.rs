//! Several nodes behind one name (issue 16, first part): nodes sharing one PostgreSQL or
//! MariaDB database and a NATS bus. Run in the suite's PostgreSQL and MariaDB passes
//! (nodes on SQLite are refused: that is tested on every backend). Needs NATS at
//! `SALON_TEST_NATS_URL` (default `nats://127.0.0.1:4222`): skipped with a loud message
//! when it cannot be reached, unless `SALON_REQUIRE_SERVICES=1`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use salon_client::{Client, Incoming};
use salon_proto::{CloseCode, ErrorCode, Event};

use crate::harness::*;
use crate::proxy::CuttableProxy;

/// The NATS URL, or `None` (the test is skipped) when NATS is not reachable.
async fn nats() -> Option<String> {
    let url =
        std::env::var("SALON_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let address = url.trim_start_matches("nats://").to_owned();
    match tokio::net::TcpStream::connect(&address).await {
        Ok(_) => Some(url),
        Err(e) if std::env::var("SALON_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("NATS at {url} is unreachable ({e}) and SALON_REQUIRE_SERVICES=1")
        }
        Err(e) => {
            eprintln!(
                "\n=== SKIPPED: cluster test needs NATS at {url} ({e}); \
                 set SALON_TEST_NATS_URL ===\n"
            );
            None
        }
    }
}

/// `n` nodes (node ids 1…n) on one new database and one NATS, in a cluster of their own
/// (a name no other test uses), or `None` when the backend is SQLite or NATS is missing.
async fn cluster(n: u16) -> Option<Vec<TestServer>> {
    cluster_with(n, |_, _| {}).await
}

/// [`cluster`], each node's configuration adjusted by `tune(node_id, config)` after the
/// cluster's settings.
async fn cluster_with(
    n: u16,
    tune: impl Fn(u16, &mut salon_server::Config),
) -> Option<Vec<TestServer>> {
    if backend() == Backend::Sqlite {
        eprintln!("cluster test: needs PostgreSQL or MariaDB, run in those passes");
        return None;
    }
    let url = nats().await?;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "salon_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        real_now_ms() % 1_000_000
    );
    let data = DataDir::new();
    let mut nodes = Vec::new();
    for node in 1..=n {
        let (url, name) = (url.clone(), name.clone());
        let tune = &tune;
        nodes.push(
            TestServer::start_on(data.share(), move |c| {
                c.node_id = node;
                c.cluster.nats_urls = vec![url];
                c.cluster.name = name;
                tune(node, c);
            })
            .await,
        );
    }
    Some(nodes)
}

#[tokio::test]
async fn a_cluster_on_sqlite_is_refused_with_a_clear_message() {
    let data = tempfile::TempDir::new().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["serve", "--no-console", "--data-dir"])
        .arg(data.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--nats-url",
            "nats://127.0.0.1:4222",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs a database every node shares: PostgreSQL or MariaDB"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_room_message_reaches_the_members_on_every_node_once() {
    let Some(nodes) = cluster(3).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("bob").await;
    nodes[0].register("carol").await;
    let (mut bob, _) = nodes[1].login("bob").await;
    let (mut carol, _) = nodes[2].login("carol").await;
    let (mut bob_too, _) = nodes[2].login("bob").await;

    let sent = alice
        .send("Général", "bonjour à tous les nœuds")
        .await
        .unwrap();
    for (who, client) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("bob on C", &mut bob_too),
    ] {
        let text = expect_event(client, who, |e| room_text(e, "Général")).await;
        assert_eq!(text, "bonjour à tous les nœuds", "{who}");
        // Once: nothing else from that room follows.
        expect_none(
            client,
            who,
            |i| matches!(i, salon_client::Incoming::Event(e) if room_text(e, "Général").is_some()),
        )
        .await;
    }
    // And history agrees on every node: one database.
    let page = bob.room_history("Général", None, Some(10)).await.unwrap();
    assert!(page.messages.iter().any(|m| m.id == sent.id));
}

#[tokio::test]
async fn membership_answered_on_one_node_holds_on_the_others() {
    let Some(nodes) = cluster(2).await else {
        return;
    };
    let (on_a, _) = nodes[0].user("dora").await;
    let (on_b, _) = nodes[1].login("dora").await;
    // Not a member yet: refused on B.
    let err = on_b.send("Blabla", "trop tôt").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
    // Joined on A: B lets the same user send at once.
    on_a.join("Blabla").await.unwrap();
    on_b.send("Blabla", "depuis B").await.unwrap();
    // Left on A: B refuses again once the bus has brought the change (this first part
    // of the cluster work leaves that window: docs/CLUSTER.md). Watched with a read,
    // which stores nothing.
    on_a.leave("Blabla").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while on_b.room_history("Blabla", None, Some(1)).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never learnt of the leave"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let err = on_b.send("Blabla", "après le départ").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
}

#[tokio::test]
async fn a_kick_on_one_node_closes_the_sessions_on_every_node() {
    let Some(nodes) = cluster(2).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    nodes[0].register("eve").await;
    let (mut eve_b, _) = nodes[1].login("eve").await;
    let (mut eve_a, _) = nodes[0].login("eve").await;
    admin
        .kick(salon_proto::args::Kick {
            user: "eve".into(),
            seconds: Some(60),
            reason: Some("flood".into()),
        })
        .await
        .unwrap();
    for eve in [&mut eve_a, &mut eve_b] {
        let (code, message) = expect_closing(eve).await;
        assert_eq!(code, CloseCode::Kicked);
        assert!(message.contains("flood"), "{message}");
    }
    assert_eq!(
        nodes[1].login_refused("eve", PASSWORD).await,
        Some(ErrorCode::Kicked)
    );
}

#[tokio::test]
async fn a_node_refuses_to_start_beside_a_live_node_with_its_node_id() {
    let Some(nodes) = cluster(1).await else {
        return;
    };
    let live = &nodes[0];
    let data = tempfile::TempDir::new().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["serve", "--no-console", "--data-dir"])
        .arg(data.path())
        .args(["--database-url", &live.store_url()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--no-metrics",
        ])
        .args([
            "--node-id",
            "1",
            "--cluster-name",
            &live.config.cluster.name,
        ])
        .args(["--nats-url", &live.config.cluster.nats_urls[0]])
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node_id 1 is already used by a live node of cluster"),
        "{stderr}"
    );
    // The live node is untouched.
    live.user("frank").await;
}

#[tokio::test]
async fn join_requests_decisions_and_broadcasts_cross_nodes() {
    let Some(nodes) = cluster(2).await else {
        return;
    };
    let (mut admin, _) = nodes[0].login("admin").await;
    let (gina, _) = nodes[1].user("gina").await;
    let (mut gina_too, _) = nodes[1].login("gina").await;

    // A request made on B reaches the administrator on A, who accepts it there.
    gina.join("Informatique").await.unwrap();
    let request = expect_event(&mut admin, "join request", |e| match e {
        salon_proto::Event::JoinRequest(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (request.user.as_str(), request.room.as_str()),
        ("gina", "Informatique")
    );
    admin.accept("gina", "Informatique", None).await.unwrap();
    let state = expect_event(&mut gina_too, "decision on B", |e| match e {
        salon_proto::Event::Membership { room, .. }
            if room.name == "Informatique" && room.state != salon_proto::MemberState::Pending =>
        {
            Some(room.state)
        }
        _ => None,
    })
    .await;
    assert_eq!(state, salon_proto::MemberState::Member);
    gina.send("Informatique", "merci !").await.unwrap();

    // A broadcast from A reaches the sessions on B.
    admin.broadcast("Maintenance à 18h").await.unwrap();
    let text = expect_event(&mut gina_too, "notice on B", |e| match e {
        salon_proto::Event::Notice { text, .. } => Some(text.clone()),
        _ => None,
    })
    .await;
    assert_eq!(text, "Maintenance à 18h");
}

/// A proxy in front of NATS (at `url`), for a node whose link to it a test cuts.
async fn nats_proxy(url: &str) -> CuttableProxy {
    let address = url.trim_start_matches("nats://");
    let target = tokio::net::lookup_host(address)
        .await
        .unwrap()
        .next()
        .unwrap();
    CuttableProxy::start(target).await
}

/// Two nodes, node 2's link to NATS through a proxy the test cuts (`tune` applies to
/// both), or `None` as [`cluster`].
async fn two_nodes_one_cuttable(
    tune: impl Fn(u16, &mut salon_server::Config),
) -> Option<(Vec<TestServer>, CuttableProxy)> {
    if backend() == Backend::Sqlite {
        eprintln!("cluster test: needs PostgreSQL or MariaDB, run in those passes");
        return None;
    }
    let proxy = nats_proxy(&nats().await?).await;
    let through = format!("nats://{}", proxy.addr);
    let nodes = cluster_with(2, |node, c| {
        if node == 2 {
            c.cluster.nats_urls = vec![through.clone()];
        }
        tune(node, c);
    })
    .await?;
    Some((nodes, proxy))
}

/// Room and private message ids `client` receives until it has every one of `expected`
/// (at most 30 s), then for a quiet moment more: how many times each arrived.
async fn receive_all(client: &mut Client, who: &str, expected: &HashSet<i64>) -> HashMap<i64, u32> {
    let mut got: HashMap<i64, u32> = HashMap::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let take = |item: Incoming, got: &mut HashMap<i64, u32>| match item {
        Incoming::Event(Event::Message(m)) => *got.entry(m.id).or_default() += 1,
        Incoming::Event(Event::Direct(d)) => *got.entry(d.id).or_default() += 1,
        Incoming::Closing { code, message, .. } => panic!("{who} closed: {code:?} {message}"),
        _ => {}
    };
    while !expected.iter().all(|id| got.contains_key(id)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, client.next_event()).await {
            Ok(Some(item)) => take(item, &mut got),
            Ok(None) => panic!("{who}: connection ended"),
            Err(_) => panic!(
                "{who}: {} of {} acknowledged messages never arrived",
                expected.iter().filter(|id| !got.contains_key(id)).count(),
                expected.len()
            ),
        }
    }
    // Anything late (a repeat) arrives in this moment.
    let quiet = tokio::time::Instant::now() + QUIET * 3;
    while let Ok(Some(item)) = tokio::time::timeout_at(quiet, client.next_event()).await {
        take(item, &mut got);
    }
    got
}

/// Every acknowledged message reached `who` once, and nothing else from those rooms.
fn exactly_once(who: &str, got: &HashMap<i64, u32>, expected: &HashSet<i64>) {
    let repeated: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "{who} got repeats: {repeated:?}");
    let stray: Vec<_> = got.keys().filter(|id| !expected.contains(id)).collect();
    assert!(
        stray.is_empty(),
        "{who} got messages never acknowledged: {stray:?}"
    );
}

/// A non-member (or a user to whom no private message was sent) got none of these.
async fn none_of(client: &mut Client, who: &str, room: &str) {
    expect_none(client, who, |i| {
        matches!(i, Incoming::Event(Event::Message(m)) if m.room == room)
            || matches!(i, Incoming::Event(Event::Direct(_)))
    })
    .await;
}

#[tokio::test]
async fn a_node_cut_from_nats_catches_up_every_message_once_from_the_database() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    for name in ["bob", "frank", "carol"] {
        nodes[0].register(name).await;
    }
    let (mut bob, _) = nodes[1].login("bob").await;
    let (mut frank, _) = nodes[1].login("frank").await;
    let (mut carol, _) = nodes[1].login("carol").await;
    for member in [&alice, &bob, &frank] {
        member.join("Blabla").await.unwrap();
    }
    // Carol is not a member of Blabla.

    proxy.cut();
    // Node 2 is without NATS: what node 1 stores now reaches it only from the database.
    let mut room = HashSet::new();
    for i in 0..20 {
        room.insert(
            alice
                .send("Blabla", &format!("pendant la coupure {i}"))
                .await
                .unwrap()
                .id,
        );
    }
    let direct = alice
        .direct("bob", "en privé, pendant la coupure")
        .await
        .unwrap()
        .id;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.restore();

    let mut for_bob = room.clone();
    for_bob.insert(direct);
    let got = receive_all(&mut bob, "bob", &for_bob).await;
    exactly_once("bob", &got, &for_bob);
    let got = receive_all(&mut frank, "frank", &room).await;
    exactly_once("frank", &got, &room);
    none_of(&mut carol, "carol", "Blabla").await;

    // The link is whole again: a message now arrives live, once.
    let after = HashSet::from([alice.send("Blabla", "après").await.unwrap().id]);
    let got = receive_all(&mut frank, "frank", &after).await;
    exactly_once("frank", &got, &after);
}

/// Sends to `room` from `client` until `stop`, with a key each (a retry stores once);
/// returns the ids acknowledged.
async fn send_until(client: Arc<Client>, room: &'static str, stop: Arc<AtomicBool>) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) && ids.len() < 3_000 {
        i += 1;
        let sent = client.send(room, &format!("charge {i}")).await.unwrap();
        ids.push(sent.id);
    }
    ids
}

#[tokio::test]
async fn under_load_a_nats_cut_loses_and_repeats_nothing_acknowledged() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    for name in ["alice", "bob", "erin", "frank", "carol", "dave"] {
        nodes[0].register(name).await;
    }
    let (alice, _) = nodes[0].login("alice").await;
    let (mut erin, _) = nodes[0].login("erin").await;
    let (mut dave, _) = nodes[0].login("dave").await;
    let (bob, _) = nodes[1].login("bob").await;
    let (mut frank, _) = nodes[1].login("frank").await;
    let (mut carol, _) = nodes[1].login("carol").await;
    for member in [&alice, &bob, &erin, &frank] {
        member.join("Blabla").await.unwrap();
    }
    let (alice, bob) = (Arc::new(alice), Arc::new(bob));
    let stop = Arc::new(AtomicBool::new(false));
    // One sender on each node, both sending all along.
    let from_a = tokio::spawn(send_until(alice.clone(), "Blabla", stop.clone()));
    let from_b = tokio::spawn(send_until(bob.clone(), "Blabla", stop.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    proxy.restore();
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    stop.store(true, Ordering::SeqCst);
    let (a, b) = (from_a.await.unwrap(), from_b.await.unwrap());
    assert!(!a.is_empty() && !b.is_empty());
    let acknowledged: HashSet<i64> = a.iter().chain(&b).copied().collect();
    assert_eq!(acknowledged.len(), a.len() + b.len());

    for (who, client) in [("erin on 1", &mut erin), ("frank on 2", &mut frank)] {
        let got = receive_all(client, who, &acknowledged).await;
        exactly_once(who, &got, &acknowledged);
    }
    for (who, client) in [("dave on 1", &mut dave), ("carol on 2", &mut carol)] {
        none_of(client, who, "Blabla").await;
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_caught_up_from_the_database() {
    // Node 2 holds at most 2 bus messages from NATS: a burst overflows its subscription
    // and the NATS client drops the newest (a slow consumer).
    let Some(nodes) = cluster_with(2, |node, c| {
        if node == 2 {
            c.cluster.nats_pending_max = 2;
        }
    })
    .await
    else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("bob").await;
    let (mut bob, _) = nodes[1].login("bob").await;
    // A burst: many sends at once, stored in a few commits and published back to back.
    let sends = (0..300).map(|i| {
        let alice = &alice;
        async move {
            alice
                .send("Général", &format!("rafale {i}"))
                .await
                .unwrap()
                .id
        }
    });
    let ids: HashSet<i64> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .collect();
    let got = receive_all(&mut bob, "bob", &ids).await;
    exactly_once("bob", &got, &ids);
}

#[tokio::test]
async fn a_node_that_cannot_tell_what_it_missed_closes_its_sessions_to_resync() {
    // Node 2 remembers 4 delivered ids: the messages before the cut push out ids
    // newer than where its catch-up must start, so it cannot sort out repeats.
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|node, c| {
        if node == 2 {
            c.cluster.delivered_ids_max = 4;
        }
    })
    .await
    else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("bob").await;
    let (mut bob, _) = nodes[1].login("bob").await;
    let mut before = HashSet::new();
    for i in 0..8 {
        before.insert(
            alice
                .send("Général", &format!("avant {i}"))
                .await
                .unwrap()
                .id,
        );
    }
    let got = receive_all(&mut bob, "bob", &before).await;
    exactly_once("bob", &got, &before);

    proxy.cut();
    let missed = alice.send("Général", "pendant la coupure").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.restore();
    let (code, message) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Resync, "{message}");
    // Back on the node, history has what was missed.
    let (mut bob, _) = nodes[1].login("bob").await;
    let page = bob.room_history("Général", None, Some(5)).await.unwrap();
    assert!(page.messages.iter().any(|m| m.id == missed.id));
    // The node is whole again: whatever else it notices of the cut (a gap in node 1's
    // numbers, at its next tick) does not close the new session, and messages arrive.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let now = HashSet::from([alice.send("Général", "après").await.unwrap().id]);
    let got = receive_all(&mut bob, "bob again", &now).await;
    exactly_once("bob again", &got, &now);
}

#[tokio::test]
async fn joins_and_leaves_missed_by_a_cut_node_hold_for_what_it_catches_up() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("bob").await;
    nodes[0].register("frank").await;
    let (bob_on_1, _) = nodes[0].login("bob").await;
    let (frank_on_1, _) = nodes[0].login("frank").await;
    let (mut bob_on_2, _) = nodes[1].login("bob").await;
    let (mut frank_on_2, _) = nodes[1].login("frank").await;
    alice.join("Blabla").await.unwrap();
    frank_on_1.join("Blabla").await.unwrap();

    proxy.cut();
    // Node 2 hears of neither change, nor of the message after them.
    frank_on_1.leave("Blabla").await.unwrap();
    bob_on_1.join("Blabla").await.unwrap();
    let sent = alice
        .send("Blabla", "après les changements")
        .await
        .unwrap()
        .id;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.restore();

    let expected = HashSet::from([sent]);
    let got = receive_all(&mut bob_on_2, "bob on 2 (joined)", &expected).await;
    exactly_once("bob on 2", &got, &expected);
    none_of(&mut frank_on_2, "frank on 2 (left)", "Blabla").await;
    // And live again after: still so.
    let later = HashSet::from([alice.send("Blabla", "plus tard").await.unwrap().id]);
    let got = receive_all(&mut bob_on_2, "bob on 2", &later).await;
    exactly_once("bob on 2", &got, &later);
    none_of(&mut frank_on_2, "frank on 2", "Blabla").await;
}
