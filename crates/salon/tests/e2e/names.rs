//! Issue 10: names compared as people see them. Look-alikes of existing names (other
//! scripts, fullwidth and mathematical letters, dotless i, trailing punctuation) are
//! refused naming what they resemble; hidden characters and mixed scripts are refused;
//! the shared username/alias namespace holds under concurrent registrations because the
//! database keeps one row per look-alike key; logins match names exactly on every
//! database (no trailing-space padding on MariaDB).

use salon_proto::{args, ErrorCode};

use crate::harness::*;

async fn refused(server: &TestServer, username: &str, alias: &str) -> (ErrorCode, String) {
    let c = server.client().await;
    let err = c
        .register(args::Register {
            username: username.into(),
            alias: alias.into(),
            ..registration("unused")
        })
        .await
        .expect_err(&format!("{username:?} / {alias:?} must be refused"));
    match err {
        salon_client::ClientError::Server(body) => (body.code, body.message),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn look_alikes_of_existing_names_are_refused_saying_what_they_resemble() {
    let server = TestServer::start().await;
    // `admin` / `Administrator` exist from the start; alice is "Cepa".
    server
        .client()
        .await
        .register(args::Register {
            alias: "Cepa".into(),
            ..registration("alice")
        })
        .await
        .unwrap();
    for (username, alias, resembles) in [
        ("mallory1", "Admın", "admin"),                  // dotless ı
        ("mallory2", "Administrator.", "Administrator"), // trailing punctuation
        ("mallory3", "Сера", "Cepa"),                    // all Cyrillic
        ("mallory4", "Ce-pa", "Cepa"),
    ] {
        let (code, message) = refused(&server, username, alias).await;
        assert_eq!(code, ErrorCode::AliasTaken, "{alias:?}: {message}");
        assert!(
            message.contains(&format!("{resembles:?}")),
            "{alias:?}: the message names what it resembles: {message}"
        );
    }
    // Fullwidth and mathematical letters are the plain ones once normalised: taken.
    for alias in ["Ａｄｍｉｎ", "𝐀𝐝𝐦𝐢𝐧"] {
        let (code, _) = refused(&server, "mallory5", alias).await;
        assert_eq!(code, ErrorCode::AliasTaken, "{alias:?}");
    }
    for username in ["admin.", "admin_", "ad-min", "ADMIN"] {
        let (code, message) = refused(&server, username, "Someone Else").await;
        assert_eq!(code, ErrorCode::UsernameTaken, "{username:?}: {message}");
    }
    // Hidden characters and letters of two scripts in one name.
    for alias in [
        "Administrator\u{3164}", // Hangul filler
        "\u{3164}\u{3164}\u{3164}",
        "аdmin",         // Cyrillic а among Latin
        "Αdministrator", // Greek Α among Latin
        "Bоb",           // Cyrillic о
    ] {
        let (code, message) = refused(&server, "mallory7", alias).await;
        assert_eq!(code, ErrorCode::InvalidCharacters, "{alias:?}: {message}");
    }
    // Distinct names in any script still register, accents are significant.
    for (username, alias) in [
        ("ivan", "Иван"),
        ("taro", "山田 太郎"),
        ("zmartin", "Zoé Martin"),
    ] {
        server
            .client()
            .await
            .register(args::Register {
                username: username.into(),
                alias: alias.into(),
                ..registration(username)
            })
            .await
            .unwrap();
    }
    server
        .client()
        .await
        .register(args::Register {
            username: "zoe2".into(),
            alias: "Zoe Martin".into(),
            ..registration("zoe2")
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn room_names_that_hide_or_mix_scripts_or_resemble_a_room_are_refused() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    for name in ["Gеnéral", "Général\u{3164}", "Infоrmatique"] {
        let err = alice.create_channel(name, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidCharacters), "{name:?}");
    }
    for name in ["GÉNÉRAL", "Général.", "Bla-bla"] {
        let err = alice.create_channel(name, &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NameTaken), "{name:?}");
    }
    alice.create_channel("Projet Été", &[]).await.unwrap();
}

#[tokio::test]
async fn concurrent_registrations_cannot_break_the_shared_namespace() {
    let server = TestServer::start().await;
    for i in 0..10 {
        // One takes `race{i}` as a username, the other the same name as an alias.
        let (a, b) = (server.client().await, server.client().await);
        let (ra, rb) = tokio::join!(
            a.register(args::Register {
                username: format!("race{i}"),
                alias: format!("Alpha {i}"),
                ..registration("x")
            }),
            b.register(args::Register {
                username: format!("other{i}"),
                alias: format!("Race{i}"),
                ..registration("x")
            })
        );
        assert!(
            ra.is_ok() != rb.is_ok(),
            "exactly one of them: {ra:?} / {rb:?}"
        );
        let err = ra.err().or(rb.err()).unwrap();
        assert!(
            matches!(
                err.code(),
                Some(ErrorCode::UsernameTaken | ErrorCode::AliasTaken)
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn logins_match_names_exactly_on_every_database() {
    let server = TestServer::start().await;
    server.register("injuser").await;
    for login in ["injuser   ", "injuser\t", " injuser"] {
        assert_eq!(
            server.login_refused(login, PASSWORD).await,
            Some(ErrorCode::InvalidCredentials),
            "{login:?}"
        );
    }
    server.login("injuser").await;
    // Normalised like registration: the fullwidth spelling is the same name.
    let c = server.client().await;
    c.login("ｉｎｊｕｓｅｒ", PASSWORD).await.unwrap();
}
