//! Several nodes behind one name (issue 16, first part): nodes sharing one PostgreSQL or
//! MariaDB database and a NATS bus. Run in the suite's PostgreSQL and MariaDB passes
//! (nodes on SQLite are refused: that is tested on every backend). Needs NATS at
//! `SALON_TEST_NATS_URL` (default `nats://127.0.0.1:4222`): skipped with a loud message
//! when it cannot be reached, unless `SALON_REQUIRE_SERVICES=1`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use salon_client::{Client, Incoming};
use salon_proto::{args, CloseCode, Command, ErrorCode, Event, MemberState, Status};

use crate::delivery::Raw;
use crate::harness::*;
use crate::presence::{stored_status, wait_stored};
use crate::proxy::CuttableProxy;

/// The NATS URL, or `None` (the test is skipped) when NATS is not reachable.
pub async fn nats() -> Option<String> {
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

/// The NATS URL and a cluster name no other test uses (`prefix`, the process, a counter,
/// the time), or `None` (the test is skipped) when the backend is SQLite or NATS is
/// missing.
pub async fn cluster_setting(prefix: &str) -> Option<(String, String)> {
    if backend() == Backend::Sqlite {
        eprintln!("cluster test: needs PostgreSQL or MariaDB, run in those passes");
        return None;
    }
    let url = nats().await?;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        real_now_ms() % 1_000_000
    );
    Some((url, name))
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
    let (url, name) = cluster_setting("salon_test").await?;
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
    // Left on A: B refuses at once (the leave is answered once every node applied it).
    on_a.leave("Blabla").await.unwrap();
    let err = on_b.send("Blabla", "après le départ").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
}

/// Dora, registered on node A (`nodes[0]`) and logged in on node B too, joined Blabla on
/// A and posted there from B: her sessions on A and on B.
async fn dora_member_on_both(nodes: &[TestServer]) -> (Client, Client) {
    let (on_a, _) = nodes[0].user("dora").await;
    let (on_b, _) = nodes[1].login("dora").await;
    on_a.join("Blabla").await.unwrap();
    on_b.send("Blabla", "depuis B").await.unwrap();
    (on_a, on_b)
}

/// Waits for the `membership` event telling `client` it is a member of `room`.
async fn told_member_of(client: &mut Client, what: &str, room: &str) {
    expect_event(client, what, |e| match e {
        Event::Membership { room: info, .. }
            if info.name == room && info.state == MemberState::Member =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
}

/// Holds everything on `proxy`'s link (open, nothing passing) for `ms`, then lets it
/// through again; the proxy comes back when the task ends.
fn held_for(proxy: CuttableProxy, ms: u64) -> tokio::task::JoinHandle<CuttableProxy> {
    proxy.partition();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        proxy.heal();
        proxy
    })
}

/// The administrator kicks eve for 60 s, for "flood".
async fn kick_eve_for_flood(admin: &Client) {
    admin
        .kick(salon_proto::args::Kick {
            user: "eve".into(),
            seconds: Some(60),
            reason: Some("flood".into()),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_leave_is_answered_once_every_node_applied_it_even_over_a_slow_link() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (on_a, on_b) = dora_member_on_both(&nodes).await;
    // B's link to NATS holds everything for 300 ms while dora leaves on A: the answer
    // waits for B, so her session on B can no longer post when she has it.
    let heal = held_for(proxy, 300);
    on_a.leave("Blabla").await.unwrap();
    let err = on_b.send("Blabla", "après le départ").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
    drop(heal.await.unwrap());
}

#[tokio::test]
async fn a_channel_is_answered_once_every_node_knows_it_even_over_a_slow_link() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    let (bob, _) = nodes[1].user("bob").await;
    // B's link to NATS holds everything for 300 ms while alice creates a channel with
    // bob on A: the answer waits for B, so bob's session there can post in it at once.
    let heal = held_for(proxy, 300);
    alice.create_channel("Projet", &["bob"]).await.unwrap();
    bob.send("Projet", "déjà là").await.unwrap();
    drop(heal.await.unwrap());
}

#[tokio::test]
async fn a_leave_holds_on_a_node_that_lags_longer_than_the_leave_waits_for_it() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (on_a, on_b) = dora_member_on_both(&nodes).await;
    // B's link to NATS holds everything (open, nothing passing) for longer than A waits
    // for B's answer: A answers the leave without it. B has not applied it, but it has
    // not taken back any of its own heartbeats for that long either, so it checks the
    // membership its registry still shows in the database.
    proxy.partition();
    let started = std::time::Instant::now();
    on_a.leave("Blabla").await.unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "answered before B could count as behind"
    );
    let err = on_b.send("Blabla", "après le départ").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
    // What the database confirms still works on B meanwhile.
    on_b.send("Général", "toujours là").await.unwrap();
    proxy.heal();
    // Once B has applied the leave, its registry says so itself.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let err = on_b.send("Blabla", "toujours pas").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
}

/// Dora joins Blabla on node `join_on` (1 or 2), then leaves it on the other node, while
/// node 2's link to NATS holds everything for 800 ms. Once it is through and `settle_ms`
/// more have passed, she can post there from neither node.
async fn join_then_leave_elsewhere_over_a_held_link(join_on: usize, settle_ms: u64) {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (on_1, _) = nodes[0].user("dora").await;
    let (on_2, _) = nodes[1].login("dora").await;
    let (joins, leaves) = if join_on == 1 {
        (&on_1, &on_2)
    } else {
        (&on_2, &on_1)
    };
    let heal = held_for(proxy, 800);
    joins.join("Blabla").await.unwrap();
    leaves.leave("Blabla").await.unwrap();
    let _proxy = heal.await.unwrap();
    tokio::time::sleep(Duration::from_millis(settle_ms)).await;
    for (node, on) in [(1, &on_1), (2, &on_2)] {
        let sent = on.send("Blabla", "après le départ").await;
        let err = sent.expect_err(&format!("a member again on node {node}"));
        assert_eq!(err.code(), Some(ErrorCode::NotMember), "on node {node}");
    }
}

#[tokio::test]
async fn a_join_held_up_on_its_way_to_nats_cannot_undo_a_leave_made_after_it() {
    // Dora joins on node 2, whose link holds her join: it is answered only once its bus
    // message reached NATS, so the leave she makes next on node 1 comes after it on every
    // node. (Answered at once, the join's message would reach node 1 after the leave and
    // make her a member there again.)
    join_then_leave_elsewhere_over_a_held_link(2, 500).await;
}

#[tokio::test]
async fn a_join_still_on_its_way_to_a_node_cannot_undo_a_leave_made_there_after_it() {
    // Dora joins on node 1 and leaves on node 2, whose link holds everything: node 2
    // applies its leave at once and hears of the join (which came first) only
    // afterwards, which must not make her a member there again. Checked once node 2 is
    // current again (its heartbeats come back) and trusts its registry.
    join_then_leave_elsewhere_over_a_held_link(1, 1_500).await;
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
    kick_eve_for_flood(&admin).await;
    for eve in [&mut eve_a, &mut eve_b] {
        let (code, message) = expect_closing(eve).await;
        assert_eq!(code, CloseCode::Kicked);
        assert_eq!(message, "you were kicked by Administrator for 1 min: flood");
    }
    assert_eq!(
        nodes[1].login_refused("eve", PASSWORD).await,
        Some(ErrorCode::Kicked)
    );
}

#[tokio::test]
async fn a_kick_is_answered_once_the_other_nodes_closed_the_sessions_even_over_a_slow_link() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    nodes[0].register("eve").await;
    let (mut eve_b, _) = nodes[1].login("eve").await;
    // B's link to NATS holds everything for 800 ms while the administrator kicks on A:
    // the answer waits for B, so eve's session there is closed by the time it comes.
    let heal = held_for(proxy, 800);
    kick_eve_for_flood(&admin).await;
    let answered = tokio::time::Instant::now();
    let (code, _) = expect_closing(&mut eve_b).await;
    assert_eq!(code, CloseCode::Kicked);
    // Without the wait, the closing frame would follow the answer by the link's 800 ms.
    assert!(
        answered.elapsed() < Duration::from_millis(400),
        "eve's session on B was closed {:?} after the kick was answered",
        answered.elapsed()
    );
    drop(heal.await.unwrap());
}

#[tokio::test]
async fn a_kicked_session_on_a_node_that_lags_is_closed_at_its_next_command() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    nodes[0].register("eve").await;
    let (eve_b, _) = nodes[1].login("eve").await;
    eve_b.send("Général", "avant").await.unwrap();
    // B's link to NATS holds everything for longer than A waits: the kick is answered
    // without B. B, not current, checks eve's token before her next command: deleted by
    // the kick, so her command is refused and her session closed as kicked.
    proxy.partition();
    kick_eve_for_flood(&admin).await;
    let err = eve_b.send("Général", "après le kick").await.unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("Kicked") && err.contains("kicked by Administrator for 1 min: flood"),
        "{err}"
    );
    // Nothing she sent after the kick was stored.
    let page = admin.room_history("Général", None, Some(20)).await.unwrap();
    assert!(page.messages.iter().any(|m| m.text == "avant"));
    assert!(!page.messages.iter().any(|m| m.text == "après le kick"));
    proxy.heal();
}

/// `salon serve` as a second node with node id 1 in `live`'s cluster, on its database,
/// reaching NATS at `nats`, in a data directory of its own (`data`).
fn second_node_one(
    live: &TestServer,
    nats: &str,
    data: &tempfile::TempDir,
) -> tokio::process::Command {
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"));
    serve
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
        .args(["--nats-url", nats])
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .kill_on_drop(true);
    serve
}

/// The second node with node id 1 exited, saying why.
fn refused_as_node_one(out: &std::process::Output) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node_id 1 is already used by a live node of cluster"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_node_refuses_to_start_beside_a_live_node_with_its_node_id() {
    let Some(nodes) = cluster(1).await else {
        return;
    };
    let live = &nodes[0];
    let data = tempfile::TempDir::new().unwrap();
    let out = second_node_one(live, &live.config.cluster.nats_urls[0], &data)
        .output()
        .await
        .unwrap();
    refused_as_node_one(&out);
    // The live node is untouched.
    live.user("frank").await;
}

#[tokio::test]
async fn a_node_started_while_nats_is_unreachable_checks_its_node_id_once_it_is_there() {
    let Some(nodes) = cluster(1).await else {
        return;
    };
    let live = &nodes[0];
    // The new node reaches NATS through a proxy that refuses at first: it waits for NATS,
    // then must still find node 1 there.
    let proxy = nats_proxy(&live.config.cluster.nats_urls[0]).await;
    proxy.cut();
    let data = tempfile::TempDir::new().unwrap();
    let start = second_node_one(live, &format!("nats://{}", proxy.addr), &data).output();
    let start = tokio::spawn(start);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.restore();
    let out = tokio::time::timeout(Duration::from_secs(30), start)
        .await
        .expect("a node with a taken node_id kept running once NATS was there")
        .unwrap()
        .unwrap();
    refused_as_node_one(&out);
    live.user("frank").await;
}

#[tokio::test]
async fn a_node_id_no_node_can_have_is_not_taken_for_a_live_node() {
    let Some(nodes) = cluster(1).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    let nats = async_nats::connect(nats().await.unwrap().as_str())
        .await
        .expect("connect to NATS");
    let subject = format!("{}.bus", nodes[0].config.cluster.name);
    // A heartbeat from `node`, then a leave on node 1 (which waits for every live node
    // to have applied it, 2.5 s at least for one that never answers): how long it took.
    let leave_after_heartbeat_from = |node: u16| {
        let (nats, subject, alice) = (&nats, subject.clone(), &alice);
        async move {
            let heartbeat = format!(
                r#"{{"node":{node},"boot":5,"seq":1,"at":{},"facts":0}}"#,
                real_now_ms()
            );
            nats.publish(subject, heartbeat.into()).await.unwrap();
            nats.flush().await.unwrap();
            alice.join("Blabla").await.unwrap();
            let started = tokio::time::Instant::now();
            alice.leave("Blabla").await.unwrap();
            started.elapsed()
        }
    };
    // Node 200 cannot exist (node ids stop at 13): not waited for.
    let took = leave_after_heartbeat_from(200).await;
    assert!(
        took < Duration::from_millis(2_000),
        "a leave waited {took:?} for node 200"
    );
    // Node 12 can: the leave waits for it (the check above can fail).
    let took = leave_after_heartbeat_from(12).await;
    assert!(
        took >= Duration::from_millis(2_000),
        "a leave did not wait for node 12: {took:?}"
    );
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

#[tokio::test]
async fn a_signal_drains_one_node_and_the_shutdown_command_stops_them_all() {
    let Some(mut nodes) = cluster(3).await else {
        return;
    };
    let (mut admin, _) = nodes[0].login("admin").await;
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("bob").await;
    let (mut bob, _) = nodes[1].login("bob").await;
    let (_carol_on_c, _) = nodes[2].user("carol").await;

    // A signal (here the harness's graceful stop) drains node C only: nobody elsewhere
    // hears of a shutdown, and the others go on serving.
    let node_c = nodes.pop().unwrap();
    node_c.stop().await;
    alice.send("Général", "C est parti").await.unwrap();
    let text = expect_event(&mut bob, "message after C stopped", |e| match e {
        Event::Shutdown { .. } => panic!("a node's signal reached another node: {e:?}"),
        e => room_text(e, "Général"),
    })
    .await;
    assert_eq!(text, "C est parti");

    // The shutdown command on A stops every node: B's sessions see A's countdown and
    // message, B refuses logins, and both nodes stop by themselves.
    admin
        .request(Command::Shutdown(args::Shutdown {
            seconds: Some(2),
            message: Some("mise à jour du cluster".into()),
        }))
        .await
        .unwrap();
    for expected in [2, 1, 0] {
        let (seconds, message) = expect_event(&mut bob, "countdown on B", |e| match e {
            Event::Shutdown { seconds, message } => Some((*seconds, message.clone())),
            _ => None,
        })
        .await;
        assert_eq!(
            (seconds, message.as_str()),
            (expected, "mise à jour du cluster")
        );
        if expected == 2 {
            assert_eq!(
                nodes[1].login_refused("alice", PASSWORD).await,
                Some(ErrorCode::ShuttingDown),
                "B refuses logins during A's countdown"
            );
        }
    }
    let (code, message) = expect_closing(&mut bob).await;
    assert_eq!(
        (code, message.as_str()),
        (CloseCode::Shutdown, "mise à jour du cluster")
    );
    let _ = expect_closing(&mut admin).await;
    let node_b = nodes.pop().unwrap();
    let node_a = nodes.pop().unwrap();
    let (_, _) = tokio::join!(node_a.wait_stopped(), node_b.wait_stopped());
}

#[tokio::test]
async fn a_private_message_from_a_node_whose_clock_is_behind_is_delivered_once() {
    let Some(nodes) = cluster(2).await else {
        return;
    };
    // The test clocks stand still unless moved. B's runs an hour ahead.
    nodes[1].clock.advance_ms(3_600_000);
    nodes[0].register("bob").await;
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("carol").await;
    let (carol, _) = nodes[1].login("carol").await;
    let mut waiting = Vec::new();
    for i in 0..150 {
        if i == 100 {
            nodes[1].clock.advance_ms(1_000);
        }
        waiting.push(
            carol
                .direct("bob", &format!("en attente {i}"))
                .await
                .unwrap()
                .id,
        );
    }
    // A's clock is half a second behind B's: what A makes now has an id between B's
    // 100th and 101st.
    nodes[0]
        .clock
        .advance_ms(nodes[1].clock_now() - 500 - nodes[0].clock_now());

    // Bob logs in on B with 150 waiting: the first page of 100 comes.
    let (mut bob, welcome) = Raw::login(&nodes[1], "bob").await;
    assert_eq!(welcome["offline_directs"], 150);
    let first = bob.directs(100).await;
    assert_eq!(
        first.iter().map(|d| d.id).collect::<Vec<_>>(),
        waiting[..100]
    );
    // A message from A reaches him live, not acknowledged yet.
    let live = alice.direct("bob", "depuis A").await.unwrap().id;
    assert!(
        waiting[99] < live && live < waiting[100],
        "A's id is between B's"
    );
    let got = bob.directs(1).await;
    assert_eq!(got[0].id, live);
    // Acknowledging the first page brings the second: the 50 others, and not the live
    // one again (it was not waiting when he logged in).
    bob.ack(&waiting[..100]).await;
    let second = bob.directs(50).await;
    assert_eq!(
        second.iter().map(|d| d.id).collect::<Vec<_>>(),
        waiting[100..]
    );
    bob.no_more_directs().await;
}

#[tokio::test]
async fn the_randomized_authorization_model_holds_with_users_spread_over_three_nodes() {
    let Some(nodes) = cluster(3).await else {
        return;
    };
    crate::authorization::run_model(&nodes).await;
}

/// Waits for a `presence` event telling `user`'s `status`.
pub(crate) async fn presence_of(c: &mut salon_client::Client, user: &str, status: Status) {
    expect_event(c, &format!("{user} {status:?}"), |e| match e {
        Event::Presence { users, .. } => users
            .iter()
            .any(|p| p.username == user && p.status == status)
            .then_some(()),
        _ => None,
    })
    .await
}

/// Asks `who` until `user` has `status` there (the bus brings other nodes' changes in
/// milliseconds, the check is polled up to `within`).
pub(crate) async fn who_shows(
    c: &salon_client::Client,
    user: &str,
    status: Status,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let users = c.who().await.unwrap();
        if users
            .iter()
            .any(|u| u.username == user && u.status == status)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "who never showed {user} {status:?}: {users:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_user_stays_online_while_any_node_holds_one_of_their_sessions() {
    let Some(nodes) = cluster(3).await else {
        return;
    };
    let (mut watcher, _) = nodes[2].user("watcher").await;
    nodes[0].register("alice").await;
    let (on_1, _) = nodes[0].login("alice").await;
    presence_of(&mut watcher, "alice", Status::Online).await;
    let (on_2, _) = nodes[1].login("alice").await;
    // The session on node 1 goes: node 2 still holds one, so nothing is announced.
    on_1.logout().await.unwrap();
    expect_none(&mut watcher, "alice offline while node 2 holds her", |i| {
        matches!(i, salon_client::Incoming::Event(Event::Presence { users, .. })
            if users.iter().any(|p| p.username == "alice" && p.status == Status::Offline))
    })
    .await;
    who_shows(&watcher, "alice", Status::Online, Duration::ZERO).await;
    // The last one goes: offline everywhere.
    drop(on_2);
    presence_of(&mut watcher, "alice", Status::Offline).await;
    who_shows(&watcher, "alice", Status::Offline, Duration::ZERO).await;
}

#[tokio::test]
async fn who_on_one_node_lists_the_users_of_every_node_with_their_status() {
    let Some(nodes) = cluster(3).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    let (_bob, _) = nodes[1].user("bob").await;
    let (carol, _) = nodes[2].user("carol").await;
    alice.set_status(Status::Busy).await.unwrap();
    who_shows(&carol, "alice", Status::Busy, WAIT).await;
    who_shows(&carol, "bob", Status::Online, WAIT).await;
    // A new device of alice's on node 3 keeps the status she chose on node 1.
    let (_alice_3, welcome) = nodes[2].login("alice").await;
    assert_eq!(welcome.account.status, Status::Busy);
    // And the status reached every node's `members`, too.
    let members = carol.members("Général").await.unwrap();
    assert!(members
        .iter()
        .any(|m| m.username == "alice" && m.status == Status::Busy));
}

#[tokio::test]
async fn connected_lists_the_sessions_of_every_node_with_their_node() {
    let Some(nodes) = cluster(3).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    let (_alice, _) = nodes[1].user("alice").await;
    let (_bob, _) = nodes[2].user("bob").await;
    let (_bob_too, _) = nodes[0].login("bob").await;
    let want = [
        ("admin", Some(1)),
        ("alice", Some(2)),
        ("bob", Some(1)),
        ("bob", Some(3)),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sessions = admin.connected().await.unwrap();
        let mut got: Vec<_> = sessions
            .iter()
            .map(|s| (s.username.as_str(), s.node))
            .collect();
        got.sort();
        if got == want {
            assert!(sessions
                .iter()
                .all(|s| s.status == Status::Online && s.address.starts_with("127.0.0.1:")));
            // `salon admin connected` and the console show the node.
            let shown = salon::admin::render(
                &salon::admin::AdminCommand::Connected,
                &salon_proto::Reply::Connected(salon_proto::reply::Sessions { sessions }),
            );
            assert!(
                shown
                    .lines()
                    .any(|l| l.contains("alice") && l.ends_with("on node 2")),
                "{shown}"
            );
            // `accounts` counts every node's sessions: bob has one on node 1 and 3.
            let list = admin
                .accounts(args::Accounts {
                    query: Some("bob".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            let bob = list.accounts.iter().find(|a| a.account.username == "bob");
            assert_eq!(bob.map(|a| a.sessions), Some(2), "{list:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connected never listed every node's sessions: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn salon_admin_against_one_node_acts_on_the_whole_cluster() {
    let Some(nodes) = cluster(3).await else {
        return;
    };
    let (_alice, _) = nodes[0].user("alice").await;
    let (mut bob, _) = nodes[2].user("bob").await;
    let admin = |args: &'static [&'static str]| {
        crate::console::salon_admin(&nodes[1], "admin", PASSWORD, args)
    };
    // Run against node 2: it lists the sessions of nodes 1 and 3, with their node.
    let out = admin(&["connected"]).await;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("alice") && l.ends_with("on node 1"))
            && shown
                .lines()
                .any(|l| l.contains("bob") && l.ends_with("on node 3")),
        "{shown}"
    );
    // A kick given there closes bob's session on node 3.
    let out = admin(&["kick", "bob", "1m", "hors", "sujet"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, message) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Kicked);
    assert!(message.contains("hors sujet"), "{message}");
    assert_eq!(
        nodes[0].login_refused("bob", PASSWORD).await,
        Some(ErrorCode::Kicked),
        "node 1 refuses bob too"
    );
}

#[tokio::test]
async fn a_killed_node_has_its_users_shown_offline_on_the_others_within_the_bound() {
    let Some(nodes) = cluster(2).await else {
        return;
    };
    let (mut watcher, _) = nodes[0].user("watcher").await;
    let (on_2, _) = nodes[1].user("zoe").await;
    nodes[0].register("dora").await;
    // Node 3 is a real process, to be killed with SIGKILL: nothing of it says goodbye.
    let data = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["serve", "--no-console", "--data-dir"])
        .arg(data.path())
        .args(["--database-url", &nodes[0].store_url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", "127.0.0.1:0", "--no-metrics"])
        .args(["--node-id", "3"])
        .args(["--cluster-name", &nodes[0].config.cluster.name])
        .args(["--nats-url", &nodes[0].config.cluster.nats_urls[0]])
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .env("SALON_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dora = connect_when_ready(port).await;
    dora.login("dora", PASSWORD).await.unwrap();
    presence_of(&mut watcher, "dora", Status::Online).await;
    // Zoe on node 2 is also on node 3: she stays online when node 3 dies.
    let zoe_3 = connect_when_ready(port).await;
    zoe_3.login("zoe", PASSWORD).await.unwrap();
    wait_stored(&nodes[0], "dora", Status::Online).await;

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let killed = tokio::time::Instant::now();
    presence_of(&mut watcher, "dora", Status::Offline).await;
    let took = killed.elapsed();
    // Expiry after 5 s without a heartbeat, checked every second, then the next tick.
    assert!(
        took <= Duration::from_secs(7),
        "dora shown offline after {took:?}"
    );
    assert!(
        took >= Duration::from_secs(3),
        "offline before any expiry: {took:?}"
    );
    who_shows(&on_2, "dora", Status::Offline, Duration::from_secs(2)).await;
    who_shows(&watcher, "zoe", Status::Online, Duration::ZERO).await;
    // Stored offline by the nodes that saw it go: node 3 never will.
    wait_stored(&nodes[0], "dora", Status::Offline).await;
    assert_eq!(stored_status(&nodes[0], "zoe").await, Status::Online);
}

#[tokio::test]
async fn a_restarted_node_does_not_reset_the_other_nodes_statuses() {
    let Some(mut nodes) = cluster(2).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    alice.set_status(Status::Away).await.unwrap();
    wait_stored(&nodes[0], "alice", Status::Away).await;
    let (bob, _) = nodes[1].user("bob").await;
    wait_stored(&nodes[0], "bob", Status::Online).await;
    drop(bob);
    let second = nodes.pop().unwrap();
    let second = second.restart().await;
    // Alice is still connected to node 1: her stored status is kept, and the restarted
    // node knows it at once (gathered from the live nodes when it started).
    assert_eq!(stored_status(&second, "alice").await, Status::Away);
    let (carol, _) = second.user("carol").await;
    who_shows(&carol, "alice", Status::Away, Duration::ZERO).await;
    // Bob, who was only on the node that stopped, is offline and stored so.
    who_shows(&carol, "bob", Status::Offline, Duration::ZERO).await;
    assert_eq!(stored_status(&second, "bob").await, Status::Offline);
}

/// A proxy in front of NATS (at `url`), for a node whose link to it a test cuts.
pub(crate) async fn nats_proxy(url: &str) -> CuttableProxy {
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
pub(crate) async fn receive_all(
    client: &mut Client,
    who: &str,
    expected: &HashSet<i64>,
) -> HashMap<i64, u32> {
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
pub(crate) fn exactly_once(who: &str, got: &HashMap<i64, u32>, expected: &HashSet<i64>) {
    let repeated: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "{who} got repeats: {repeated:?}");
    let stray: Vec<_> = got.keys().filter(|id| !expected.contains(id)).collect();
    assert!(
        stray.is_empty(),
        "{who} got messages never acknowledged: {stray:?}"
    );
}

/// A non-member (or a user to whom no private message was sent) got none of these.
pub(crate) async fn none_of(client: &mut Client, who: &str, room: &str) {
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
pub(crate) async fn send_until(
    client: Arc<Client>,
    room: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<i64> {
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
    // A private channel with bob, created meanwhile (its answer waits for node 2, which
    // is cut: not awaited here; it is stored before that).
    let alice = std::sync::Arc::new(alice);
    let creating = tokio::spawn({
        let alice = alice.clone();
        async move {
            alice
                .call::<salon_proto::cmd::CreateChannel>(args::CreateChannel {
                    name: "Coupure".into(),
                    members: vec!["bob".into()],
                })
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.restore();
    let (code, message) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Resync, "{message}");
    // Back on the node, history has what was missed, and the channel is there.
    let (mut bob, _) = nodes[1].login("bob").await;
    let page = bob.room_history("Général", None, Some(5)).await.unwrap();
    assert!(page.messages.iter().any(|m| m.id == missed.id));
    creating.await.unwrap().unwrap();
    // The node is whole again: whatever else it notices of the cut (a gap in node 1's
    // numbers, at its next tick) does not close the new session, and messages arrive.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let now = HashSet::from([alice.send("Général", "après").await.unwrap().id]);
    let got = receive_all(&mut bob, "bob again", &now).await;
    exactly_once("bob again", &got, &now);
    bob.send("Coupure", "reçu après la coupure").await.unwrap();
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
    // Node 2 applied frank's join before the cut (else it has nothing to undo after it).
    told_member_of(&mut frank_on_2, "frank on 2 told of his join", "Blabla").await;

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

    // Each is told of the change it missed (before the messages caught up).
    for (client, who, state) in [
        (&mut bob_on_2, "bob on 2", MemberState::Member),
        (&mut frank_on_2, "frank on 2", MemberState::CanJoin),
    ] {
        expect_event(client, &format!("{who} told {state:?}"), |e| match e {
            Event::Membership { room, .. } if room.name == "Blabla" && room.state == state => {
                Some(())
            }
            _ => None,
        })
        .await;
    }
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

/// What a message looks like to a client that applies the `edited`, `deleted` and
/// `reaction` events it receives, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    text: Option<String>,
    deleted: bool,
    reactions: std::collections::BTreeSet<(String, String)>,
}

#[tokio::test]
async fn edits_deletions_and_reactions_missed_by_a_cut_node_are_told_once_it_is_back() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("bob").await;
    nodes[0].register("carol").await;
    let (mut bob, _) = nodes[1].login("bob").await;
    let (mut carol, _) = nodes[1].login("carol").await;
    for member in [&alice, &bob] {
        member.join("Blabla").await.unwrap();
    }
    // Carol is not a member of Blabla, and not in the conversation.
    let (edited, deleted, reacted) = (
        alice.send("Blabla", "avant").await.unwrap().id,
        alice.send("Blabla", "à effacer").await.unwrap().id,
        alice.send("Blabla", "à réagir").await.unwrap().id,
    );
    let private = alice.direct("bob", "en privé").await.unwrap().id;
    alice.react(reacted, "🎉").await.unwrap();
    let live = HashSet::from([edited, deleted, reacted, private]);
    receive_all(&mut bob, "bob", &live).await;

    proxy.cut();
    // Added and taken back while node 2 is cut: told as it is now, never as there.
    alice.react(reacted, "😂").await.unwrap();
    alice.unreact(reacted, "😂").await.unwrap();
    alice.edit(edited, "après").await.unwrap();
    alice.delete(deleted, None).await.unwrap();
    alice.react(reacted, "👍").await.unwrap();
    alice.unreact(reacted, "🎉").await.unwrap();
    alice.edit(private, "en privé, corrigé").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();

    // Bob's client, applying what it is told: the state of each message as stored.
    let mut seen: HashMap<i64, Seen> = HashMap::new();
    let want = |seen: &HashMap<i64, Seen>| {
        let get = |id| seen.get(&id).cloned().unwrap_or_default();
        get(edited).text.as_deref() == Some("après")
            && get(deleted).deleted
            && get(reacted).reactions == [("👍".to_owned(), "alice".to_owned())].into()
            && get(private).text.as_deref() == Some("en privé, corrigé")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !want(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, bob.next_event()).await {
            Ok(Some(Incoming::Event(e))) => match e {
                Event::Edited { id, text, .. } => seen.entry(id).or_default().text = Some(text),
                Event::Deleted { id, .. } => seen.entry(id).or_default().deleted = true,
                Event::Reaction {
                    id,
                    emoji,
                    user,
                    added,
                    ..
                } => {
                    assert!(
                        !(added && emoji == "😂"),
                        "bob was shown a reaction taken back while node 2 was cut"
                    );
                    let reactions = &mut seen.entry(id).or_default().reactions;
                    if added {
                        reactions.insert((emoji, user));
                    } else {
                        reactions.remove(&(emoji, user));
                    }
                }
                _ => {}
            },
            Ok(Some(Incoming::Closing { code, message, .. })) => {
                panic!("bob closed: {code:?} {message}")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("bob's connection ended"),
            Err(_) => panic!("bob was not told what changed while node 2 was cut: {seen:?}"),
        }
    }
    // Carol, on the same node, is told none of it.
    expect_none(&mut carol, "carol (not a member)", |i| {
        matches!(
            i,
            Incoming::Event(Event::Edited { .. } | Event::Deleted { .. } | Event::Reaction { .. })
        )
    })
    .await;
}

#[tokio::test]
async fn read_markers_missed_by_a_cut_node_are_told_once_it_is_back() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    nodes[0].register("bob").await;
    let (bob_on_1, _) = nodes[0].login("bob").await;
    let (mut bob_on_2, _) = nodes[1].login("bob").await;
    let (mut carol, _) = nodes[1].user("carol").await;
    let mut sent = Vec::new();
    for text in ["à lire 1", "à lire 2", "à lire 3"] {
        sent.push(alice.send("Général", text).await.unwrap().id);
    }
    let live: HashSet<i64> = sent.iter().copied().collect();
    receive_all(&mut bob_on_2, "bob on 2", &live).await;
    let last = *sent.iter().max().unwrap();

    // Bob reads Général on node 1 while node 2 is cut: his session on node 2 misses the
    // `read` event, and is told his read state once node 2 is back.
    proxy.cut();
    let marked = bob_on_1.mark_room_read("Général", last).await.unwrap();
    assert_eq!((marked.last_read, marked.unread), (last, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, bob_on_2.next_event()).await {
            Ok(Some(Incoming::Event(Event::Read(state))))
                if state.room.as_deref() == Some("Général") && state.last_read == last =>
            {
                assert_eq!(state.unread, 0);
                break;
            }
            Ok(Some(Incoming::Closing { code, message, .. })) => {
                panic!("bob closed: {code:?} {message}")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("bob's connection ended"),
            Err(_) => panic!("bob on node 2 was never told what he read on node 1"),
        }
    }
    // Carol, on the same node, is told nothing of bob's reading.
    expect_none(
        &mut carol,
        "carol",
        |i| matches!(i, Incoming::Event(Event::Read(state)) if state.last_read == last),
    )
    .await;
}

/// The broadcasts' texts `client` is told until nothing comes for a moment.
async fn notices_until_quiet(client: &mut Client) -> Vec<String> {
    let mut texts = Vec::new();
    while let Ok(Some(item)) =
        tokio::time::timeout(Duration::from_millis(1_500), client.next_event()).await
    {
        if let Incoming::Event(Event::Notice { text, .. }) = item {
            texts.push(text);
        }
    }
    texts
}

/// The broadcasts' texts `client` is told from now: waits (20 s at most) for a first
/// one, then takes what follows until nothing comes for a moment.
async fn notices_told(client: &mut Client, who: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut told = Vec::new();
    while told.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who} was never told a broadcast"
        );
        told = notices_until_quiet(client).await;
    }
    told.extend(notices_until_quiet(client).await);
    told
}

#[tokio::test]
async fn a_broadcast_missed_by_a_cut_node_is_told_once_it_is_back_and_only_once() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    let (mut alice, _) = nodes[0].user("alice").await;
    let (mut bob, _) = nodes[1].user("bob").await;
    admin.broadcast("avant la coupure").await.unwrap();
    assert_eq!(notices_told(&mut bob, "bob").await, ["avant la coupure"]);

    // Node 2 is cut while the administrator broadcasts on node 1: bob, on node 2, is
    // told it once node 2 is back; the one he had before is not told again (it is within
    // the catch-up's margin), nor is the new one told twice to alice on node 1.
    proxy.cut();
    admin.broadcast("pendant la coupure").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    assert_eq!(notices_told(&mut bob, "bob").await, ["pendant la coupure"]);
    assert_eq!(
        notices_until_quiet(&mut alice).await,
        ["avant la coupure", "pendant la coupure"]
    );
}

#[tokio::test]
async fn a_channel_created_while_a_node_was_cut_is_known_there_once_it_is_back() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    let (mut bob, _) = nodes[1].user("bob").await;
    let (mut carol, _) = nodes[1].user("carol").await;

    // Node 2 hears neither the channel's creation nor bob's membership nor the message:
    // it learns the three from the database once it is back.
    proxy.cut();
    alice.create_channel("Projet", &["bob"]).await.unwrap();
    let during = HashSet::from([alice.send("Projet", "pendant la coupure").await.unwrap().id]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();

    let got = receive_all(&mut bob, "bob", &during).await;
    exactly_once("bob", &got, &during);
    // Node 2 now knows the channel: bob sends to it there, and carol, not a member,
    // still does not see it.
    bob.send("Projet", "je suis là").await.unwrap();
    let err = carol.send("Projet", "et moi ?").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::NoSuchRoom),
        "carol, not a member, saw the channel"
    );
    none_of(&mut carol, "carol", "Projet").await;
}

#[tokio::test]
async fn a_node_cut_from_nats_answers_connected_and_stops_promptly_when_told_to() {
    let Some((mut nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (bob, _) = nodes[1].user("bob").await;
    let (admin, _) = nodes[1].login("admin").await;
    proxy.cut();
    // More bus messages than the NATS client holds while it has no connection (2,048):
    // its queue is full when the node is told to stop, and stays so.
    for i in 0..2_300 {
        bob.send("Général", &format!("coupé {i}")).await.unwrap();
    }
    // Meanwhile `connected` answers in its bound with what this node knows.
    let sessions = tokio::time::timeout(Duration::from_secs(5), admin.connected())
        .await
        .expect("connected answers without NATS")
        .unwrap();
    assert!(sessions.iter().any(|s| s.username == "bob"), "{sessions:?}");
    let node = nodes.pop().unwrap();
    tokio::time::timeout(Duration::from_secs(15), node.stop())
        .await
        .expect("a node without NATS stops within 15 s of being told to");
    drop(proxy);
}

#[tokio::test]
async fn a_shutdown_command_missed_by_a_cut_node_stops_it_once_it_is_back() {
    let Some((mut nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    let (mut bob, _) = nodes[1].user("bob").await;
    proxy.cut();
    admin
        .request(Command::Shutdown(args::Shutdown {
            seconds: Some(1),
            message: Some("arrêt pendant la coupure".into()),
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    // Node 2 learns the countdown from the database once it is back: bob is told, then
    // closed, and node 2 stops by itself.
    let (_, message) = expect_event(&mut bob, "the countdown on node 2", |e| match e {
        Event::Shutdown { seconds, message } => Some((*seconds, message.clone())),
        _ => None,
    })
    .await;
    assert_eq!(message, "arrêt pendant la coupure");
    let (code, _) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Shutdown);
    let node_b = nodes.pop().unwrap();
    let node_a = nodes.pop().unwrap();
    let (_, _) = tokio::join!(node_a.wait_stopped(), node_b.wait_stopped());
}

#[tokio::test]
async fn a_status_change_missed_by_a_cut_node_shows_there_once_it_is_back() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (alice, _) = nodes[0].user("alice").await;
    let (bob, _) = nodes[1].user("bob").await;
    who_shows(&bob, "alice", Status::Online, WAIT).await;
    // Node 2 is cut (for less than the presence expiry) while alice turns busy on node 1.
    proxy.cut();
    alice.set_status(Status::Busy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    who_shows(&bob, "alice", Status::Busy, WAIT).await;
}

/// The `room_member` notices of Blabla `client` is told until it has `n` (20 s at most),
/// then for a quiet moment more (a repeat would show): who, and whether they joined.
async fn member_notices(client: &mut Client, who: &str, n: usize) -> Vec<(String, bool)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut told = Vec::new();
    loop {
        let quiet = if told.len() < n {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::from_millis(1_500)
        };
        match tokio::time::timeout(quiet, client.next_event()).await {
            Ok(Some(Incoming::Event(Event::RoomMember {
                room, user, joined, ..
            }))) if room == "Blabla" => told.push((user, joined)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(told.len() >= n, "{who} was told only {told:?}");
    told
}

#[tokio::test]
async fn joins_and_leaves_missed_by_a_cut_node_are_told_once_it_is_back_and_only_once() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (mut bob, _) = nodes[1].user("bob").await;
    bob.join("Blabla").await.unwrap();
    let (carol, _) = nodes[0].user("carol").await;
    let (dave, _) = nodes[0].user("dave").await;
    carol.join("Blabla").await.unwrap();
    let before = member_notices(&mut bob, "bob", 2).await;
    assert_eq!(before, [("bob".into(), true), ("carol".into(), true)]);

    // Node 2 is cut while dave joins and carol leaves on node 1: bob, on node 2, is told
    // both once node 2 is back, in that order; carol's join, within the catch-up's
    // margin, is not told again.
    proxy.cut();
    dave.join("Blabla").await.unwrap();
    carol.leave("Blabla").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    assert_eq!(
        member_notices(&mut bob, "bob", 2).await,
        [("dave".into(), true), ("carol".into(), false)]
    );
}

#[tokio::test]
async fn revocations_missed_by_a_cut_node_close_its_sessions_once_it_is_back() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    for name in ["eve", "mallory", "dave", "olive"] {
        nodes[0].register(name).await;
    }
    let (mut eve, _) = nodes[1].login("eve").await;
    let (mut mallory, _) = nodes[1].login("mallory").await;
    let (mut dave_on_2, _) = nodes[1].login("dave").await;
    let (mut olive, _) = nodes[1].login("olive").await;
    let (mut dave_on_1, _) = nodes[0].login("dave").await;

    proxy.cut();
    admin
        .kick(args::Kick {
            user: "eve".into(),
            seconds: Some(600),
            reason: Some("flood".into()),
        })
        .await
        .unwrap();
    admin.ban("mallory", Some("spam")).await.unwrap();
    dave_on_1
        .change_password(PASSWORD, "another long passphrase")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();

    // In the words of the live close: who imposed it and for how long.
    for (client, who, code, says) in [
        (
            &mut eve,
            "eve",
            CloseCode::Kicked,
            "you were kicked by Administrator for 10 min: flood",
        ),
        (
            &mut mallory,
            "mallory",
            CloseCode::Banned,
            "you were banned by Administrator: spam",
        ),
        (
            &mut dave_on_2,
            "dave on 2",
            CloseCode::PasswordChanged,
            "password",
        ),
    ] {
        let (closed, message) = expect_closing(client).await;
        assert_eq!(closed, code, "{who}: {message}");
        assert!(message.contains(says), "{who}: {message}");
    }
    // Those not revoked stay: olive on node 2, and dave's session that changed it.
    for (client, who) in [(&mut olive, "olive"), (&mut dave_on_1, "dave on 1")] {
        expect_none(client, who, |i| matches!(i, Incoming::Closing { .. })).await;
        client.who().await.unwrap();
    }
}

#[tokio::test]
async fn a_leave_a_ban_and_a_channel_made_while_a_node_is_cut_hold_there_before_it_is_back() {
    let Some((nodes, proxy)) = two_nodes_one_cuttable(|_, _| {}).await else {
        return;
    };
    let (admin, _) = nodes[0].login("admin").await;
    let (dora_a, mut dora_b) = dora_member_on_both(&nodes).await;
    nodes[0].register("mallory").await;
    let (mut mallory, _) = nodes[1].login("mallory").await;
    let (bob, _) = nodes[1].user("bob").await;
    bob.join("Blabla").await.unwrap();

    // B hears nothing from the others for the rest of the test.
    proxy.cut();
    dora_a.leave("Blabla").await.unwrap();
    admin.ban("mallory", Some("spam")).await.unwrap();

    // B, behind, rechecks its connected users in the database: dora's session there is
    // told she left, and mallory's idle session is closed as banned, all while cut.
    // (Her join's event came earlier; the one that matters says she is no member.)
    expect_event(&mut dora_b, "dora told on B that she left", |e| match e {
        Event::Membership { room, .. }
            if room.name == "Blabla" && room.state != MemberState::Member =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let (closed, message) = expect_closing(&mut mallory).await;
    assert_eq!(closed, CloseCode::Banned, "{message}");
    // Bob, on B, posts to Blabla: dora, who left on A, does not receive it on B.
    bob.send("Blabla", "pendant la coupure").await.unwrap();
    none_of(&mut dora_b, "dora on B", "Blabla").await;

    // A private channel created on A with dora in it: B reads the rooms made since it
    // stopped hearing the bus, so dora's session there is told she is in it, and may
    // post to it, while B is still cut.
    admin
        .call::<salon_proto::cmd::CreateChannel>(args::CreateChannel {
            name: "Coupure".into(),
            members: vec!["dora".into()],
        })
        .await
        .unwrap();
    told_member_of(&mut dora_b, "dora told on B of the new channel", "Coupure").await;
    dora_b
        .send("Coupure", "reçu pendant la coupure")
        .await
        .unwrap();
    proxy.restore();
}

/// Sends to `room` as `name` until `stop`, through node `home` first and the next one
/// whenever its node goes away (as behind a load balancer); returns each acknowledged
/// message's id with when its acknowledgement came.
pub(crate) async fn keep_sending(
    addrs: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
    mut home: usize,
    name: &'static str,
    room: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(i64, tokio::time::Instant)> {
    use std::sync::atomic::Ordering;
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let addr = addrs.lock().unwrap()[home];
        let client = match salon_client::Client::connect_tcp(addr).await {
            Ok(c) if c.login(name, PASSWORD).await.is_ok() => c,
            _ => {
                home = (home + 1) % addrs.lock().unwrap().len();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            match client.send(room, &format!("{name} {n}")).await {
                Ok(accepted) => acked.push((accepted.id, tokio::time::Instant::now())),
                // Refused (the node is stopping): not acknowledged; try the next node.
                Err(_) => break,
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        home = (home + 1) % addrs.lock().unwrap().len();
    }
    acked
}

/// Collects the ids of `room`'s messages `client` receives until it is closed or
/// `stop` is cancelled.
pub(crate) fn collect_room(
    mut client: salon_client::Client,
    room: &'static str,
) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        loop {
            match client
                .event_within(std::time::Duration::from_millis(1_500))
                .await
            {
                Some(salon_client::Incoming::Event(Event::Message(m))) if m.room == room => {
                    ids.push(m.id)
                }
                Some(salon_client::Incoming::Closing { .. }) | None => return ids,
                Some(_) => {}
            }
        }
    })
}

#[tokio::test]
async fn a_rolling_restart_under_load_loses_no_acknowledged_message() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::time::{sleep, Duration, Instant};
    let Some(mut nodes) = cluster(3).await else {
        return;
    };
    for name in ["sender0", "sender1", "reader1", "reader3"] {
        nodes[0].register(name).await;
    }
    let (owner, _) = nodes[0].user("owner").await;
    owner
        .call::<salon_proto::cmd::CreateChannel>(args::CreateChannel {
            name: "Projet".into(),
            members: ["sender0", "sender1", "reader1", "reader3"]
                .map(String::from)
                .to_vec(),
        })
        .await
        .unwrap();
    let (outsider, _) = nodes[1].user("outsider").await;
    let outsider = collect_room(outsider, "Projet");
    let r3 = collect_room(nodes[2].login("reader3").await.0, "Projet");

    let addrs = Arc::new(Mutex::new(nodes.iter().map(|n| n.tcp).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let senders = [(0, "sender0"), (1, "sender1")].map(|(home, name)| {
        tokio::spawn(keep_sending(
            addrs.clone(),
            home,
            name,
            "Projet",
            stop.clone(),
        ))
    });

    // Restart node 1, then 2, then 3, one after the other, while both senders send.
    let mut r1 = None;
    let mut r1_since = Instant::now();
    let mut r3_until = Instant::now();
    for i in 0..3 {
        sleep(Duration::from_millis(400)).await;
        if i == 2 {
            // What was acknowledged until now reaches r3 before its node stops.
            r3_until = Instant::now();
            sleep(Duration::from_millis(500)).await;
        }
        let node = nodes.remove(i);
        let node = node.restart().await;
        addrs.lock().unwrap()[i] = node.tcp;
        nodes.insert(i, node);
        if i == 0 {
            r1 = Some(collect_room(nodes[0].login("reader1").await.0, "Projet"));
            r1_since = Instant::now();
        }
    }
    sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for sender in senders {
        acked.extend(sender.await.unwrap());
    }
    assert!(acked.len() > 50, "under load: {} acknowledged", acked.len());
    let r1 = r1.unwrap().await.unwrap();
    let (r3, outsider) = (r3.await.unwrap(), outsider.await.unwrap());

    let once = |ids: &[i64], who: &str| {
        let set: std::collections::HashSet<i64> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len(), "{who} received a message twice");
        set
    };
    let (r1, r3) = (once(&r1, "reader1"), once(&r3, "reader3"));
    for (id, when) in &acked {
        if *when < r3_until {
            assert!(
                r3.contains(id),
                "acknowledged {id} never reached r3 on node 3"
            );
        }
        if *when > r1_since {
            assert!(
                r1.contains(id),
                "acknowledged {id} never reached r1 on node 1"
            );
        }
    }
    assert!(outsider.is_empty(), "a non-member received {outsider:?}");
    // And every acknowledged message is stored.
    let page = nodes[0]
        .login("reader1")
        .await
        .0
        .room_history("Projet", None, Some(1))
        .await
        .unwrap();
    assert!(!page.messages.is_empty());
}

/// A NATS server of the test's own that speaks TLS only and verifies its clients'
/// certificates, all made here by one certificate authority: its `tls://` URL, and the
/// directory holding `ca.pem` and a node's `client.pem` and `client.key`. Killed when
/// dropped. `None` (the test is skipped, loudly) when `nats-server` is not installed,
/// unless `SALON_REQUIRE_SERVICES=1`.
struct TlsNats {
    url: String,
    dir: tempfile::TempDir,
    _server: tokio::process::Child,
}

impl TlsNats {
    /// Also `None` on the SQLite pass: a cluster needs PostgreSQL or MariaDB.
    async fn start() -> Option<TlsNats> {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        if backend() == Backend::Sqlite {
            eprintln!("cluster test: needs PostgreSQL or MariaDB, run in those passes");
            return None;
        }
        let installed = tokio::process::Command::new("nats-server")
            .arg("--version")
            .output()
            .await;
        if let Err(e) = installed {
            if std::env::var("SALON_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("nats-server is not installed ({e}) and SALON_REQUIRE_SERVICES=1");
            }
            eprintln!("\n=== SKIPPED: the TLS bus test runs its own nats-server ({e}) ===\n");
            return None;
        }
        let dir = tempfile::TempDir::new().unwrap();
        let (ca, ca_key) = authority();
        let signed = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = signed(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = signed(
            vec!["salon-node".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.pem());
        write("server.pem", &server.0);
        write("server.key", &server.1);
        write("client.pem", &client.0);
        write("client.key", &client.1);
        let port = free_port();
        let path = |name: &str| dir.path().join(name);
        let server = tokio::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--tlsverify"])
            .arg("--tlscert")
            .arg(path("server.pem"))
            .arg("--tlskey")
            .arg(path("server.key"))
            .arg("--tlscacert")
            .arg(path("ca.pem"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        eventually_within(
            Duration::from_secs(10),
            "nats-server never listened",
            Duration::from_millis(50),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
        Some(TlsNats {
            url: format!("tls://127.0.0.1:{port}"),
            dir,
            _server: server,
        })
    }
}

/// A certificate authority of the test's own.
fn authority() -> (rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.self_signed(&key).unwrap(), key)
}

/// Starts a node of a cluster on `nats` with `tls` as its `[cluster]` TLS settings, and
/// returns what it wrote on standard error once it exited, which it must do, and fail,
/// within 30 s.
async fn refused_start(nats: &TlsNats, tls: &str) -> String {
    let data = DataDir::new();
    let config = data.path().join("salon.toml");
    std::fs::write(&config, format!("[cluster]\n{tls}")).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["serve", "--no-console", "--no-metrics", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--database-url", &data.database_url().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--node-id", "1", "--nats-url", &nats.url])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the node neither started nor refused within 30 s")
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_node_whose_tls_to_nats_fails_refuses_to_start_and_says_why() {
    let Some(nats) = TlsNats::start().await else {
        return;
    };
    let dir = nats.dir.path();
    let client = format!(
        "nats_tls_cert = {:?}\nnats_tls_key = {:?}\n",
        dir.join("client.pem"),
        dir.join("client.key")
    );
    // Trusting another authority than the one that signed the NATS server's certificate.
    let other = dir.join("other-ca.pem");
    std::fs::write(&other, authority().0.pem()).unwrap();
    let stderr = refused_start(&nats, &format!("nats_tls_ca = {other:?}\n{client}")).await;
    let refused = format!(
        "salon: cluster: NATS at {} refused this node's connection: the TLS handshake \
         failed: invalid peer certificate",
        nats.url
    );
    assert!(stderr.starts_with(&refused), "{stderr}");
    assert_eq!(stderr.matches("refused").count(), 1, "told twice: {stderr}");
    // Without a client certificate, to a NATS server that verifies its clients.
    let ca = dir.join("ca.pem");
    let stderr = refused_start(&nats, &format!("nats_tls_ca = {ca:?}\n")).await;
    assert!(
        stderr.contains("refused this node's connection: the TLS handshake failed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_bus_runs_over_tls_to_a_nats_server_that_verifies_its_clients() {
    let Some(nats) = TlsNats::start().await else {
        return;
    };
    let Some(nodes) = cluster_with(2, |_, c| {
        c.cluster.nats_urls = vec![nats.url.clone()];
        c.cluster.nats_tls_ca = Some(nats.dir.path().join("ca.pem"));
        c.cluster.nats_tls_cert = Some(nats.dir.path().join("client.pem"));
        c.cluster.nats_tls_key = Some(nats.dir.path().join("client.key"));
    })
    .await
    else {
        return;
    };
    let (mut bob, _) = nodes[1].user("bob").await;
    let (alice, _) = nodes[0].user("alice").await;
    let sent = HashSet::from([alice.send("Général", "chiffré").await.unwrap().id]);
    exactly_once(
        "bob on 2",
        &receive_all(&mut bob, "bob on 2", &sent).await,
        &sent,
    );
    // This NATS server takes nothing in plaintext (it says so in the greeting it sends
    // before the TLS handshake): the nodes' traffic went over TLS.
    use tokio::io::AsyncBufReadExt;
    let address = nats.url.trim_start_matches("tls://").to_owned();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut greeting = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut greeting)
        .await
        .unwrap();
    assert!(
        greeting.starts_with("INFO ") && greeting.contains("\"tls_required\":true"),
        "{greeting}"
    );
}
