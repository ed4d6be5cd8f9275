//! R12–R14: room messages, private messages (online and offline), history pages.

use salon_proto::{ErrorCode, Event};

use crate::harness::*;

#[tokio::test]
async fn a_room_message_reaches_every_member_with_author_alias_and_server_time() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    let before = real_now_ms();
    let accepted = alice
        .send("Général", "Bonjour à tous 🎉 <b>not bold</b>")
        .await
        .unwrap();
    for c in [&mut bob, &mut carol] {
        let m = expect_event(c, "room message", |e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await;
        assert_eq!(m.id, accepted.id);
        assert_eq!(m.ts, accepted.ts);
        assert_eq!(m.room, "Général");
        assert_eq!((m.author.as_str(), m.alias.as_str()), ("alice", "Alice"));
        assert_eq!(
            m.text, "Bonjour à tous 🎉 <b>not bold</b>",
            "text stored exactly"
        );
        assert!((m.ts - before).abs() < 60_000, "server timestamp");
    }
}

#[tokio::test]
async fn private_messages_reach_the_recipient_and_the_senders_other_devices() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (mut alice_phone, _) = server.login("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    let accepted = alice.direct("Bob", "just between us").await.unwrap();
    // The recipient, the sender's other device, and the sending session itself.
    for c in [&mut bob, &mut alice_phone, &mut alice] {
        let dm = expect_event(c, "direct message", |e| match e {
            Event::Direct(d) => Some(d.clone()),
            _ => None,
        })
        .await;
        assert_eq!(dm.id, accepted.id);
        assert_eq!(
            (dm.from.as_str(), dm.from_alias.as_str(), dm.to.as_str()),
            ("alice", "Alice", "bob")
        );
        assert_eq!(dm.text, "just between us");
    }
    expect_none(&mut carol, "someone else's private message", |i| {
        matches!(i, salon_client::Incoming::Event(Event::Direct(_)))
    })
    .await;
    assert_eq!(
        alice.direct("nobody", "hello?").await.unwrap_err().code(),
        Some(ErrorCode::NoSuchUser)
    );
}

#[tokio::test]
async fn private_messages_to_an_offline_user_arrive_at_their_next_login_even_after_a_restart() {
    let server = TestServer::start().await;
    server.register("bob").await;
    let (alice, _) = server.user("alice").await;
    alice
        .direct("bob", "first while you were away")
        .await
        .unwrap();
    alice
        .direct("bob", "second while you were away")
        .await
        .unwrap();
    drop(alice);

    let server = server.restart().await;
    let (mut bob, welcome) = server.login("bob").await;
    assert_eq!(welcome.offline_directs, 2);
    let mut texts = vec![];
    for _ in 0..2 {
        texts.push(
            expect_event(&mut bob, "offline direct", |e| match e {
                Event::Direct(d) => Some(d.text.clone()),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(
        texts,
        ["first while you were away", "second while you were away"]
    );

    // Delivered once: once bob's acknowledgements (sent as they arrive, on his session)
    // are in, a login has nothing pending.
    crate::delivery::wait_nothing_waiting(&server, "bob").await;
    // Both remain in the conversation's history.
    let page = bob.direct_history("alice", None, None).await.unwrap();
    assert_eq!(page.messages.len(), 2);
}

#[tokio::test]
async fn conversations_list_each_private_conversation_with_its_last_message() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let (carol, _) = server.user("carol").await;
    alice.direct("bob", "hi bob").await.unwrap();
    bob.direct("alice", "hi alice").await.unwrap();
    carol.direct("alice", "hello from carol").await.unwrap();
    alice.direct("alice", "a note to myself").await.unwrap();

    let list = alice.conversations().await.unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|c| (c.with.as_str(), c.alias.as_str(), c.last.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("alice", "Alice", "a note to myself"),
            ("carol", "Carol", "hello from carol"),
            ("bob", "Bob", "hi alice"),
        ],
        "latest first, the other user named, each once"
    );
    let bobs = bob.conversations().await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(
        (bobs[0].with.as_str(), bobs[0].last.text.as_str()),
        ("alice", "hi alice")
    );
    let (dora, _) = server.user("dora").await;
    assert!(dora.conversations().await.unwrap().is_empty());
}

#[tokio::test]
async fn history_pages_back_from_the_newest_message() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    for i in 1..=7 {
        alice.send("Général", &format!("room {i}")).await.unwrap();
        let (from, to) = if i % 2 == 0 {
            (&alice, "bob")
        } else {
            (&bob, "alice")
        };
        from.direct(to, &format!("dm {i}")).await.unwrap();
    }
    let texts = |p: &salon_proto::HistoryPage<salon_proto::RoomMessage>| {
        p.messages
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>()
    };
    let p1 = bob.room_history("Général", None, Some(3)).await.unwrap();
    assert_eq!(texts(&p1), ["room 5", "room 6", "room 7"]);
    assert!(p1.more);
    let p2 = bob
        .room_history("Général", Some(p1.messages[0].id), Some(3))
        .await
        .unwrap();
    assert_eq!(texts(&p2), ["room 2", "room 3", "room 4"]);
    assert!(p2.more);
    let p3 = bob
        .room_history("Général", Some(p2.messages[0].id), Some(3))
        .await
        .unwrap();
    assert_eq!(texts(&p3), ["room 1"]);
    assert!(!p3.more);

    // The same conversation seen from both sides.
    let a = alice.direct_history("bob", None, Some(4)).await.unwrap();
    let b = bob.direct_history("Alice", None, Some(4)).await.unwrap();
    assert_eq!(a, b);
    let dms: Vec<_> = a.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(dms, ["dm 4", "dm 5", "dm 6", "dm 7"]);
    assert!(a
        .messages
        .iter()
        .all(|m| (m.from == "alice") == (m.to == "bob")));

    // Exactly one of room / with.
    let both = alice
        .request(salon_proto::Command::History(salon_proto::args::History {
            room: Some("Général".into()),
            with: Some("bob".into()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(both.code(), Some(ErrorCode::InvalidRequest));
}

#[tokio::test]
async fn a_history_page_stops_at_its_byte_budget_and_paging_loses_nothing() {
    // 64 KiB per connection: a history page is cut at 32 KiB.
    let server = TestServer::start_with(|c| c.limits.outbound_queue_bytes = 64 * 1024).await;
    let (alice, _) = server.user("alice").await;
    // Quotes and backslashes take two bytes each on the wire: ~8 KB per message.
    let heavy = "\"\\".repeat(2000);
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(alice.send("Général", &heavy).await.unwrap().id);
    }
    let mut got = Vec::new();
    let mut before = None;
    loop {
        let page = alice
            .room_history("Général", before, Some(100))
            .await
            .unwrap();
        assert!(
            page.messages.len() <= 4,
            "a page holds what fits in 32 KiB, not {}",
            page.messages.len()
        );
        before = page.messages.first().map(|m| m.id);
        let more = page.more;
        got.splice(0..0, page.messages.into_iter().map(|m| m.id));
        if !more {
            break;
        }
    }
    assert_eq!(got, sent);
}
