//! R5, R8, R15, R17–R19: administration through the protocol (the console and
//! `salon admin` send these same commands; see `console.rs` for those ways in).

use salon_client::{Client, ClientError, Incoming};
use salon_proto::{args, CloseCode, Command, ErrorCode, Event, MemberState};

use crate::harness::*;

async fn admin(server: &TestServer) -> Client {
    server.login("admin").await.0
}

fn membership_of(e: &Event, room: &str) -> Option<(MemberState, Option<String>)> {
    match e {
        Event::Membership { room: r, reason } if r.name == room => Some((r.state, reason.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn a_fresh_server_has_its_first_administrator() {
    let server = TestServer::start().await;
    let (c, welcome) = server.login("admin").await;
    assert!(welcome.account.is_admin);
    let audit: serde_json::Value = c
        .request(Command::Audit(args::Audit { limit: None }))
        .await
        .unwrap();
    let entry = &audit["entries"][0];
    assert_eq!(
        (
            entry["actor"].as_str(),
            entry["action"].as_str(),
            entry["target"].as_str()
        ),
        (Some("server"), Some("create_user"), Some("admin"))
    );
    // Restarting does not create another one or change its password.
    let server = server.restart().await;
    server.login("admin").await;
}

#[tokio::test]
async fn every_admin_command_is_forbidden_to_other_users() {
    let server = TestServer::start().await;
    let (c, _) = server.user("alice").await;
    let commands = vec![
        Command::Connected(args::Empty {}),
        Command::Kick(args::Kick {
            user: "admin".into(),
            seconds: None,
            reason: None,
        }),
        Command::Unkick(args::Target {
            user: "alice".into(),
        }),
        Command::Ban(args::Ban {
            user: "admin".into(),
            reason: None,
        }),
        Command::Unban(args::Target {
            user: "alice".into(),
        }),
        Command::Sanctions(args::Empty {}),
        Command::Requests(args::Empty {}),
        Command::Accept(args::Decide {
            user: "alice".into(),
            room: "Marketing".into(),
            reason: None,
        }),
        Command::Reject(args::Decide {
            user: "alice".into(),
            room: "Marketing".into(),
            reason: None,
        }),
        Command::Broadcast(args::Broadcast { text: "hi".into() }),
        Command::Shutdown(args::Shutdown::default()),
        Command::ResetPassword(args::ResetPassword {
            user: "admin".into(),
            password: None,
        }),
        Command::Audit(args::Audit::default()),
        Command::Accounts(args::Accounts::default()),
    ];
    assert_eq!(
        commands.len(),
        Command::NAMES
            .iter()
            .filter(|n| {
                [
                    "connected",
                    "kick",
                    "unkick",
                    "ban",
                    "unban",
                    "requests",
                    "accept",
                    "reject",
                    "broadcast",
                    "shutdown",
                    "reset_password",
                    "audit",
                    "sanctions",
                    "accounts",
                ]
                .contains(n)
            })
            .count()
    );
    for command in commands {
        let name = command.name();
        let err = c.request(command).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{name}");
    }
    // And before login: not authenticated.
    let anonymous = server.client().await;
    let err = anonymous
        .request(Command::Requests(args::Empty {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAuthenticated));
    // Nothing happened: the server still runs and admin can log in.
    server.login("admin").await;
}

#[tokio::test]
async fn kick_disconnects_every_session_refuses_login_until_it_expires_or_is_lifted() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    let (mut laptop, _) = server.user("bob").await;
    let (mut phone, _) = server.login("bob").await;
    let reply = admin
        .request(Command::Kick(args::Kick {
            user: "Bob".into(),
            seconds: Some(600),
            reason: Some("flooding Général".into()),
        }))
        .await
        .unwrap();
    let until = reply["until"].as_i64().unwrap();
    assert_eq!(until, server.clock_now() + 600_000);
    for device in [&mut laptop, &mut phone] {
        let (code, message) = expect_closing(device).await;
        assert_eq!(code, CloseCode::Kicked);
        assert!(
            message.contains("flooding Général") && message.contains("10 min"),
            "{message}"
        );
        assert!(device.next_event().await.is_none(), "disconnected");
    }

    // Refused, saying for how long; the same through a session token.
    let c = server.client().await;
    let ClientError::Server(body) = c.login("bob", PASSWORD).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(body.code, ErrorCode::Kicked);
    assert_eq!(body.until, Some(until));
    assert!(
        body.message.contains("10 min") && body.message.contains("flooding"),
        "{}",
        body.message
    );
    // Administrators can list it.
    let listed = admin
        .request(Command::Sanctions(args::Empty {}))
        .await
        .unwrap();
    let s = &listed["sanctions"][0];
    assert_eq!(
        (
            s["user"].as_str(),
            s["kind"].as_str(),
            s["until"].as_i64(),
            s["reason"].as_str(),
            s["by"].as_str()
        ),
        (
            Some("bob"),
            Some("kick"),
            Some(until),
            Some("flooding Général"),
            Some("admin")
        )
    );
    // A wrong password still gets the generic error (a kick does not reveal the account).
    assert_eq!(
        c.login("bob", "wrong password!").await.unwrap_err().code(),
        Some(ErrorCode::InvalidCredentials)
    );

    // Time passes (the server's clock, not a sleep): the kick ends by itself.
    server.clock.advance_ms(599_000);
    assert_eq!(
        c.login("bob", PASSWORD).await.unwrap_err().code(),
        Some(ErrorCode::Kicked)
    );
    server.clock.advance_ms(1_001);
    server.login("bob").await;
    let listed = admin
        .request(Command::Sanctions(args::Empty {}))
        .await
        .unwrap();
    assert_eq!(
        listed["sanctions"].as_array().unwrap().len(),
        0,
        "an expired kick is not listed"
    );

    // unkick lifts a kick early.
    admin
        .request(Command::Kick(args::Kick {
            user: "bob".into(),
            seconds: None,
            reason: None,
        }))
        .await
        .unwrap();
    let c = server.client().await;
    let ClientError::Server(body) = c.login("bob", PASSWORD).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(
        body.until,
        Some(server.clock_now() + 300_000),
        "default 5 minutes"
    );
    admin
        .request(Command::Unkick(args::Target { user: "bob".into() }))
        .await
        .unwrap();
    server.login("bob").await;
    let err = admin
        .request(Command::Unkick(args::Target { user: "bob".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    let err = admin
        .request(Command::Kick(args::Kick {
            user: "admin".into(),
            seconds: None,
            reason: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::InvalidRequest),
        "no kicking oneself"
    );
    let err = admin
        .request(Command::Kick(args::Kick {
            user: "nobody".into(),
            seconds: None,
            reason: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchUser));
}

#[tokio::test]
async fn ban_refuses_the_account_until_unbanned_and_keeps_its_messages() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    let (mut bob, welcome) = server.user("bob").await;
    bob.send("Général", "a message that must survive the ban")
        .await
        .unwrap();
    admin
        .request(Command::Ban(args::Ban {
            user: "bob".into(),
            reason: Some("harassment".into()),
        }))
        .await
        .unwrap();
    let (code, message) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Banned);
    assert!(message.contains("harassment"));

    let ClientError::Server(body) = server
        .client()
        .await
        .login("bob", PASSWORD)
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(body.code, ErrorCode::Banned);
    assert!(body.message.contains("harassment"));
    // The ban revoked the session tokens (see `revocation.rs`).
    assert_eq!(
        server
            .client()
            .await
            .resume(&welcome.token)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidCredentials)
    );
    // Still refused after a restart; the account and its messages are kept.
    let server = server.restart().await;
    let admin = server.login("admin").await.0;
    assert_eq!(
        server.login_refused("bob", PASSWORD).await,
        Some(ErrorCode::Banned)
    );
    let page = admin.room_history("Général", None, None).await.unwrap();
    assert!(page.messages.iter().any(|m| m.author == "bob"));
    admin
        .request(Command::Unban(args::Target { user: "bob".into() }))
        .await
        .unwrap();
    server.login("bob").await;
}

#[tokio::test]
async fn join_requests_reach_admins_live_and_decisions_reach_the_requester() {
    let server = TestServer::start().await;
    let mut admin = admin(&server).await;
    let (alice, _) = server.user("alice").await;
    let (mut alice_phone, _) = server.login("alice").await;

    alice.join("Informatique").await.unwrap();
    let request = expect_event(&mut admin, "join request", |e| match e {
        Event::JoinRequest(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (request.user.as_str(), request.room.as_str()),
        ("alice", "Informatique")
    );
    let listed = admin
        .request(Command::Requests(args::Empty {}))
        .await
        .unwrap();
    assert_eq!(listed["requests"][0]["user"], "alice");

    admin
        .request(Command::Accept(args::Decide {
            user: "alice".into(),
            room: "informatique".into(),
            reason: None,
        }))
        .await
        .unwrap();
    // Every session of the requester is told and is a member at once.
    // (The phone first saw its own request go pending; the decision follows.)
    let (state, reason) = expect_event(&mut alice_phone, "decision", |e| {
        membership_of(e, "Informatique").filter(|(state, _)| *state != MemberState::Pending)
    })
    .await;
    assert_eq!(state, MemberState::Member);
    assert!(reason.unwrap().contains("accepted"));
    alice.send("Informatique", "thanks!").await.unwrap();
    expect_event(&mut alice_phone, "message in the new room", |e| {
        room_text(e, "Informatique")
    })
    .await;
    let listed = admin
        .request(Command::Requests(args::Empty {}))
        .await
        .unwrap();
    assert_eq!(listed["requests"].as_array().unwrap().len(), 0);
    // Every administrator's panel learns that it was decided.
    let decided = expect_event(&mut admin, "decision to admins", |e| match e {
        Event::JoinRequestDecided {
            user,
            room,
            accepted,
            by,
        } => Some((user.clone(), room.clone(), *accepted, by.clone())),
        _ => None,
    })
    .await;
    assert_eq!(
        decided,
        ("alice".into(), "Informatique".into(), true, "admin".into())
    );

    // No pending request → a clear error; a room that takes no requests says so
    // (`documented.rs` pins the other cases).
    let err = admin
        .request(Command::Accept(args::Decide {
            user: "alice".into(),
            room: "Marketing".into(),
            reason: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    let err = admin
        .request(Command::Accept(args::Decide {
            user: "alice".into(),
            room: "Blabla".into(),
            reason: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
}

#[tokio::test]
async fn a_rejected_user_is_told_even_offline_and_may_ask_again() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    alice.join("Marketing").await.unwrap();
    drop(alice);

    // The admin logs in later and is shown the pending request.
    let (mut admin, _) = server.login("admin").await;
    let pending = expect_event(&mut admin, "pending request at login", |e| match e {
        Event::JoinRequest(r) => Some(r.room.clone()),
        _ => None,
    })
    .await;
    assert_eq!(pending, "Marketing");
    admin
        .request(Command::Reject(args::Decide {
            user: "alice".into(),
            room: "Marketing".into(),
            reason: Some("not your department".into()),
        }))
        .await
        .unwrap();

    // Alice was offline: told at her next login, after a restart even.
    let server = server.restart().await;
    let (mut alice, welcome) = server.login("alice").await;
    assert!(welcome
        .rooms
        .iter()
        .any(|r| r.name == "Marketing" && r.state == MemberState::CanRequest));
    let (state, reason) = expect_event(&mut alice, "decision at login", |e| {
        membership_of(e, "Marketing")
    })
    .await;
    assert_eq!(state, MemberState::CanRequest);
    let reason = reason.unwrap();
    assert!(
        reason.contains("rejected") && reason.contains("not your department"),
        "{reason}"
    );
    // Told once.
    let (mut again, _) = server.login("alice").await;
    expect_none(&mut again, "decision told twice", |i| {
        matches!(i, Incoming::Event(Event::Membership { .. }))
    })
    .await;
    // Asking again is allowed.
    assert_eq!(
        alice.join("Marketing").await.unwrap().state,
        MemberState::Pending
    );
}

#[tokio::test]
async fn broadcast_reaches_every_connected_user() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    let (mut a, _) = server.user("alice").await;
    let mut b = server.ws_client().await;
    b.register(registration("bob")).await.unwrap();
    b.login("bob", PASSWORD).await.unwrap();
    admin
        .request(Command::Broadcast(args::Broadcast {
            text: "Maintenance à 18h".into(),
        }))
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        // `from` is the username and `from_alias` the alias, as in `direct`.
        let (from, from_alias, text) = expect_event(c, "notice", |e| match e {
            Event::Notice {
                from,
                from_alias,
                text,
                ..
            } => Some((from.clone(), from_alias.clone(), text.clone())),
            _ => None,
        })
        .await;
        assert_eq!(
            (from.as_str(), from_alias.as_str(), text.as_str()),
            ("admin", "Administrator", "Maintenance à 18h")
        );
    }
    let err = admin
        .request(Command::Broadcast(args::Broadcast { text: "  ".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::EmptyMessage));
}

#[tokio::test]
async fn connected_lists_sessions_with_address_and_transport() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    let _tcp = server.user("alice").await;
    let ws = server.ws_client().await;
    ws.login("alice", PASSWORD).await.unwrap();
    let reply = admin
        .request(Command::Connected(args::Empty {}))
        .await
        .unwrap();
    let sessions = reply["sessions"].as_array().unwrap();
    let alice: Vec<_> = sessions
        .iter()
        .filter(|s| s["username"] == "alice")
        .collect();
    assert_eq!(alice.len(), 2);
    let mut transports: Vec<_> = alice
        .iter()
        .map(|s| s["transport"].as_str().unwrap())
        .collect();
    transports.sort();
    assert_eq!(transports, ["tcp", "websocket"]);
    assert!(alice
        .iter()
        .all(|s| s["address"].as_str().unwrap().starts_with("127.0.0.1:")));
    assert!(sessions.iter().any(|s| s["username"] == "admin"));
}

#[tokio::test]
async fn reset_password_gives_a_new_one_and_revokes_sessions_tokens() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    let (_, welcome) = server.user("bob").await;
    let reply = admin
        .request(Command::ResetPassword(args::ResetPassword {
            user: "bob".into(),
            password: None,
        }))
        .await
        .unwrap();
    let new = reply["password"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 20);
    assert_eq!(
        server.login_refused("bob", PASSWORD).await,
        Some(ErrorCode::InvalidCredentials)
    );
    assert_eq!(
        server
            .client()
            .await
            .resume(&welcome.token)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidCredentials)
    );
    server.client().await.login("bob", &new).await.unwrap();
    // A chosen password must follow the rules.
    let err = admin
        .request(Command::ResetPassword(args::ResetPassword {
            user: "bob".into(),
            password: Some("password1".into()),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::WeakPassword));
}

#[tokio::test]
async fn every_administrative_action_is_in_the_audit_log() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    server.register("bob").await;
    let (alice, _) = server.user("alice").await;
    alice.join("Comptabilité").await.unwrap();
    let run = |c: Command| admin.request(c);
    run(Command::Kick(args::Kick {
        user: "bob".into(),
        seconds: Some(60),
        reason: Some("spam".into()),
    }))
    .await
    .unwrap();
    run(Command::Unkick(args::Target { user: "bob".into() }))
        .await
        .unwrap();
    run(Command::Ban(args::Ban {
        user: "bob".into(),
        reason: Some("again".into()),
    }))
    .await
    .unwrap();
    run(Command::Unban(args::Target { user: "bob".into() }))
        .await
        .unwrap();
    run(Command::Accept(args::Decide {
        user: "alice".into(),
        room: "Comptabilité".into(),
        reason: Some("welcome".into()),
    }))
    .await
    .unwrap();
    run(Command::Broadcast(args::Broadcast {
        text: "hello all".into(),
    }))
    .await
    .unwrap();
    run(Command::ResetPassword(args::ResetPassword {
        user: "bob".into(),
        password: None,
    }))
    .await
    .unwrap();

    let audit = run(Command::Audit(args::Audit { limit: Some(7) }))
        .await
        .unwrap();
    let got: Vec<(String, String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["ts"].as_i64().unwrap() > 0);
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let a = |action: &str, target: &str, reason: &str| {
        (
            "admin".to_owned(),
            action.to_owned(),
            target.to_owned(),
            reason.to_owned(),
        )
    };
    assert_eq!(
        got,
        vec![
            a("reset_password", "bob", ""),
            a("broadcast", "", "hello all"),
            a("accept", "alice@Comptabilité", "welcome"),
            a("unban", "bob", ""),
            a("ban", "bob", "again"),
            a("unkick", "bob", ""),
            a("kick", "bob", "1 min — spam"),
        ],
        "newest first"
    );
    // Passwords never reach the audit log.
    let all = run(Command::Audit(args::Audit { limit: Some(1000) }))
        .await
        .unwrap();
    assert!(!all.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn shutdown_counts_down_on_every_client_refuses_logins_and_loses_nothing() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    let (alice, _) = server.user("alice").await;
    let mut bob = server.ws_client().await;
    bob.register(registration("bob")).await.unwrap();
    bob.login("bob", PASSWORD).await.unwrap();
    let mut watcher = server.user("carol").await.0;

    admin
        .request(Command::Shutdown(args::Shutdown {
            seconds: Some(2),
            message: Some("mise à jour".into()),
        }))
        .await
        .unwrap();
    // Every client sees the countdown.
    for c in [&mut bob, &mut watcher] {
        for expected in [2, 1] {
            let (seconds, message) = expect_event(c, "countdown", |e| match e {
                Event::Shutdown { seconds, message } => Some((*seconds, message.clone())),
                _ => None,
            })
            .await;
            assert_eq!((seconds, message.as_str()), (expected, "mise à jour"));
        }
    }
    // New logins are refused during the countdown; messages are still accepted.
    assert_eq!(
        server.login_refused("alice", PASSWORD).await,
        Some(ErrorCode::ShuttingDown)
    );
    let accepted = alice
        .send("Général", "last words before the stop")
        .await
        .unwrap();
    let err = admin
        .request(Command::Shutdown(args::Shutdown::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ShuttingDown));

    // The last event, at 0, and the closing frames carry the administrator's message;
    // then every session is closed cleanly and the server stops by itself.
    for c in [&mut bob, &mut watcher] {
        let last = expect_event(c, "final shutdown event", |e| match e {
            Event::Shutdown {
                seconds: 0,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .await;
        assert_eq!(last, "mise à jour");
        let (code, message) = expect_closing(c).await;
        assert_eq!(
            (code, message.as_str()),
            (CloseCode::Shutdown, "mise à jour")
        );
    }
    let (config, data, clock) = server.wait_stopped().await;
    let server = TestServer::restart_from(config, data, clock).await;
    let (c, _) = server.login("bob").await;
    let page = c.room_history("Général", None, None).await.unwrap();
    assert!(
        page.messages.iter().any(|m| m.id == accepted.id),
        "accepted message kept"
    );
}

#[tokio::test]
async fn accounts_can_be_created_offline_with_the_cli_and_are_audited() {
    let server = TestServer::start().await;
    let store = salon_server::Store::connect(&server.store_url())
        .await
        .unwrap();
    let account = salon_server::admin_create_user(&store, registration("eve"), true)
        .await
        .unwrap();
    assert!(account.is_admin);
    let err = salon_server::admin_create_user(&store, registration("eve"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("username_taken"), "{err}");
    store.close().await;
    let (eve, welcome) = server.login("eve").await;
    assert!(welcome.account.is_admin);
    let audit = eve
        .request(Command::Audit(args::Audit { limit: Some(1) }))
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["actor"], "cli");
    assert_eq!(audit["entries"][0]["target"], "eve");
}

/// The administration panel's list of users: every account, connected or not, found by
/// any of its names without regard to case or accents, paged, with status, sessions and
/// sanctions; and an account that never connected can be kicked and banned from it.
#[tokio::test]
async fn the_account_list_finds_every_account_pages_it_and_shows_status_and_sanctions() {
    let server = TestServer::start().await;
    let root = admin(&server).await;
    root.create_account(args::CreateAccount {
        username: "elodie".into(),
        alias: "Élodie".into(),
        first_name: "Élodie".into(),
        last_name: "Dupont-Lefèvre".into(),
        password: Some(PASSWORD.into()),
        admin: false,
    })
    .await
    .unwrap();
    let (_alice, _) = server.user("alice").await;
    let (_alice2, _) = server.login("alice").await;
    for i in 0..7 {
        server.register(&format!("user{i}")).await;
    }

    let all = |query: Option<&str>, cursor: Option<String>, limit: Option<u32>| {
        root.accounts(args::Accounts {
            query: query.map(Into::into),
            cursor,
            limit,
        })
    };
    // Everyone, by username: admin, alice, elodie, user0..user6.
    let page = all(None, None, None).await.unwrap();
    assert_eq!(page.total, 10);
    assert!(page.next.is_none());
    let names: Vec<&str> = page
        .accounts
        .iter()
        .map(|a| a.account.username.as_str())
        .collect();
    assert_eq!(&names[..3], ["admin", "alice", "elodie"]);
    let alice = &page.accounts[1];
    assert_eq!(alice.account.status, salon_proto::Status::Online);
    assert_eq!(alice.sessions, 2);
    let elodie = &page.accounts[2];
    assert_eq!(elodie.account.status, salon_proto::Status::Offline);
    assert_eq!(elodie.sessions, 0);
    assert!(page.accounts[0].account.is_admin && !alice.account.is_admin);

    // Found by last name, without accents or case, with several words.
    for query in ["lefevre", "ÉLODIE dupont", "dupont-lef", "elo"] {
        let found = all(Some(query), None, None).await.unwrap();
        let names: Vec<&str> = found
            .accounts
            .iter()
            .map(|a| a.account.username.as_str())
            .collect();
        assert_eq!(names, ["elodie"], "{query}");
        assert_eq!(found.total, 1);
    }
    assert_eq!(all(Some("nobody"), None, None).await.unwrap().total, 0);

    // Pages of 3 cover every match once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = all(None, cursor, Some(3)).await.unwrap();
        assert_eq!(page.total, 10);
        assert!(page.accounts.len() <= 3);
        seen.extend(page.accounts.into_iter().map(|a| a.account.username));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<String> = vec!["admin".into(), "alice".into(), "elodie".into()];
    expected.extend((0..7).map(|i| format!("user{i}")));
    assert_eq!(seen, expected);
    // Every word must match: "Test User" is alice's and user0…user6's name.
    assert_eq!(all(Some("test user"), None, None).await.unwrap().total, 8);
    assert_eq!(all(Some("user alice"), None, None).await.unwrap().total, 1);

    // An account that never connected is kicked, then banned, from the list.
    root.kick(args::Kick {
        user: "elodie".into(),
        seconds: Some(600),
        reason: Some("spam".into()),
    })
    .await
    .unwrap();
    root.ban("user3", Some("left the company")).await.unwrap();
    let found = all(Some("elodie"), None, None).await.unwrap();
    let sanctions = &found.accounts[0].sanctions;
    assert_eq!(sanctions.len(), 1);
    assert_eq!(sanctions[0].kind, salon_proto::SanctionKind::Kick);
    assert_eq!(sanctions[0].reason, "spam");
    assert!(sanctions[0].until.is_some());
    assert_eq!(
        server.login_refused("elodie", PASSWORD).await,
        Some(ErrorCode::Kicked)
    );
    let found = all(Some("user3"), None, None).await.unwrap();
    assert_eq!(
        found.accounts[0].sanctions[0].kind,
        salon_proto::SanctionKind::Ban
    );
    assert_eq!(
        server.login_refused("user3", PASSWORD).await,
        Some(ErrorCode::Banned)
    );

    // Bad arguments are refused with the field at fault.
    for (limit, query) in [
        (Some(0), None),
        (Some(101), None),
        (None, Some("x".repeat(101))),
    ] {
        let err = root
            .accounts(args::Accounts {
                query,
                cursor: None,
                limit,
            })
            .await
            .unwrap_err();
        let body = match err {
            ClientError::Server(body) => body,
            other => panic!("{other:?}"),
        };
        let field = if limit.is_some() { "limit" } else { "query" };
        assert_eq!(body.field.as_deref(), Some(field));
    }
}
