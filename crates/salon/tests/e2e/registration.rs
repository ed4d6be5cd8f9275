//! Issue 10: registration the company controls — `open` (the default), `approval`,
//! `invite` and `closed`, announced in `hello` so clients show what applies.

use salon_client::Client;
use salon_proto::{args, Command, ErrorCode, Event, RegistrationMode};

use crate::harness::*;

async fn admin_call(admin: &Client, command: Command) -> serde_json::Value {
    admin
        .request(command)
        .await
        .expect("administrative command")
}

async fn register(
    server: &TestServer,
    name: &str,
    invite: Option<&str>,
) -> salon_client::Result<salon_proto::Account> {
    server
        .client()
        .await
        .register(args::Register {
            invite: invite.map(Into::into),
            ..registration(name)
        })
        .await
}

#[tokio::test]
async fn closed_registration_leaves_account_creation_to_administrators() {
    let server = TestServer::start_with(|c| c.registration = RegistrationMode::Closed).await;
    let probe = server.client().await;
    assert_eq!(probe.hello().registration, RegistrationMode::Closed);
    let err = register(&server, "alice", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RegistrationClosed));

    let (admin, _) = server.login("admin").await;
    let reply = admin_call(
        &admin,
        Command::CreateAccount(args::CreateAccount {
            username: "alice".into(),
            alias: "Alice".into(),
            first_name: "Alice".into(),
            last_name: "Martin".into(),
            ..Default::default()
        }),
    )
    .await;
    let password = reply["password"].as_str().expect("a generated password");
    assert_eq!(reply["account"]["username"], "alice");
    server
        .client()
        .await
        .login("alice", password)
        .await
        .unwrap();
    // Not for everyone: a user cannot create accounts.
    let err = server
        .client()
        .await
        .request(Command::CreateAccount(args::CreateAccount::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAuthenticated));
}

#[tokio::test]
async fn approval_keeps_new_accounts_out_until_an_administrator_decides() {
    let server = TestServer::start_with(|c| c.registration = RegistrationMode::Approval).await;
    let (mut admin, _) = server.login("admin").await;
    let account = register(&server, "alice", None).await.unwrap();
    assert!(account.pending_approval);
    // The administrator online is told at once…
    let request = expect_event(&mut admin, "the account request", |e| match e {
        Event::AccountRequest(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(request.username, "alice");
    // …and the account cannot log in meanwhile (the right password only).
    assert_eq!(
        server.login_refused("alice", PASSWORD).await,
        Some(ErrorCode::PendingApproval)
    );
    assert_eq!(
        server
            .login_refused("alice", "wrong password entirely")
            .await,
        Some(ErrorCode::InvalidCredentials)
    );
    // An administrator logging in later finds it waiting.
    register(&server, "bob", None).await.unwrap();
    let (mut second, _) = server.login("admin").await;
    let waiting = expect_event(&mut second, "bob's request at login", |e| match e {
        Event::AccountRequest(r) if r.username == "bob" => Some(()),
        _ => None,
    });
    waiting.await;
    let list = admin_call(&admin, Command::AccountRequests(args::Empty {})).await;
    assert_eq!(list["accounts"].as_array().unwrap().len(), 2);

    admin_call(
        &admin,
        Command::ApproveAccount(args::Target {
            user: "alice".into(),
        }),
    )
    .await;
    expect_event(&mut second, "the decision", |e| match e {
        Event::AccountRequestDecided {
            user,
            approved: true,
            ..
        } if user == "alice" => Some(()),
        _ => None,
    })
    .await;
    server.login("alice").await;

    admin_call(
        &admin,
        Command::RejectAccount(args::Ban {
            user: "bob".into(),
            reason: Some("not an employee".into()),
        }),
    )
    .await;
    assert_eq!(
        server.login_refused("bob", PASSWORD).await,
        Some(ErrorCode::InvalidCredentials),
        "a rejected account is gone"
    );
    // Deciding twice is an error; the name is free again.
    let err = admin
        .request(Command::ApproveAccount(args::Target {
            user: "alice".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    assert!(
        register(&server, "bob", None)
            .await
            .unwrap()
            .pending_approval
    );
}

#[tokio::test]
async fn invitations_are_single_use_expire_and_can_be_withdrawn() {
    let server = TestServer::start_with(|c| c.registration = RegistrationMode::Invite).await;
    let (admin, _) = server.login("admin").await;
    let err = register(&server, "alice", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidInvite));

    let invite = |hours| {
        let admin = &admin;
        async move { admin_call(admin, Command::CreateInvite(args::CreateInvite { hours })).await }
    };
    let first = invite(None).await;
    let code = first["code"].as_str().unwrap().to_owned();
    let err = register(&server, "alice", Some("not-a-code"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidInvite));
    register(&server, "alice", Some(&code)).await.unwrap();
    server.login("alice").await;
    let err = register(&server, "bob", Some(&code)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidInvite), "used once only");

    // Expired after its hours; withdrawn before use.
    let short = invite(Some(1)).await["code"].as_str().unwrap().to_owned();
    server.clock.advance_ms(3_600_001);
    let err = register(&server, "bob", Some(&short)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidInvite), "expired");
    let third = invite(None).await;
    let listed = admin_call(&admin, Command::Invites(args::Empty {})).await;
    assert_eq!(listed["invites"].as_array().unwrap().len(), 1, "{listed}");
    admin_call(
        &admin,
        Command::RevokeInvite(args::InviteId {
            id: third["id"].as_i64().unwrap(),
        }),
    )
    .await;
    let err = register(&server, "bob", third["code"].as_str())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidInvite), "withdrawn");
    // A failed registration consumed nothing and created nobody.
    let fourth = invite(None).await["code"].as_str().unwrap().to_owned();
    register(&server, "bob", Some(&fourth)).await.unwrap();
}

#[tokio::test]
async fn open_registration_is_the_default_and_is_announced() {
    let server = TestServer::start().await;
    assert_eq!(
        server.client().await.hello().registration,
        RegistrationMode::Open
    );
    assert!(
        !register(&server, "alice", None)
            .await
            .unwrap()
            .pending_approval
    );
    server.login("alice").await;
}
