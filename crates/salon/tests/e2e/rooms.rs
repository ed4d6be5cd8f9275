//! R6–R11: default rooms, join policies, requests, membership, private channels.

use salon_proto::{ErrorCode, Event, JoinPolicy, MemberState, RoomInfo};

use crate::harness::*;

fn state_of(rooms: &[RoomInfo], name: &str) -> Option<MemberState> {
    rooms.iter().find(|r| r.name == name).map(|r| r.state)
}

#[tokio::test]
async fn five_default_rooms_with_accents_policies_and_the_users_state() {
    let server = TestServer::start().await;
    let (c, welcome) = server.user("alice").await;
    let expected = vec![
        ("Général", JoinPolicy::Everyone, MemberState::Member),
        ("Blabla", JoinPolicy::Open, MemberState::CanJoin),
        ("Comptabilité", JoinPolicy::Request, MemberState::CanRequest),
        ("Informatique", JoinPolicy::Request, MemberState::CanRequest),
        ("Marketing", JoinPolicy::Request, MemberState::CanRequest),
    ];
    let got: Vec<_> = welcome
        .rooms
        .iter()
        .map(|r| (r.name.as_str(), r.policy, r.state))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(c.rooms().await.unwrap(), welcome.rooms);
}

#[tokio::test]
async fn blabla_is_joined_freely_and_left_but_general_cannot_be_left() {
    let server = TestServer::start().await;
    let (c, _) = server.user("alice").await;
    let room = c.join("blabla").await.unwrap(); // names are case-insensitive
    assert_eq!(
        (room.name.as_str(), room.state),
        ("Blabla", MemberState::Member)
    );
    assert_eq!(
        c.join("Blabla").await.unwrap_err().code(),
        Some(ErrorCode::AlreadyMember)
    );
    c.send("Blabla", "hi").await.unwrap();
    let room = c.leave("Blabla").await.unwrap();
    assert_eq!(room.state, MemberState::CanJoin);
    assert_eq!(
        c.send("Blabla", "hi").await.unwrap_err().code(),
        Some(ErrorCode::NotMember)
    );
    assert_eq!(
        c.leave("Blabla").await.unwrap_err().code(),
        Some(ErrorCode::NotMember)
    );
    assert_eq!(
        c.leave("Général").await.unwrap_err().code(),
        Some(ErrorCode::CannotLeave)
    );
    assert_eq!(
        c.join("Nowhere").await.unwrap_err().code(),
        Some(ErrorCode::NoSuchRoom)
    );
}

#[tokio::test]
async fn a_join_request_is_stored_shown_as_pending_and_survives_a_restart() {
    let server = TestServer::start().await;
    let (c, _) = server.user("alice").await;
    let room = c.join("Comptabilité").await.unwrap();
    assert_eq!(room.state, MemberState::Pending);
    assert_eq!(
        c.join("Comptabilité").await.unwrap_err().code(),
        Some(ErrorCode::RequestPending)
    );
    // Pending is not membership.
    assert_eq!(
        c.send("Comptabilité", "let me in")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotMember)
    );
    assert_eq!(
        c.room_history("Comptabilité", None, None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotMember)
    );

    let server = server.restart().await;
    let (c, welcome) = server.login("alice").await;
    assert_eq!(
        state_of(&welcome.rooms, "Comptabilité"),
        Some(MemberState::Pending)
    );
    assert_eq!(
        state_of(&welcome.rooms, "Marketing"),
        Some(MemberState::CanRequest)
    );
    // Withdrawing the request.
    assert_eq!(
        c.leave("Comptabilité").await.unwrap().state,
        MemberState::CanRequest
    );
    let c2 = server.login("alice").await.0;
    assert_eq!(
        state_of(&c2.rooms().await.unwrap(), "Comptabilité"),
        Some(MemberState::CanRequest)
    );
}

#[tokio::test]
async fn only_members_read_post_and_receive_a_rooms_messages() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut member, _) = server.user("bob").await;
    let (mut outsider, _) = server.user("carol").await;
    alice.join("Blabla").await.unwrap();
    member.join("Blabla").await.unwrap();

    alice.send("Blabla", "members only").await.unwrap();
    let text = expect_event(&mut member, "member gets it", |e| room_text(e, "Blabla")).await;
    assert_eq!(text, "members only");
    expect_none(
        &mut outsider,
        "message to a non-member",
        |i| matches!(i, salon_client::Incoming::Event(Event::Message(m)) if m.room == "Blabla"),
    )
    .await;
    assert_eq!(
        outsider
            .send("Blabla", "let me talk")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotMember)
    );
    assert_eq!(
        outsider
            .room_history("Blabla", None, None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotMember)
    );
    // Once joined, the history is readable.
    outsider.join("Blabla").await.unwrap();
    let page = outsider.room_history("Blabla", None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1);
}

#[tokio::test]
async fn membership_persists_so_a_user_is_in_their_rooms_at_each_login() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    alice.join("Blabla").await.unwrap();
    drop(alice);
    server.register("bob").await;

    let server = server.restart().await;
    let (mut alice, welcome) = server.login("alice").await;
    assert_eq!(
        state_of(&welcome.rooms, "Blabla"),
        Some(MemberState::Member)
    );
    let (bob, _) = server.login("bob").await;
    bob.join("Blabla").await.unwrap();
    bob.send("Blabla", "welcome back").await.unwrap();
    let text = expect_event(&mut alice, "Blabla message after restart", |e| {
        room_text(e, "Blabla")
    })
    .await;
    assert_eq!(text, "welcome back");
}

#[tokio::test]
async fn joining_on_one_device_updates_the_other_devices() {
    let server = TestServer::start().await;
    let (laptop, _) = server.user("alice").await;
    let (mut phone, _) = server.login("alice").await;
    laptop.join("Blabla").await.unwrap();
    let room = expect_event(&mut phone, "membership event", |e| match e {
        Event::Membership { room, .. } if room.name == "Blabla" => Some(room.clone()),
        _ => None,
    })
    .await;
    assert_eq!(room.state, MemberState::Member);
    // And the phone session now receives the room.
    let (bob, _) = server.user("bob").await;
    bob.join("Blabla").await.unwrap();
    bob.send("Blabla", "to every device").await.unwrap();
    expect_event(&mut phone, "room message on the other device", |e| {
        room_text(e, "Blabla")
    })
    .await;
}

#[tokio::test]
async fn private_channels_are_visible_and_usable_by_their_members_only() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;

    let room = alice.create_channel("Projet X", &["Bob"]).await.unwrap(); // alias works too
    assert_eq!(
        (room.name.as_str(), room.policy, room.state),
        ("Projet X", JoinPolicy::Private, MemberState::Member)
    );
    let (room, reason) = expect_event(&mut bob, "added to channel", |e| match e {
        Event::Membership { room, reason } => Some((room.clone(), reason.clone())),
        _ => None,
    })
    .await;
    assert_eq!(
        (room.name.as_str(), room.state),
        ("Projet X", MemberState::Member)
    );
    assert!(reason.unwrap().contains("Alice"));

    alice.send("Projet X", "secret plans").await.unwrap();
    expect_event(&mut bob, "channel message", |e| room_text(e, "Projet X")).await;
    expect_none(
        &mut carol,
        "channel message to a non-member",
        |i| matches!(i, salon_client::Incoming::Event(Event::Message(m)) if m.room == "Projet X"),
    )
    .await;

    // Invisible to carol: not listed, and it "does not exist" for every command.
    assert_eq!(state_of(&carol.rooms().await.unwrap(), "Projet X"), None);
    for code in [
        carol.join("Projet X").await.unwrap_err().code(),
        carol.send("Projet X", "hello?").await.unwrap_err().code(),
        carol
            .room_history("Projet X", None, None)
            .await
            .unwrap_err()
            .code(),
        carol.leave("Projet X").await.unwrap_err().code(),
    ] {
        assert_eq!(code, Some(ErrorCode::NoSuchRoom));
    }

    // Its name is not reported taken to her either (see `probing.rs`).
    assert_eq!(
        carol
            .create_channel("projet x", &[])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        carol
            .create_channel("Général", &[])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NameTaken)
    );
    assert_eq!(
        carol
            .create_channel("Ghosts", &["nobody"])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NoSuchUser)
    );
    assert_eq!(
        carol.create_channel("<b>", &[]).await.unwrap_err().code(),
        Some(ErrorCode::InvalidCharacters)
    );

    // Membership of the channel persists; leaving makes it disappear for the leaver.
    let server = server.restart().await;
    let (bob, welcome) = server.login("bob").await;
    assert_eq!(
        state_of(&welcome.rooms, "Projet X"),
        Some(MemberState::Member)
    );
    assert_eq!(
        bob.room_history("Projet X", None, None)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );
    assert_eq!(
        bob.leave("Projet X").await.unwrap().state,
        MemberState::None
    );
    assert_eq!(state_of(&bob.rooms().await.unwrap(), "Projet X"), None);
    let _ = &mut carol;
}

#[tokio::test]
async fn one_user_joining_from_three_sessions_at_once_files_one_request() {
    let server = TestServer::start().await;
    let (mut admin, _) = server.login("admin").await;
    server.register("alice").await;
    let (a1, _) = server.login("alice").await;
    let (a2, _) = server.login("alice").await;
    let (a3, _) = server.login("alice").await;

    // A request-only room: one request, the others are told it is pending.
    let (r1, r2, r3) = tokio::join!(
        a1.join("Marketing"),
        a2.join("Marketing"),
        a3.join("Marketing")
    );
    let results = [r1, r2, r3];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Some(ErrorCode::RequestPending));
    }
    expect_event(&mut admin, "the join request", |e| match e {
        Event::JoinRequest(r) if r.user == "alice" => Some(()),
        _ => None,
    })
    .await;
    expect_none(&mut admin, "a second join request", |i| {
        matches!(i, salon_client::Incoming::Event(Event::JoinRequest(_)))
    })
    .await;
    assert_eq!(admin_requests(&admin).await, 1);

    // An open room: one joins, the others are told they already are members.
    let (r1, r2, r3) = tokio::join!(a1.join("Blabla"), a2.join("Blabla"), a3.join("Blabla"));
    let results = [r1, r2, r3];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Some(ErrorCode::AlreadyMember));
    }
}

async fn admin_requests(admin: &salon_client::Client) -> usize {
    let v = admin
        .request(salon_proto::Command::Requests(salon_proto::args::Empty {}))
        .await
        .unwrap();
    v["requests"].as_array().unwrap().len()
}

#[tokio::test]
async fn one_user_creates_at_most_channels_per_hour_and_a_refused_name_costs_nothing() {
    let server = TestServer::start_with(|c| c.limits.channels_per_hour_per_user = 2).await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    server.user("carol").await;
    alice.create_channel("Projet-1", &["carol"]).await.unwrap();
    // A name refused (taken) is not counted.
    let taken = alice
        .create_channel("Projet-1", &["carol"])
        .await
        .unwrap_err();
    assert_ne!(taken.code(), Some(ErrorCode::RateLimited), "{taken}");
    alice.create_channel("Projet-2", &["carol"]).await.unwrap();
    let refused = alice
        .create_channel("Projet-3", &["carol"])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused}");
    assert!(refused.to_string().contains("channels"), "{refused}");
    // Nothing was made, and another user is not concerned.
    assert!(alice
        .rooms()
        .await
        .unwrap()
        .iter()
        .all(|r| r.name != "Projet-3"));
    bob.create_channel("Projet-3", &["carol"]).await.unwrap();
}

#[tokio::test]
async fn join_requests_are_limited_per_hour_withdrawn_ones_included() {
    let server = TestServer::start_with(|c| c.limits.join_requests_per_hour_per_user = 2).await;
    let (mut admin, _) = server.login("admin").await;
    let (alice, _) = server.user("alice").await;
    // A request, its withdrawal, a request again: two told to administrators.
    alice.join("Comptabilité").await.unwrap();
    alice.leave("Comptabilité").await.unwrap();
    alice.join("Comptabilité").await.unwrap();
    alice.leave("Comptabilité").await.unwrap();
    let refused = alice.join("Comptabilité").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused}");
    assert!(refused.to_string().contains("join"), "{refused}");
    let refused = alice.join("Marketing").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused}");
    for _ in 0..2 {
        expect_event(&mut admin, "a join request", |e| match e {
            Event::JoinRequest(r) if r.user == "alice" => Some(()),
            _ => None,
        })
        .await;
    }
    expect_none(&mut admin, "a third join request", |i| {
        matches!(i, salon_client::Incoming::Event(Event::JoinRequest(_)))
    })
    .await;
    // Joining an open room is not a request.
    alice.join("Blabla").await.unwrap();
}

#[tokio::test]
async fn one_user_is_in_at_most_rooms_per_user_max_rooms_and_channels() {
    let server = TestServer::start_with(|c| c.limits.rooms_per_user_max = 3).await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    // Général, then Blabla, then a channel: three.
    alice.join("Blabla").await.unwrap();
    alice.create_channel("Projet", &["bob"]).await.unwrap();
    let refused = alice.join("Marketing").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidRequest), "{refused}");
    assert!(refused.to_string().contains("leave one first"), "{refused}");
    let refused = alice.create_channel("Autre", &["bob"]).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidRequest), "{refused}");
    // Nobody can add her to more either.
    let refused = bob.create_channel("Autre", &["alice"]).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidRequest), "{refused}");
    assert!(refused.to_string().contains("alice"), "{refused}");
    assert_eq!(
        crate::storage::field_of(&refused).as_deref(),
        Some("members")
    );
    // Leaving one makes room.
    alice.leave("Blabla").await.unwrap();
    bob.create_channel("Autre", &["alice"]).await.unwrap();
}
