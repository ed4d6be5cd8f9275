//! R16: statuses, live presence, who is connected.

use salon_proto::{ErrorCode, Event, Status, UserPresence};

use crate::harness::*;

async fn presence_of(c: &mut salon_client::Client, user: &str, status: Status) {
    expect_event(c, &format!("{user} {status:?}"), |e| match e {
        Event::Presence { users, .. } => users
            .iter()
            .any(
                |UserPresence {
                     username,
                     status: s,
                     ..
                 }| username == user && *s == status,
            )
            .then_some(()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn status_changes_reach_every_connected_user_live() {
    let server = TestServer::start().await;
    let (mut watcher, _) = server.user("watcher").await;
    server.register("alice").await;

    let (alice, _) = server.login("alice").await;
    presence_of(&mut watcher, "alice", Status::Online).await;
    alice.set_status(Status::Away).await.unwrap();
    presence_of(&mut watcher, "alice", Status::Away).await;
    alice.set_status(Status::Busy).await.unwrap();
    presence_of(&mut watcher, "alice", Status::Busy).await;
    assert_eq!(
        alice.set_status(Status::Offline).await.unwrap_err().code(),
        Some(ErrorCode::InvalidRequest)
    );

    // A second device does not announce anything; closing the last one does.
    let (phone, _) = server.login("alice").await;
    phone.close().await;
    expect_none(&mut watcher, "offline while a session remains", |i| {
        matches!(i, salon_client::Incoming::Event(Event::Presence { users, .. })
            if users.iter().any(|p| p.status == Status::Offline))
    })
    .await;
    alice.logout().await.unwrap();
    presence_of(&mut watcher, "alice", Status::Offline).await;
}

#[tokio::test]
async fn who_lists_every_user_with_their_status() {
    let server = TestServer::start().await;
    server.register("dora").await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    bob.set_status(Status::Busy).await.unwrap();
    let users = alice.who().await.unwrap();
    let got: Vec<_> = users
        .iter()
        .map(|u| (u.username.as_str(), u.alias.as_str(), u.status))
        .collect();
    assert_eq!(
        got,
        [
            ("admin", "Administrator", Status::Offline),
            ("alice", "Alice", Status::Online),
            ("bob", "Bob", Status::Busy),
            ("dora", "Dora", Status::Offline),
        ]
    );
}

#[tokio::test]
async fn a_dropped_connection_makes_its_user_offline() {
    let server = TestServer::start().await;
    let (mut watcher, _) = server.user("watcher").await;
    let (alice, _) = server.user("alice").await;
    presence_of(&mut watcher, "alice", Status::Online).await;
    drop(alice); // no logout: the socket just goes away
    presence_of(&mut watcher, "alice", Status::Offline).await;
    let users = watcher.who().await.unwrap();
    assert!(users
        .iter()
        .any(|u| u.username == "alice" && u.status == Status::Offline));
}

/// The status column of `users` (R21), as the database has it now (also used by the
/// cluster tests).
pub(crate) async fn stored_status(server: &TestServer, user: &str) -> Status {
    let store = salon_server::Store::connect(&server.store_url())
        .await
        .unwrap();
    let status = store.user_by_name(user).await.unwrap().unwrap().status;
    store.close().await;
    status
}

pub(crate) async fn wait_stored(server: &TestServer, user: &str, status: Status) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored_status(server, user).await != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} never stored as {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn statuses_are_stored_in_the_database_and_reset_at_start() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    wait_stored(&server, "alice", Status::Online).await;
    alice.set_status(Status::Busy).await.unwrap();
    wait_stored(&server, "alice", Status::Busy).await;
    alice.logout().await.unwrap();
    wait_stored(&server, "alice", Status::Offline).await;

    // Online when the server stops: offline once it starts again.
    let (_bob, _) = server.user("bob").await;
    wait_stored(&server, "bob", Status::Online).await;
    let server = server.restart().await;
    assert_eq!(stored_status(&server, "bob").await, Status::Offline);
}

/// Whether `i` is a presence event about `user`.
fn about(i: &salon_client::Incoming, user: &str) -> bool {
    matches!(i, salon_client::Incoming::Event(Event::Presence { users, refresh })
        if *refresh || users.iter().any(|p| p.username == user))
}

#[tokio::test]
async fn another_device_keeps_the_status_chosen_on_the_first() {
    let server = TestServer::start().await;
    let (mut watcher, _) = server.user("watcher").await;
    let (alice, _) = server.user("alice").await;
    presence_of(&mut watcher, "alice", Status::Online).await;
    alice.set_status(Status::Busy).await.unwrap();
    presence_of(&mut watcher, "alice", Status::Busy).await;

    // The status is the user's, not the device's: busy stays, nothing is announced.
    let (phone, welcome) = server.login("alice").await;
    assert_eq!(welcome.account.status, Status::Busy);
    expect_none(&mut watcher, "presence of alice", |i| about(i, "alice")).await;
    let users = watcher.who().await.unwrap();
    assert!(users
        .iter()
        .any(|u| u.username == "alice" && u.status == Status::Busy));

    // Once every session has ended, the next login is online again.
    phone.logout().await.unwrap();
    alice.logout().await.unwrap();
    presence_of(&mut watcher, "alice", Status::Offline).await;
    let (_alice, welcome) = server.login("alice").await;
    assert_eq!(welcome.account.status, Status::Online);
    presence_of(&mut watcher, "alice", Status::Online).await;
}

#[tokio::test]
async fn sessions_logged_in_without_presence_never_show_their_user_come_or_go() {
    let server = TestServer::start().await;
    let (mut watcher, _) = server.user("watcher").await;
    server.register("bob").await;
    let quiet = |login: &str| salon_proto::args::Login {
        login: login.into(),
        password: PASSWORD.into(),
        presence: Some(false),
    };

    // A bot alone: bob stays offline for everyone, and it cannot set a status.
    let bot = server.client().await;
    let welcome = bot.login_with(quiet("bob")).await.unwrap();
    assert_eq!(welcome.account.status, Status::Offline);
    expect_none(&mut watcher, "presence of bob", |i| about(i, "bob")).await;
    let bob_in =
        |users: &[UserPresence]| users.iter().find(|u| u.username == "bob").map(|u| u.status);
    assert_eq!(bob_in(&watcher.who().await.unwrap()), Some(Status::Offline));
    let err = bot.set_status(Status::Away).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    // It still works as a session (it gets room messages) and administrators see it.
    bot.send("Général", "beep").await.unwrap();
    let (admin, _) = server.login("admin").await;
    let connected = admin
        .request(salon_proto::Command::Connected(salon_proto::args::Empty {}))
        .await
        .unwrap();
    let session = connected["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["username"] == "bob")
        .cloned()
        .expect("the bot's session is listed");
    assert_eq!(
        (session["presence"].as_bool(), session["status"].as_str()),
        (Some(false), Some("offline"))
    );
    bot.logout().await.unwrap();
    expect_none(&mut watcher, "presence of bob", |i| about(i, "bob")).await;

    // With bob really online, a tool comes and goes (login and resume) unnoticed.
    let (bob, _) = server.login("bob").await;
    presence_of(&mut watcher, "bob", Status::Online).await;
    bob.set_status(Status::Away).await.unwrap();
    presence_of(&mut watcher, "bob", Status::Away).await;
    let tool = server.client().await;
    let welcome = tool.login_with(quiet("bob")).await.unwrap();
    assert_eq!(welcome.account.status, Status::Away);
    let again = server.client().await;
    again
        .request(salon_proto::Command::Resume(salon_proto::args::Resume {
            token: welcome.token.clone(),
            presence: Some(false),
        }))
        .await
        .unwrap();
    tool.close().await;
    again.logout().await.unwrap();
    expect_none(&mut watcher, "presence of bob", |i| about(i, "bob")).await;
    assert_eq!(bob_in(&watcher.who().await.unwrap()), Some(Status::Away));
    // The last real session going makes him offline, tools or not.
    let tool = server.client().await;
    tool.login_with(quiet("bob")).await.unwrap();
    bob.logout().await.unwrap();
    presence_of(&mut watcher, "bob", Status::Offline).await;
    drop(tool);
    expect_none(&mut watcher, "presence of bob", |i| about(i, "bob")).await;
}
