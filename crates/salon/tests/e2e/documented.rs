//! docs/PROTOCOL.md taken at its word: each behaviour a black-box suite found disagreeing
//! with the document (issue 9), pinned as the document now states it.

use salon_client::{ClientError, Incoming};
use salon_proto::{args, CloseCode, Command, ErrorBody, ErrorCode};

use crate::harness::*;

/// A raw line connection: writes a frame, reads the next frame (the hello is skipped).
struct Raw {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(server: &TestServer) -> Raw {
        use tokio::io::AsyncBufReadExt;
        let stream = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
        let (read, write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        lines.next_line().await.unwrap().expect("hello");
        Raw { lines, write }
    }

    async fn ask(&mut self, frame: &str) -> serde_json::Value {
        use tokio::io::AsyncWriteExt;
        self.write
            .write_all(format!("{frame}\n").as_bytes())
            .await
            .unwrap();
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a reply")
            .unwrap()
            .expect("the connection stays open");
        serde_json::from_str(&line).unwrap()
    }
}

fn server_error(e: ClientError) -> ErrorBody {
    match e {
        ClientError::Server(body) => body,
        other => panic!("expected an error reply, got {other}"),
    }
}

#[tokio::test]
async fn request_ids_are_integers_from_0_to_2_pow_64_minus_1() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(&server).await;
    for id in ["0", "9007199254740993", "18446744073709551615"] {
        let reply = ask_ping(&mut raw, id).await;
        assert_eq!(reply["type"], "ok", "{id}: {reply}");
        assert_eq!(reply["re"].to_string(), id, "echoed exactly");
    }
    // Anything else is not a request at all: `bad_json`, without `re`.
    for id in ["-1", "1.5", "1e3", "18446744073709551616", "\"7\"", "null"] {
        let reply = ask_ping(&mut raw, id).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("bad_json")),
            "{id}: {reply}"
        );
        assert!(reply.get("re").is_none(), "{reply}");
    }
}

async fn ask_ping(raw: &mut Raw, id: &str) -> serde_json::Value {
    raw.ask(&format!(r#"{{"id":{id},"cmd":"ping"}}"#)).await
}

#[tokio::test]
async fn a_history_limit_out_of_range_is_refused_not_clamped() {
    let server = TestServer::start_with(|c| c.limits.history_page_max = 5).await;
    let (alice, _) = server.user("alice").await;
    for i in 0..7 {
        alice.send("Général", &format!("m{i}")).await.unwrap();
    }
    for limit in [0, 6, u32::MAX] {
        let body = server_error(
            alice
                .room_history("Général", None, Some(limit))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (body.code, body.field.as_deref()),
            (ErrorCode::InvalidRequest, Some("limit")),
            "{limit}"
        );
        assert!(body.message.contains("1 to 5"), "{}", body.message);
        let body = server_error(
            alice
                .direct_history("alice", None, Some(limit))
                .await
                .unwrap_err(),
        );
        assert_eq!(body.field.as_deref(), Some("limit"));
    }
    // The bounds themselves are fine; omitted is 50, or the maximum if smaller.
    let page = alice.room_history("Général", None, Some(5)).await.unwrap();
    assert_eq!((page.messages.len(), page.more), (5, true));
    let page = alice.room_history("Général", None, Some(1)).await.unwrap();
    assert_eq!(page.messages[0].text, "m6");
    let page = alice.room_history("Général", None, None).await.unwrap();
    assert_eq!(page.messages.len(), 5);
}

#[tokio::test]
async fn the_audit_limit_out_of_range_is_refused() {
    let server = TestServer::start().await;
    let (admin, _) = server.login("admin").await;
    for limit in [0, 1001] {
        let body = server_error(
            admin
                .request(Command::Audit(args::Audit { limit: Some(limit) }))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (body.code, body.field.as_deref()),
            (ErrorCode::InvalidRequest, Some("limit")),
            "{limit}"
        );
    }
    let reply = admin
        .request(Command::Audit(args::Audit { limit: Some(1000) }))
        .await
        .unwrap();
    assert!(!reply["entries"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_kick_closing_frame_says_until_when() {
    let server = TestServer::start().await;
    let (admin, _) = server.login("admin").await;
    let (mut bob, _) = server.user("bob").await;
    let reply = admin
        .request(Command::Kick(args::Kick {
            user: "bob".into(),
            seconds: Some(90),
            reason: Some("cool down".into()),
        }))
        .await
        .unwrap();
    let until = reply["until"].as_i64().unwrap();
    assert_eq!(until, server.clock_now() + 90_000);
    let (code, message, got) = expect(&mut bob, "closing", |i| match i {
        Incoming::Closing {
            code,
            message,
            until,
        } => Some((*code, message.clone(), *until)),
        _ => None,
    })
    .await;
    assert_eq!(code, CloseCode::Kicked);
    assert!(message.contains("cool down"), "{message}");
    assert_eq!(got, Some(until));

    // Other closings carry no `until`.
    let (carol, _) = server.user("carol").await;
    let mut carol = carol;
    carol.logout().await.unwrap();
    let until = expect(&mut carol, "closing", |i| match i {
        Incoming::Closing { code, until, .. } => Some((*code, *until)),
        _ => None,
    })
    .await;
    assert_eq!(until, (CloseCode::Logout, None));
}

#[tokio::test]
async fn reset_password_names_the_user_and_returns_only_a_generated_password() {
    let server = TestServer::start().await;
    let (admin, _) = server.login("admin").await;
    server.register("bob").await;
    let chosen = "a brand new passphrase";
    let reply = admin
        .request(Command::ResetPassword(args::ResetPassword {
            user: "Bob".into(),
            password: Some(chosen.into()),
        }))
        .await
        .unwrap();
    assert_eq!(reply, serde_json::json!({ "user": "bob" }));
    server.client().await.login("bob", chosen).await.unwrap();
    let reply = admin
        .request(Command::ResetPassword(args::ResetPassword {
            user: "bob".into(),
            password: None,
        }))
        .await
        .unwrap();
    assert_eq!(reply["user"], "bob");
    let generated = reply["password"].as_str().unwrap();
    server.client().await.login("bob", generated).await.unwrap();
}

#[tokio::test]
async fn a_channel_with_too_many_members_is_refused_naming_the_field() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let names: Vec<String> = (0..501).map(|i| format!("user{i}")).collect();
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let body = server_error(alice.create_channel("Crowd", &members).await.unwrap_err());
    assert_eq!(
        (body.code, body.field.as_deref()),
        (ErrorCode::TooLong, Some("members"))
    );
    assert!(body.message.contains("500"), "{}", body.message);
}

#[tokio::test]
async fn deciding_on_a_room_that_takes_no_requests_says_so() {
    let server = TestServer::start().await;
    let (admin, _) = server.login("admin").await;
    let (alice, _) = server.user("alice").await;
    alice.create_channel("Projet X", &[]).await.unwrap();
    let decide = |room: &str, accept: bool| {
        let a = args::Decide {
            user: "alice".into(),
            room: room.into(),
            reason: None,
        };
        admin.request(if accept {
            Command::Accept(a)
        } else {
            Command::Reject(a)
        })
    };
    for (room, accept) in [("Blabla", true), ("général", false)] {
        let body = server_error(decide(room, accept).await.unwrap_err());
        assert_eq!(
            (body.code, body.field.as_deref()),
            (ErrorCode::InvalidRequest, Some("room")),
            "{room}"
        );
        assert!(
            body.message.contains("does not take join requests"),
            "{}",
            body.message
        );
    }
    // Rooms that do not exist, and private channels of others, do not exist.
    for room in ["Nowhere", "Projet X"] {
        let body = server_error(decide(room, true).await.unwrap_err());
        assert_eq!(body.code, ErrorCode::NoSuchRoom, "{room}");
    }
}

#[tokio::test]
async fn reasons_and_the_shutdown_message_have_at_most_500_characters() {
    let server = TestServer::start().await;
    let (admin, _) = server.login("admin").await;
    let (alice, _) = server.user("alice").await;
    alice.join("Marketing").await.unwrap();
    let long = "x".repeat(501);
    let refused = [
        Command::Kick(args::Kick {
            user: "alice".into(),
            seconds: None,
            reason: Some(long.clone()),
        }),
        Command::Ban(args::Ban {
            user: "alice".into(),
            reason: Some(long.clone()),
        }),
        Command::Reject(args::Decide {
            user: "alice".into(),
            room: "Marketing".into(),
            reason: Some(long.clone()),
        }),
        Command::Shutdown(args::Shutdown {
            seconds: Some(1),
            message: Some(long.clone()),
        }),
    ];
    for command in refused {
        let name = command.name();
        let body = server_error(admin.request(command).await.unwrap_err());
        let field = if name == "shutdown" {
            "message"
        } else {
            "reason"
        };
        assert_eq!(
            (body.code, body.field.as_deref()),
            (ErrorCode::TooLong, Some(field)),
            "{name}"
        );
    }
    // Nothing was done: alice is connected, her request pending, the server not stopping.
    alice.ping().await.unwrap();
    server.login("alice").await;
    admin
        .request(Command::Reject(args::Decide {
            user: "alice".into(),
            room: "Marketing".into(),
            reason: Some("x".repeat(500)),
        }))
        .await
        .unwrap();
}
