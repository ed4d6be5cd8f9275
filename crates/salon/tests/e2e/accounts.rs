//! R1–R4: registration, login, passwords, several sessions.

use salon_proto::{args, ErrorCode, Status};
use salon_server::Store;

use crate::harness::*;

#[tokio::test]
async fn register_then_log_in_by_username_or_alias_in_any_case() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let account = c
        .register(args::Register {
            username: "zoe".into(),
            alias: "Zoé D'Arc".into(),
            first_name: "Zoé".into(),
            last_name: "Arc".into(),
            password: PASSWORD.into(),
            invite: None,
        })
        .await
        .unwrap();
    assert_eq!(account.alias, "Zoé D'Arc");
    assert!(!account.is_admin);

    for login in ["zoe", "ZOE", "Zoé D'Arc", "zoé d'arc"] {
        let c = server.client().await;
        let welcome = c.login(login, PASSWORD).await.unwrap();
        assert_eq!(welcome.account.username, "zoe");
        assert_eq!(welcome.account.first_name, "Zoé");
        assert_eq!(welcome.account.status, Status::Online);
    }
}

#[tokio::test]
async fn registration_errors_name_the_field_and_the_reason() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let c = server.client().await;
    let cases: Vec<(&str, args::Register, ErrorCode, &str)> = vec![
        (
            "taken username",
            registration("ALICE"),
            ErrorCode::UsernameTaken,
            "username",
        ),
        (
            "taken alias",
            args::Register {
                username: "alice2".into(),
                ..registration("alice")
            },
            ErrorCode::AliasTaken,
            "alias",
        ),
        (
            "alias equal to another's username",
            args::Register {
                alias: "Alice".into(),
                ..registration("bob")
            },
            ErrorCode::AliasTaken,
            "alias",
        ),
        (
            "missing field",
            args::Register {
                last_name: String::new(),
                ..registration("carol")
            },
            ErrorCode::MissingField,
            "last_name",
        ),
        (
            "bad characters",
            args::Register {
                username: "car ol".into(),
                ..registration("carol")
            },
            ErrorCode::InvalidCharacters,
            "username",
        ),
        (
            "markup in alias",
            args::Register {
                alias: "<script>".into(),
                ..registration("carol")
            },
            ErrorCode::InvalidCharacters,
            "alias",
        ),
        (
            "too short",
            args::Register {
                username: "cj".into(),
                ..registration("carol")
            },
            ErrorCode::TooShort,
            "username",
        ),
        (
            "too long",
            args::Register {
                alias: "C".repeat(33),
                ..registration("carol")
            },
            ErrorCode::TooLong,
            "alias",
        ),
        (
            "short password",
            args::Register {
                password: "x7#k".into(),
                ..registration("carol")
            },
            ErrorCode::TooShort,
            "password",
        ),
        (
            "obvious password",
            args::Register {
                password: "Password123!".into(),
                ..registration("carol")
            },
            ErrorCode::WeakPassword,
            "password",
        ),
        (
            "password containing the username",
            args::Register {
                password: "carol-is-great".into(),
                ..registration("carol")
            },
            ErrorCode::WeakPassword,
            "password",
        ),
    ];
    for (what, registration, code, field) in cases {
        let err = c.register(registration).await.expect_err(what);
        let salon_client::ClientError::Server(body) = err else {
            panic!("{what}: {err}")
        };
        assert_eq!(body.code, code, "{what}: {body}");
        assert_eq!(body.field.as_deref(), Some(field), "{what}: {body}");
        assert!(!body.message.is_empty());
    }
    // The session is still usable after all those errors.
    c.register(registration("carol")).await.unwrap();
}

#[tokio::test]
async fn wrong_password_and_unknown_account_get_the_same_generic_error() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let c = server.client().await;
    let wrong = c.login("alice", "not the password").await.unwrap_err();
    let unknown = c.login("nobody", "not the password").await.unwrap_err();
    let (salon_client::ClientError::Server(a), salon_client::ClientError::Server(b)) =
        (wrong, unknown)
    else {
        panic!("expected server errors")
    };
    assert_eq!(a.code, ErrorCode::InvalidCredentials);
    assert_eq!(a, b, "the error must not reveal whether the account exists");
    // Commands needing a login are still refused.
    assert_eq!(
        c.rooms().await.unwrap_err().code(),
        Some(ErrorCode::NotAuthenticated)
    );
}

#[tokio::test]
async fn passwords_are_stored_only_as_salted_argon2id_hashes() {
    let server = TestServer::start().await;
    server.register("alice").await;
    server.register("bob").await;
    let store = Store::connect(&server.store_url()).await.unwrap();
    let a = store.user_by_name("alice").await.unwrap().unwrap();
    let b = store.user_by_name("bob").await.unwrap().unwrap();
    assert!(
        a.password_hash.starts_with("$argon2id$"),
        "{}",
        a.password_hash
    );
    assert!(!a.password_hash.contains(PASSWORD));
    assert_ne!(
        a.password_hash, b.password_hash,
        "same password, different salts"
    );
    store.close().await;
}

#[tokio::test]
async fn changing_password_requires_the_old_one() {
    let server = TestServer::start().await;
    let (c, _) = server.user("alice").await;
    let err = c
        .change_password("wrong old password", "a brand new secret")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCredentials));
    let err = c.change_password(PASSWORD, "password1").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::WeakPassword));
    c.change_password(PASSWORD, "a brand new secret")
        .await
        .unwrap();

    let fresh = server.client().await;
    assert_eq!(
        fresh.login("alice", PASSWORD).await.unwrap_err().code(),
        Some(ErrorCode::InvalidCredentials)
    );
    fresh.login("alice", "a brand new secret").await.unwrap();
}

#[tokio::test]
async fn one_account_may_have_several_sessions_at_once() {
    let server = TestServer::start().await;
    let (mut laptop, _) = server.user("alice").await;
    let (mut phone, _) = server.login("alice").await;
    let (bob, _) = server.user("bob").await;
    bob.send("Général", "hello both devices").await.unwrap();
    for device in [&mut laptop, &mut phone] {
        let text = expect_event(device, "message on each device", |e| {
            room_text(e, "Général")
        })
        .await;
        assert_eq!(text, "hello both devices");
    }
    // A second login on the same connection is refused.
    assert_eq!(
        laptop.login("alice", PASSWORD).await.unwrap_err().code(),
        Some(ErrorCode::AlreadyAuthenticated)
    );
}

#[tokio::test]
async fn auth_attempts_per_address_are_limited() {
    let server =
        TestServer::start_with(|c| c.limits.auth_attempts_per_minute_per_address = 2).await;
    let c = server.client().await;
    for _ in 0..2 {
        assert_eq!(
            c.login("someone", "guess guess guess")
                .await
                .unwrap_err()
                .code(),
            Some(ErrorCode::InvalidCredentials)
        );
    }
    assert_eq!(
        c.register(registration("carol")).await.unwrap_err().code(),
        Some(ErrorCode::RateLimited)
    );
}

#[tokio::test]
async fn a_session_token_resumes_without_the_password_until_logout() {
    let server = TestServer::start().await;
    let (c, welcome) = server.user("alice").await;
    assert_eq!(welcome.token.len(), 64);
    assert!(welcome.token_expires > real_now_ms());

    // A reconnecting client resumes with the token and is fully logged in.
    let again = server.client().await;
    let resumed = again.resume(&welcome.token).await.unwrap();
    assert_eq!(resumed.account.username, "alice");
    assert_eq!(resumed.token, welcome.token);
    again
        .send("Général", "back without typing my password")
        .await
        .unwrap();

    // Tokens are stored hashed, never as given.
    let store = Store::connect(&server.store_url()).await.unwrap();
    let stored = store
        .user_by_session_token(&welcome.token, real_now_ms())
        .await
        .unwrap();
    assert!(stored.is_none(), "the raw token is not a stored key");
    store.close().await;

    // Logout revokes it.
    c.logout().await.unwrap();
    let err = server
        .client()
        .await
        .resume(&welcome.token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCredentials));
    let err = server.client().await.resume("made-up").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCredentials));
}

#[tokio::test]
async fn a_password_change_revokes_the_other_devices_tokens_and_tokens_expire() {
    let server = TestServer::start_with(|c| c.limits.session_ttl_hours = 1).await;
    let (laptop, laptop_welcome) = server.user("alice").await;
    let (_phone, phone_welcome) = server.login("alice").await;
    laptop
        .change_password(PASSWORD, "a brand new secret")
        .await
        .unwrap();
    let err = server
        .client()
        .await
        .resume(&phone_welcome.token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCredentials));
    // The device that changed it keeps its session.
    server
        .client()
        .await
        .resume(&laptop_welcome.token)
        .await
        .unwrap();

    server.clock.advance_ms(3_600_001);
    let err = server
        .client()
        .await
        .resume(&laptop_welcome.token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCredentials));
}

#[tokio::test]
async fn an_account_has_at_most_max_sessions_per_user_sessions_and_refused_logins_leave_no_token() {
    let server = TestServer::start_with(|c| c.limits.max_sessions_per_user = 2).await;
    server.register("alice").await;
    let (first, _) = server.login("alice").await;
    let (_second, _) = server.login("alice").await;
    let third = server.client().await;
    let err = third.login("alice", PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooManySessions));
    // Resuming is a login too.
    let (spare, welcome) = {
        first.logout().await.unwrap();
        server.login("alice").await
    };
    let again = server.client().await;
    assert_eq!(
        again.resume(&welcome.token).await.unwrap_err().code(),
        Some(ErrorCode::TooManySessions)
    );
    // The refused logins stored no token: only the two sessions' tokens exist.
    drop(spare);
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.store_url()).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) FROM session_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.try_get::<i64, _>(0).unwrap(), 2);
    pool.close().await;
}
