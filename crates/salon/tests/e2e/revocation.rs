//! A ban, a kick, a password change or reset takes effect everywhere at once: the user's
//! other live sessions are closed and every token is revoked, and a login racing it
//! cannot survive it (issue 10, item 3).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use salon_client::{Client, ClientError};
use salon_proto::{args, CloseCode, Command, ErrorCode};

use crate::harness::*;

async fn admin(server: &TestServer) -> Client {
    server.login("admin").await.0
}

/// Sessions of `user` the server lists as connected.
async fn sessions_of(admin: &Client, user: &str) -> usize {
    let reply = admin
        .request(Command::Connected(args::Empty {}))
        .await
        .unwrap();
    reply["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["username"] == user)
        .count()
}

/// Waits until `user` has no session left (closing a session takes a moment).
async fn until_no_session(admin: &Client, user: &str) {
    let what = format!("{user} still has sessions");
    eventually(&what, Duration::from_millis(20), || async {
        sessions_of(admin, user).await == 0
    })
    .await;
}

async fn resume_refused(server: &TestServer, token: &str) -> Option<ErrorCode> {
    server
        .client()
        .await
        .resume(token)
        .await
        .unwrap_err()
        .code()
}

/// Posting on a session that must have been closed fails.
async fn cannot_post(c: &Client) {
    let sent = c.send("Général", "am I still here?").await;
    assert!(sent.is_err(), "a revoked session could post: {sent:?}");
}

#[tokio::test]
async fn a_password_change_closes_the_other_sessions_now_and_keeps_the_changing_one() {
    let server = TestServer::start().await;
    let (laptop, laptop_welcome) = server.user("alice").await;
    let (mut phone, phone_welcome) = server.login("alice").await;
    laptop
        .change_password(PASSWORD, "a brand new secret")
        .await
        .unwrap();
    let (code, message) = expect_closing(&mut phone).await;
    assert_eq!(code, CloseCode::PasswordChanged);
    assert!(message.contains("log in again"), "{message}");
    cannot_post(&phone).await;
    assert_eq!(
        resume_refused(&server, &phone_welcome.token).await,
        Some(ErrorCode::InvalidCredentials)
    );
    // The session that changed it carries on, and its token still resumes.
    laptop.send("Général", "still here").await.unwrap();
    server
        .client()
        .await
        .resume(&laptop_welcome.token)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reset_closes_every_session_of_the_user_and_revokes_every_token() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    let (mut laptop, welcome) = server.user("bob").await;
    let (mut phone, _) = server.login("bob").await;
    admin
        .request(Command::ResetPassword(args::ResetPassword {
            user: "bob".into(),
            password: Some("a password from the admin".into()),
        }))
        .await
        .unwrap();
    for device in [&mut laptop, &mut phone] {
        let (code, message) = expect_closing(device).await;
        assert_eq!(code, CloseCode::PasswordChanged);
        assert!(message.contains("reset by Administrator"), "{message}");
        cannot_post(device).await;
    }
    assert_eq!(
        resume_refused(&server, &welcome.token).await,
        Some(ErrorCode::InvalidCredentials)
    );
    until_no_session(&admin, "bob").await;
    // An administrator resetting their own password keeps the session doing it.
    admin
        .request(Command::ResetPassword(args::ResetPassword {
            user: "admin".into(),
            password: Some("a fresh secret for the boss".into()),
        }))
        .await
        .unwrap();
    admin.send("Général", "still here").await.unwrap();
}

#[tokio::test]
async fn a_ban_and_a_kick_revoke_every_token_so_lifting_them_brings_none_back() {
    let server = TestServer::start().await;
    let admin = admin(&server).await;
    for (sanction, lift) in [("ban", "unban"), ("kick", "unkick")] {
        let (mut c, welcome) = server.user(&format!("{sanction}ned")).await;
        let user = format!("{sanction}ned");
        let command = match sanction {
            "ban" => Command::Ban(args::Ban {
                user: user.clone(),
                reason: None,
            }),
            _ => Command::Kick(args::Kick {
                user: user.clone(),
                seconds: Some(60),
                reason: None,
            }),
        };
        admin.request(command).await.unwrap();
        expect_closing(&mut c).await;
        let lift = match lift {
            "unban" => Command::Unban(args::Target { user: user.clone() }),
            _ => Command::Unkick(args::Target { user: user.clone() }),
        };
        admin.request(lift).await.unwrap();
        assert_eq!(
            resume_refused(&server, &welcome.token).await,
            Some(ErrorCode::InvalidCredentials),
            "a token from before the {sanction} resumes after it is lifted"
        );
        server.login(&user).await;
    }
}

/// A login storm of `victim` from many addresses while `sanction` is applied (password
/// logins, and session resumes, which need no hashing and so come many more at once):
/// no session survives, none can post, no token from the storm resumes.
async fn login_storm_racing(sanction: &str) {
    let server = TestServer::start_with(|c| c.limits.max_sessions_per_user = 10_000).await;
    let admin = admin(&server).await;
    server.register("victim").await;
    let done = Arc::new(AtomicBool::new(false));
    let logged_in = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 2..=51u8 {
        let (tcp, done, logged_in) = (server.tcp, done.clone(), logged_in.clone());
        tasks.push(tokio::spawn(async move {
            let mut kept: Vec<(Client, String)> = Vec::new();
            let (mut round, mut by_password) = (0, false);
            while !done.load(Ordering::SeqCst) {
                round += 1;
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
                let Ok(stream) = socket.connect(tcp).await else {
                    continue;
                };
                let Ok(c) = Client::connect_stream(stream).await else {
                    continue;
                };
                let token = kept.first().map(|(_, token)| token.clone());
                let attempt = match token {
                    Some(token) if !by_password && round % 4 != 0 => c.resume(&token).await,
                    _ => c.login("victim", PASSWORD).await,
                };
                by_password = false;
                match attempt {
                    Ok(welcome) => {
                        logged_in.fetch_add(1, Ordering::SeqCst);
                        kept.push((c, welcome.token));
                    }
                    Err(ClientError::Server(body))
                        if matches!(body.code, ErrorCode::Banned | ErrorCode::Kicked) =>
                    {
                        break
                    }
                    // Closed by the sanction while logging in, told to retry, or a
                    // token revoked by the sanction: log in with the password next.
                    Err(_) => by_password = true,
                }
            }
            kept
        }));
    }
    // The sanction lands while logins are in full flow.
    while logged_in.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let command = match sanction {
        "ban" => Command::Ban(args::Ban {
            user: "victim".into(),
            reason: Some("storm".into()),
        }),
        _ => Command::Kick(args::Kick {
            user: "victim".into(),
            seconds: Some(600),
            reason: Some("storm".into()),
        }),
    };
    admin.request(command).await.unwrap();
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.extend(task.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    assert!(sessions.len() >= 20);
    until_no_session(&admin, "victim").await;
    for (c, _) in &sessions {
        cannot_post(c).await;
    }
    let history = admin
        .room_history("Général", None, Some(100))
        .await
        .unwrap();
    assert!(
        history.messages.iter().all(|m| m.author != "victim"),
        "the victim posted"
    );
    // Lifted: no token handed out during the storm comes back.
    let lift = match sanction {
        "ban" => Command::Unban(args::Target {
            user: "victim".into(),
        }),
        _ => Command::Unkick(args::Target {
            user: "victim".into(),
        }),
    };
    admin.request(lift).await.unwrap();
    for (_, token) in &sessions {
        assert_eq!(
            resume_refused(&server, token).await,
            Some(ErrorCode::InvalidCredentials)
        );
    }
}

#[tokio::test]
async fn a_login_storm_racing_a_ban_leaves_no_session_and_no_token() {
    login_storm_racing("ban").await;
}

#[tokio::test]
async fn a_login_storm_racing_a_kick_leaves_no_session_and_no_token() {
    login_storm_racing("kick").await;
}
