//! Everyday messaging (issue 13) through a real server: edits, deletions, replies and
//! threads, reactions, mentions, read state, notification levels, member lists and
//! membership notices. Authorization is the server's: nobody acts on or learns about a
//! message they cannot read.

use salon_client::{Client, Incoming};
use salon_proto::{reply, AuditAction, ErrorCode, Event, NotifyLevel, ReadState};

use crate::harness::*;

async fn admin(server: &TestServer) -> Client {
    let c = server.client().await;
    c.login("admin", PASSWORD).await.unwrap();
    c
}

/// Two members of Blabla (alice, bob) and carol, who is not one.
async fn blabla(server: &TestServer) -> (Client, Client, Client) {
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let (carol, _) = server.user("carol").await;
    alice.join("Blabla").await.unwrap();
    bob.join("Blabla").await.unwrap();
    (alice, bob, carol)
}

fn code(e: salon_client::ClientError) -> Option<ErrorCode> {
    e.code()
}

fn about_message(i: &Incoming) -> bool {
    matches!(
        i,
        Incoming::Event(
            Event::Message(_)
                | Event::Edited { .. }
                | Event::Deleted { .. }
                | Event::Reaction { .. }
                | Event::Direct(_)
        )
    )
}

fn read_of<'a>(states: &'a [ReadState], room: &str) -> &'a ReadState {
    states
        .iter()
        .find(|s| s.room.as_deref() == Some(room))
        .unwrap_or_else(|| panic!("no read state for {room} in {states:?}"))
}

#[tokio::test]
async fn an_edit_reaches_the_members_after_its_message_and_history_keeps_the_latest_text() {
    let server = TestServer::start().await;
    let (alice, mut bob, mut carol) = blabla(&server).await;

    let sent = alice.send("Blabla", "helo").await.unwrap();
    let edited = alice.edit(sent.id, "hello").await.unwrap();
    assert_eq!(edited.id, sent.id);
    assert!(edited.edited >= sent.ts);
    // Bob sees the message, then its edit: never the edit first.
    let mut order = Vec::new();
    while order.len() < 2 {
        match bob.next_event().await.expect("connected") {
            Incoming::Event(Event::Message(m)) if m.id == sent.id => order.push(m.text),
            Incoming::Event(Event::Edited {
                id, text, place, ..
            }) if id == sent.id => {
                assert_eq!(place.room.as_deref(), Some("Blabla"));
                order.push(format!("edited: {text}"));
            }
            _ => {}
        }
    }
    assert_eq!(order, ["helo", "edited: hello"]);
    expect_none(
        &mut carol,
        "an edit in a room carol is not in",
        about_message,
    )
    .await;

    let page = bob.room_history("Blabla", None, None).await.unwrap();
    let m = &page.messages[0];
    assert_eq!(
        (m.text.as_str(), m.extra.edited),
        ("hello", Some(edited.edited))
    );

    // Each edit is stamped later than the one before, also in the same millisecond (the
    // test's clock stands still) and from a clock behind (a cluster node's): clients keep
    // the latest-stamped text.
    let again = alice.edit(sent.id, "hello!").await.unwrap();
    server.clock.advance_ms(-5_000);
    let behind = alice.edit(sent.id, "hello!!").await.unwrap();
    assert_eq!(
        (again.edited, behind.edited),
        (edited.edited + 1, edited.edited + 2)
    );
    let mut stamps = Vec::new();
    while stamps.len() < 2 {
        if let Incoming::Event(Event::Edited { id, edited, .. }) =
            bob.next_event().await.expect("connected")
        {
            if id == sent.id {
                stamps.push(edited);
            }
        }
    }
    assert_eq!(stamps, [again.edited, behind.edited]);
    let page = bob.room_history("Blabla", None, None).await.unwrap();
    assert_eq!(page.messages[0].extra.edited, Some(behind.edited));
    server.clock.advance_ms(5_000);

    // Only the author edits; to someone who cannot read the room it does not exist.
    let err = bob.edit(sent.id, "mine now").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::Forbidden));
    let err = carol.edit(sent.id, "mine now").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage));
    let err = alice.edit(987_654_321, "x").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage));
    let err = alice.edit(sent.id, "  ").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::EmptyMessage));

    // Private messages too: both users see the edit, nobody else.
    let dm = alice.direct("bob", "see you at 3").await.unwrap();
    alice.edit(dm.id, "see you at 4").await.unwrap();
    let (text, from, to) = expect_event(&mut bob, "the private edit", |e| match e {
        Event::Edited {
            id, text, place, ..
        } if *id == dm.id => Some((text.clone(), place.from.clone(), place.to.clone())),
        _ => None,
    })
    .await;
    assert_eq!(text, "see you at 4");
    assert_eq!(
        (from.as_deref(), to.as_deref()),
        (Some("alice"), Some("bob"))
    );
    let err = carol.edit(dm.id, "x").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage));
}

#[tokio::test]
async fn a_deletion_leaves_a_tombstone_and_administrators_delete_with_a_reason() {
    let server = TestServer::start().await;
    let (alice, mut bob, _carol) = blabla(&server).await;

    let first = alice
        .send("Blabla", "oops, a password: hunter2")
        .await
        .unwrap();
    let second = bob.send("Blabla", "spam spam spam").await.unwrap();
    let err = bob.delete(first.id, None).await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::Forbidden), "not one's own");
    alice.delete(first.id, None).await.unwrap();
    expect_event(&mut bob, "the deletion", |e| match e {
        Event::Deleted { id, place } if *id == first.id => place.room.clone(),
        _ => None,
    })
    .await;
    let err = alice.delete(first.id, None).await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage), "already deleted");
    let err = alice.edit(first.id, "x").await.unwrap_err();
    assert_eq!(
        code(err),
        Some(ErrorCode::NoSuchMessage),
        "a tombstone is not edited"
    );

    // An administrator deletes anyone's message, saying why; it is audited.
    let admin = admin(&server).await;
    let err = admin.delete(second.id, None).await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::MissingField));
    admin.delete(second.id, Some("spam")).await.unwrap();
    let entry = admin.audit(Some(1)).await.unwrap().remove(0);
    assert_eq!(entry.action, AuditAction::DeleteMessage);
    assert_eq!(entry.target, format!("bob#{}", second.id));
    assert_eq!(
        (entry.actor.as_str(), entry.reason.as_str()),
        ("admin", "spam")
    );

    // History keeps both as tombstones, without their text.
    let page = bob.room_history("Blabla", None, None).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    for m in &page.messages {
        assert!(m.extra.deleted && m.text.is_empty(), "{m:?}");
    }
    // The text is gone from the database itself.
    let url = server.store_url();
    let store = salon_server::Store::connect(&url).await.unwrap();
    let author_room = store
        .locate_message(first.id)
        .await
        .unwrap()
        .expect("the row stays");
    assert!(author_room.deleted && author_room.body.is_empty());
}

#[tokio::test]
async fn replies_quote_their_original_and_a_thread_pages_them() {
    let server = TestServer::start().await;
    let (alice, mut bob, carol) = blabla(&server).await;

    let root = alice.send("Blabla", "Lunch on Friday?").await.unwrap();
    let mut replies = Vec::new();
    for text in ["yes", "no", "maybe"] {
        replies.push(bob.reply("Blabla", root.id, text).await.unwrap().id);
    }
    let quote = expect_event(&mut bob, "a reply", |e| match e {
        Event::Message(m) if m.id == replies[0] => m.extra.reply_to.clone(),
        _ => None,
    })
    .await;
    assert_eq!((quote.id, quote.author.as_str()), (root.id, "alice"));
    assert_eq!(quote.text, "Lunch on Friday?");

    // The original counts its replies; the thread lists them, a page at a time.
    let page = alice.room_history("Blabla", None, None).await.unwrap();
    let original = page.messages.iter().find(|m| m.id == root.id).unwrap();
    assert_eq!(original.extra.replies, 3);
    let reply::Thread::Room {
        root: first,
        messages,
        more,
    } = alice.thread(root.id, None, Some(2)).await.unwrap()
    else {
        panic!("a room thread")
    };
    assert_eq!(first.text, "Lunch on Friday?");
    assert_eq!(
        messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        replies[1..]
    );
    assert!(more);
    let reply::Thread::Room { messages, more, .. } = alice
        .thread(root.id, Some(messages[0].id), Some(2))
        .await
        .unwrap()
    else {
        panic!("a room thread")
    };
    assert_eq!(
        messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        replies[..1]
    );
    assert!(!more);

    // A reply stays in its room; someone who cannot read the room cannot reply or look.
    let elsewhere = alice.send("Général", "in another room").await.unwrap();
    let err = alice.reply("Blabla", elsewhere.id, "x").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::InvalidRequest));
    let err = carol.thread(root.id, None, None).await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage));
    let err = carol.reply("Général", root.id, "x").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage));

    // Private conversations have replies too, within the conversation.
    let dm = alice.direct("bob", "did you get the file?").await.unwrap();
    let answer = bob.direct_reply("alice", dm.id, "yes").await.unwrap();
    let page = alice.direct_history("bob", None, None).await.unwrap();
    let got = page.messages.iter().find(|m| m.id == answer.id).unwrap();
    assert_eq!(got.extra.reply_to.as_ref().map(|q| q.id), Some(dm.id));
    let err = carol
        .direct_reply("alice", dm.id, "me too")
        .await
        .unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage));
}

#[tokio::test]
async fn reactions_are_live_counted_stored_and_limited() {
    let server = TestServer::start_with(|c| c.limits.reactions_per_message_max = 2).await;
    let (alice, mut bob, carol) = blabla(&server).await;

    let m = alice.send("Blabla", "we shipped!").await.unwrap();
    alice.react(m.id, "🎉").await.unwrap();
    bob.react(m.id, "🎉").await.unwrap();
    bob.react(m.id, "🎉").await.unwrap(); // again: no change
    let (user, added) = expect_event(&mut bob, "alice's reaction", |e| match e {
        Event::Reaction {
            id, user, added, ..
        } if *id == m.id => Some((user.clone(), *added)),
        _ => None,
    })
    .await;
    assert_eq!((user.as_str(), added), ("alice", true));

    let page = bob.room_history("Blabla", None, None).await.unwrap();
    let r = &page.messages[0].extra.reactions[0];
    assert_eq!((r.emoji.as_str(), r.count), ("🎉", 2));
    assert_eq!(r.users, ["alice", "bob"]);
    assert!(r.mine);

    // A second emoji fits the limit of 2; a third does not.
    alice.react(m.id, "\u{2764}").await.unwrap(); // stored as ❤️
    let err = alice.react(m.id, "👍").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::TooManyReactions));
    // Taking one back frees its place.
    alice.unreact(m.id, "\u{2764}\u{fe0f}").await.unwrap();
    alice.react(m.id, "👍").await.unwrap();
    let page = carol.room_history("Général", None, None).await.unwrap();
    assert!(page.messages.is_empty());

    for bad in ["", "hi", "👍👍", "<img src=x>", ":tada:"] {
        let err = alice.react(m.id, bad).await.unwrap_err();
        assert_eq!(code(err), Some(ErrorCode::InvalidReaction), "{bad:?}");
    }
    let err = carol.react(m.id, "👍").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage));
    alice.delete(m.id, None).await.unwrap();
    let err = bob.react(m.id, "👍").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NoSuchMessage), "deleted");
}

#[tokio::test]
async fn mentions_notify_members_only_and_tell_the_author_who_was_not_notified() {
    let server = TestServer::start().await;
    let (alice, mut bob, _carol) = blabla(&server).await;

    let sent = alice
        .send(
            "Blabla",
            "@Bob and @carol, see you at noon (mail me: alice@example.com)",
        )
        .await
        .unwrap();
    assert_eq!(sent.not_notified, [alias_of("carol")]);
    let mentions = expect_event(&mut bob, "the mention", |e| match e {
        Event::Message(m) if m.id == sent.id => Some(m.mentions.clone()),
        _ => None,
    })
    .await;
    assert_eq!(mentions, ["bob"]);
    let everyone = alice.send("Blabla", "@room lunch!").await.unwrap();
    let all = expect_event(&mut bob, "@room", |e| match e {
        Event::Message(m) if m.id == everyone.id => Some(m.mention_room),
        _ => None,
    })
    .await;
    assert!(all);

    // Bob's unread state counts both mentions; carol's has nothing from a room she
    // cannot read.
    let (_, welcome) = server.login("bob").await;
    let state = read_of(&welcome.read_state, "Blabla");
    assert_eq!((state.unread, state.mentions), (2, 2));
    let (_, welcome) = server.login("carol").await;
    assert!(welcome
        .read_state
        .iter()
        .all(|s| s.room.as_deref() != Some("Blabla")));
}

#[tokio::test]
async fn read_state_lives_on_the_server_and_follows_the_user_across_devices() {
    let server = TestServer::start().await;
    let (alice, bob, _carol) = blabla(&server).await;
    let (mut bob_phone, _) = server.login("bob").await;

    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(alice.send("Blabla", text).await.unwrap().id);
    }
    bob.send("Blabla", "my own message is never unread")
        .await
        .unwrap();
    let (_, welcome) = server.login("bob").await;
    let state = read_of(&welcome.read_state, "Blabla");
    assert_eq!((state.unread, state.mentions), (3, 0));
    assert_eq!(state.notify, Some(NotifyLevel::All));

    // Read on the desktop up to "two": the phone is told at once.
    let state = bob.mark_room_read("Blabla", ids[1]).await.unwrap();
    assert_eq!((state.last_read, state.unread), (ids[1], 1));
    let told = expect_event(&mut bob_phone, "the read state", |e| match e {
        Event::Read(s) if s.room.as_deref() == Some("Blabla") => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(told, state);
    // A marker never moves back.
    let state = bob.mark_room_read("Blabla", ids[0]).await.unwrap();
    assert_eq!(state.last_read, ids[1]);
    // A marker names a message of that room.
    let elsewhere = alice.send("Général", "x").await.unwrap();
    let err = bob
        .mark_room_read("Blabla", elsewhere.id)
        .await
        .unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::InvalidRequest));

    // Notification levels are stored too, and told to every device.
    let state = bob
        .set_notify("Blabla", NotifyLevel::Mentions)
        .await
        .unwrap();
    assert_eq!(state.notify, Some(NotifyLevel::Mentions));
    expect_event(&mut bob_phone, "the notification level", |e| match e {
        Event::Read(s) if s.notify == Some(NotifyLevel::Mentions) => Some(()),
        _ => None,
    })
    .await;
    let (_, welcome) = server.login("bob").await;
    let state = read_of(&welcome.read_state, "Blabla");
    assert_eq!((state.unread, state.last_read), (1, ids[1]));
    assert_eq!(state.notify, Some(NotifyLevel::Mentions));

    // Private conversations: unread until read, on every device.
    let dm = alice.direct("bob", "ping").await.unwrap();
    let (_, welcome) = server.login("bob").await;
    let conv = welcome
        .read_state
        .iter()
        .find(|s| s.with.as_deref() == Some("alice"))
        .expect("the conversation is unread");
    assert_eq!(conv.unread, 1);
    let state = bob_phone.mark_direct_read("alice", dm.id).await.unwrap();
    assert_eq!(state.unread, 0);
    let (_, welcome) = server.login("bob").await;
    assert!(welcome.read_state.iter().all(|s| s.with.is_none()));
    // Alice's own message is not unread for her.
    let (_, welcome) = server.login("alice").await;
    assert!(welcome.read_state.iter().all(|s| s.with.is_none()));
}

#[tokio::test]
async fn members_are_listed_and_see_who_joins_and_leaves() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let (carol, _) = server.user("carol").await;
    alice.join("Blabla").await.unwrap();
    bob.join("Blabla").await.unwrap();
    let (user, joined) = expect_event(&mut alice, "bob joining", |e| match e {
        Event::RoomMember {
            room, user, joined, ..
        } if room == "Blabla" && user == "bob" => Some((user.clone(), *joined)),
        _ => None,
    })
    .await;
    assert_eq!((user.as_str(), joined), ("bob", true));
    let members: Vec<String> = alice
        .members("Blabla")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(members, ["alice", "bob"]);
    let err = carol.members("Blabla").await.unwrap_err();
    assert_eq!(code(err), Some(ErrorCode::NotMember));
    bob.leave("Blabla").await.unwrap();
    expect_event(&mut alice, "bob leaving", |e| match e {
        Event::RoomMember { user, joined, .. } if user == "bob" && !joined => Some(()),
        _ => None,
    })
    .await;
}
