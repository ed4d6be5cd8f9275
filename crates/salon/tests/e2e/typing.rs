//! Typing indicators (issue 13): ephemeral, authorised like the messages they announce,
//! forwarded at most once per interval, never stored.

use salon_client::Incoming;
use salon_proto::{ErrorCode, Event};

use crate::harness::*;

/// The next typing event: (room, user, expires_ms).
async fn typing_event(client: &mut salon_client::Client) -> (Option<String>, String, u32) {
    expect_event(client, "typing", |e| match e {
        Event::Typing {
            room,
            user,
            expires_ms,
            ..
        } => Some((room.clone(), user.clone(), *expires_ms)),
        _ => None,
    })
    .await
}

fn is_typing(i: &Incoming) -> bool {
    matches!(i, Incoming::Event(Event::Typing { .. }))
}

#[tokio::test]
async fn typing_in_a_room_reaches_its_members_once_per_interval_and_expires() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;

    alice.typing_in("général").await.unwrap();
    let (room, user, expires) = typing_event(&mut bob).await;
    assert_eq!((room.as_deref(), user.as_str()), (Some("Général"), "alice"));
    assert!(expires > 0, "an indicator expires by itself");

    // Said again at once: answered, not forwarded; nor elsewhere within a second, so
    // that switching places cannot make one session's indicators fan out more often.
    alice.typing_in("Général").await.unwrap();
    alice.typing_to("bob").await.unwrap();
    expect_none(
        &mut bob,
        "a second indicator within the interval",
        is_typing,
    )
    .await;
    server.clock.advance_ms(1_000);
    alice.typing_to("bob").await.unwrap();
    assert_eq!(
        typing_event(&mut bob).await.0,
        None,
        "to bob, a second later"
    );

    // After the interval it is forwarded again.
    server.clock.advance_ms(3_000);
    alice.typing_in("Général").await.unwrap();
    assert_eq!(typing_event(&mut bob).await.1, "alice");

    // Nothing is stored: history has no trace of it.
    let page = bob.room_history("Général", None, None).await.unwrap();
    assert!(page.messages.is_empty(), "{page:?}");
}

#[tokio::test]
async fn typing_to_someone_reaches_only_them_and_typing_where_one_cannot_post_is_refused() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;

    alice.typing_to("Bob").await.unwrap();
    let (room, user, _) = typing_event(&mut bob).await;
    assert_eq!((room, user.as_str()), (None, "alice"));
    expect_none(&mut carol, "someone else's private typing", is_typing).await;

    // A room one is not a member of, a private channel one cannot see, nobody, both.
    let err = alice.typing_in("Comptabilité").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err:?}");
    carol.create_channel("secret", &["bob"]).await.unwrap();
    let err = alice.typing_in("secret").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchRoom), "{err:?}");
    let err = alice.typing_to("nobody").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchUser), "{err:?}");
    let both = salon_proto::args::Typing {
        room: Some("Général".into()),
        with: Some("bob".into()),
    };
    let err = alice
        .call::<salon_proto::cmd::Typing>(both)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err:?}");
    expect_none(&mut bob, "an indicator for a refused request", is_typing).await;
}
