//! Nothing to learn by probing (issue 10, item 6): creating a channel never reveals a
//! private channel the creator cannot see, and registration, whose answers say whether a
//! name is taken, is rate limited per address and over the whole server.

use salon_client::ClientError;
use salon_proto::{ErrorBody, ErrorCode, MemberState};

use crate::guessing::client_from;
use crate::harness::*;

fn body<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorBody {
    match r {
        Err(ClientError::Server(body)) => body,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn creating_a_channel_never_reveals_one_the_creator_cannot_see() {
    let server = TestServer::start().await;
    let (carol, _) = server.user("carol").await;
    server.register("dave").await;
    carol
        .create_channel("Secret Plans", &["dave"])
        .await
        .unwrap();
    let (alice, _) = server.user("alice").await;

    for name in ["Secret Plans", "secret plans"] {
        let refused = body(alice.create_channel(name, &[]).await);
        assert_ne!(refused.code, ErrorCode::NameTaken, "{}", refused.message);
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
        assert_eq!(refused.field.as_deref(), Some("name"));
        let message = refused.message.to_lowercase();
        assert!(
            !message.contains("secret") && !message.contains("exist"),
            "{message}"
        );
    }
    // Still invisible to her, still whole for its members.
    assert!(alice
        .rooms()
        .await
        .unwrap()
        .iter()
        .all(|r| r.name != "Secret Plans"));
    let mine = carol.rooms().await.unwrap();
    assert!(mine
        .iter()
        .any(|r| r.name == "Secret Plans" && r.state == MemberState::Member));

    // Names she can see are reported taken, as before.
    assert_eq!(
        body(alice.create_channel("Général", &[]).await).code,
        ErrorCode::NameTaken
    );
    alice.create_channel("Projet A", &[]).await.unwrap();
    assert_eq!(
        body(alice.create_channel("projet a", &[]).await).code,
        ErrorCode::NameTaken
    );
    // A member of a channel sees it, so its name is reported taken to her.
    assert_eq!(
        body(carol.create_channel("SECRET PLANS", &[]).await).code,
        ErrorCode::NameTaken
    );
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let server = TestServer::start_with(|c| c.limits.registrations_per_hour_per_address = 3).await;
    let prober = client_from(&server, 2).await;
    prober.register(registration("alice")).await.unwrap();
    // Refused answers count too: they are what a prober is after.
    assert_eq!(
        body(prober.register(registration("alice")).await).code,
        ErrorCode::UsernameTaken
    );
    prober.register(registration("bob")).await.unwrap();
    let refused = body(prober.register(registration("admin")).await);
    assert_eq!(refused.code, ErrorCode::RateLimited);
    assert!(
        refused.message.contains("your address"),
        "{}",
        refused.message
    );
    assert!(refused.retry_after_ms.is_some_and(|ms| ms > 0));
    // Another address is not affected.
    client_from(&server, 3)
        .await
        .register(registration("carol"))
        .await
        .unwrap();
}

#[tokio::test]
async fn registration_is_rate_limited_over_the_whole_server() {
    let server = TestServer::start_with(|c| c.limits.registrations_per_minute = 2).await;
    client_from(&server, 2)
        .await
        .register(registration("alice"))
        .await
        .unwrap();
    assert_eq!(
        body(
            client_from(&server, 3)
                .await
                .register(registration("alice"))
                .await
        )
        .code,
        ErrorCode::UsernameTaken
    );
    let refused = body(
        client_from(&server, 4)
            .await
            .register(registration("bob"))
            .await,
    );
    assert_eq!(refused.code, ErrorCode::RateLimited);
    assert!(refused.message.contains("right now"), "{}", refused.message);
    assert!(refused.retry_after_ms.is_some_and(|ms| ms > 0));
}
