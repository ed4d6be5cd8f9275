//! R17: the server console, driven as a real terminal program through a pseudo-terminal,
//! and `salon admin`, run as a real process against a running server.

use std::process::Command as StdCommand;
use std::time::Duration;

use rexpect::session::spawn_command;
use salon_client::Client;
use salon_proto::{CloseCode, ErrorCode};

use crate::harness::*;

/// Types a line and presses Enter (a terminal sends CR).
fn enter(
    console: &mut rexpect::session::PtySession,
    line: &str,
) -> Result<usize, rexpect::error::Error> {
    let n = console.send(&format!("{line}\r"))?;
    console.flush()?;
    Ok(n)
}

#[test]
fn the_console_asks_for_an_admin_login_locks_when_idle_and_stops_the_server() {
    let data = DataDir::new();
    let config = data.path().join("salon.toml");
    std::fs::write(&config, "console_idle_lock_secs = 2\n").unwrap();
    let tcp = free_port();
    let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_salon"));
    cmd.arg("serve")
        .arg("--console")
        .arg("--config")
        .arg(&config)
        .args(data.server_args())
        .args(["--listen", &format!("127.0.0.1:{tcp}")])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .env("SALON_METRICS_LISTEN", "127.0.0.1:0")
        .env("SALON_LOG", "warn")
        .env_remove("SALON_ADMIN_PASSWORD");
    let mut console = spawn_command(cmd, Some(20_000)).expect("spawn salon serve");

    // First start: the administrator's generated password is shown once.
    let (_, shown) = console
        .exp_regex(r"password `[A-Za-z0-9]{20}`")
        .expect("generated admin password shown");
    let password = shown
        .trim_start_matches("password `")
        .trim_end_matches('`')
        .to_owned();

    // The login gate: a wrong password is refused, a non-admin too.
    console.exp_string("admin login: ").unwrap();
    enter(&mut console, "admin").unwrap();
    console.exp_string("password: ").unwrap();
    enter(&mut console, "not the password").unwrap();
    console
        .exp_string("login refused: invalid_credentials")
        .unwrap();
    console.exp_string("admin login: ").unwrap();
    enter(&mut console, "admin").unwrap();
    console.exp_string("password: ").unwrap();
    enter(&mut console, &password).unwrap();
    console.exp_string("logged in as admin").unwrap();

    enter(&mut console, "help").unwrap();
    for command in [
        "connected",
        "kick",
        "unkick",
        "ban",
        "requests",
        "accept",
        "reject",
        "broadcast",
        "shutdown",
        "passwd",
        "audit",
    ] {
        console.exp_string(command).unwrap();
    }
    enter(&mut console, "requests").unwrap();
    console.exp_string("no pending join requests").unwrap();
    enter(&mut console, "kick nobody 5m spam").unwrap();
    console.exp_string("error: no_such_user").unwrap();
    enter(&mut console, "frobnicate").unwrap();
    console.exp_string("unrecognized subcommand").unwrap();
    enter(&mut console, "audit 1").unwrap();
    console.exp_string("create_user").unwrap();

    // A join request reaches the console as it happens, and is decided from it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let carol = rt.block_on(async {
        let c = salon_client::Client::connect_tcp(("127.0.0.1", tcp))
            .await
            .unwrap();
        c.register(registration("carol")).await.unwrap();
        c.login("carol", PASSWORD).await.unwrap();
        c.join("Informatique").await.unwrap();
        c
    });
    console
        .exp_string("[join request] carol (Carol) asks to join Informatique")
        .unwrap();
    enter(&mut console, "accept carol informatique").unwrap();
    console.exp_string("done").unwrap();
    let rooms = rt.block_on(carol.rooms()).unwrap();
    assert!(rooms
        .iter()
        .any(|r| r.name == "Informatique" && r.state == salon_proto::MemberState::Member));

    // Idle for longer than the lock: the next command asks for the login again.
    std::thread::sleep(Duration::from_millis(2_500));
    enter(&mut console, "requests").unwrap();
    console.exp_string("is locked; log in again").unwrap();
    console.exp_string("admin login: ").unwrap();
    enter(&mut console, "admin").unwrap();
    console.exp_string("password: ").unwrap();
    enter(&mut console, &password).unwrap();
    console.exp_string("logged in as admin").unwrap();

    // KILL: the countdown, then the process exits with status 0.
    enter(&mut console, "shutdown 1 bye").unwrap();
    console.exp_string("the server stops in 1 s").unwrap();
    console.exp_eof().expect("the server process ends");
    match console.process().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("unexpected end: {other:?}"),
    }
}

/// Runs `salon admin --server <server> --user <user> ARGS` with the password in the
/// environment.
async fn salon_admin(
    server: &TestServer,
    user: &str,
    password: &str,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .arg("admin")
        .args(["--server", &server.tcp.to_string(), "--user", user])
        .args(args)
        .env("SALON_ADMIN_PASSWORD", password)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn salon_admin_runs_the_same_commands_against_a_running_server() {
    let server = TestServer::start().await;
    let (mut bob, _) = server.user("bob").await;
    let out = salon_admin(
        &server,
        "admin",
        PASSWORD,
        &["kick", "bob", "1m", "please", "stop"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bob is kicked until"));
    let (code, message) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Kicked);
    assert!(message.contains("please stop"));

    let out = salon_admin(&server, "admin", PASSWORD, &["unban", "nobody"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_user"));
    let out = salon_admin(&server, "admin", "wrong password", &["requests"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_credentials"));

    // A non-administrator is refused by the server itself.
    let out = salon_admin(&server, "carol", PASSWORD, &["requests"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_credentials"),
        "carol does not exist"
    );
    server.register("carol").await;
    let out = salon_admin(&server, "carol", PASSWORD, &["requests"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an administrator"));

    // Offline account creation on the server's database.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args([
            "admin",
            "create-user",
            "--username",
            "eve",
            "--alias",
            "Ève",
            "--admin",
        ])
        .args(server.data.server_args())
        .env("SALON_NEW_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created administrator eve (Ève)"));
    let (_, welcome) = server.login("Ève").await;
    assert!(welcome.account.is_admin);
    assert_eq!(
        server.login_refused("bob", PASSWORD).await,
        Some(ErrorCode::Kicked)
    );
}

/// Whether `i` is a presence event about `user` (or a refresh hint, which could hide one).
fn presence_about(i: &salon_client::Incoming, user: &str) -> bool {
    matches!(i, salon_client::Incoming::Event(salon_proto::Event::Presence { users, refresh })
        if *refresh || users.iter().any(|p| p.username == user))
}

#[tokio::test]
async fn the_console_without_a_terminal_reads_its_lines_and_the_password_from_the_pipe() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let data = DataDir::new();
    let tcp = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .arg("serve")
        .arg("--console")
        .args(data.server_args())
        .args(["--listen", &format!("127.0.0.1:{tcp}")])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .env("SALON_METRICS_LISTEN", "127.0.0.1:0")
        .env("SALON_LOG", "warn")
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn salon serve");
    let mut watcher = connect_when_ready(tcp).await;
    watcher.register(registration("carol")).await.unwrap();
    watcher.login("carol", PASSWORD).await.unwrap();

    // A wrong password is refused once, then the next login works and runs a command.
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            format!("admin\nnot the password\nadmin\n{PASSWORD}\nbroadcast from the pipe\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let (from, text) = expect_event(&mut watcher, "the console's notice", |e| match e {
        salon_proto::Event::Notice { from, text, .. } => Some((from.clone(), text.clone())),
        _ => None,
    })
    .await;
    assert_eq!((from.as_str(), text.as_str()), ("admin", "from the pipe"));

    // The end of the input ends the console, not the server.
    drop(stdin);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    while !output
        .last()
        .is_some_and(|l: &String| l.contains("end of input"))
    {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the console says it ends")
            .unwrap()
            .expect("stdout stays open");
        output.push(line);
    }
    let output = output.join("\n");
    assert_eq!(
        output.matches("login refused: invalid_credentials").count(),
        1,
        "{output}"
    );
    assert!(output.contains("logged in as admin"), "{output}");
    assert!(!output.contains("cannot read the password"), "{output}");
    assert!(output.contains("the server keeps running"), "{output}");
    // The console's session was no presence: carol never saw the administrator.
    expect_none(&mut watcher, "presence of admin", |i| {
        presence_about(i, "admin")
    })
    .await;
    watcher.ping().await.unwrap();
    Client::connect_tcp(("127.0.0.1", tcp))
        .await
        .unwrap()
        .login("admin", PASSWORD)
        .await
        .expect("the server still runs");
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn salon_admin_refuses_a_bad_duration_instead_of_taking_it_as_the_reason() {
    let server = TestServer::start().await;
    let (mut bob, _) = server.user("bob").await;
    for args in [
        &["kick", "bob", "-5m"][..],
        &["kick", "bob", "5x", "spam"],
        &["kick", "bob", "0"],
        &["shutdown", "-5", "back soon"],
        &["shutdown", "2x"],
        &["ban", "bob", "10m", "spam"],
    ] {
        let out = salon_admin(&server, "admin", PASSWORD, args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            [
                "is not a valid",
                "at least one second",
                "a ban has no duration"
            ]
            .iter()
            .any(|e| stderr.contains(e)),
            "{args:?}: {stderr}"
        );
    }
    for args in [&["audit", "0"][..], &["audit", "-5"], &["audit", "lots"]] {
        let out = salon_admin(&server, "admin", PASSWORD, args).await;
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid value"),
            "{args:?}"
        );
    }
    // Nothing happened: bob is still connected, the server still runs.
    expect_none(&mut bob, "a kick", |i| {
        matches!(i, salon_client::Incoming::Closing { .. })
    })
    .await;
    bob.ping().await.unwrap();
    // A valid duration still works, and a number-like word after it is the reason.
    let out = salon_admin(
        &server,
        "admin",
        PASSWORD,
        &["kick", "bob", "2m", "3rd", "warning"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, message) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Kicked);
    assert!(message.contains("2 min: 3rd warning"), "{message}");
}

#[tokio::test]
async fn salon_admin_does_not_show_the_administrator_coming_and_going() {
    let server = TestServer::start().await;
    let (mut watcher, _) = server.user("carol").await;
    let out = salon_admin(&server, "admin", PASSWORD, &["connected"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its own session is listed (administrators see tools), carol's too.
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("admin") && listed.contains("carol"),
        "{listed}"
    );
    let out = salon_admin(&server, "admin", PASSWORD, &["broadcast", "hello"]).await;
    assert!(out.status.success());
    expect_event(&mut watcher, "notice", |e| match e {
        salon_proto::Event::Notice { text, .. } => (text == "hello").then_some(()),
        _ => None,
    })
    .await;
    expect_none(&mut watcher, "presence of admin", |i| {
        presence_about(i, "admin")
    })
    .await;
    let users = watcher.who().await.unwrap();
    assert!(users
        .iter()
        .any(|u| u.username == "admin" && u.status == salon_proto::Status::Offline));
}

#[tokio::test]
async fn salon_admin_approves_accounts_issues_invitations_and_creates_accounts() {
    // Approval.
    let server = TestServer::start_with(|c| {
        c.registration = salon_proto::RegistrationMode::Approval;
    })
    .await;
    server.register("alice").await;
    let listed = succeeded(&salon_admin(&server, "admin", PASSWORD, &["accounts"]).await);
    assert!(listed.contains("alice (Alice"), "{listed}");
    succeeded(&salon_admin(&server, "admin", PASSWORD, &["approve", "alice"]).await);
    server.login("alice").await;
    // Creating an account prints its password once; it works.
    let created = succeeded(
        &salon_admin(
            &server,
            "admin",
            PASSWORD,
            &["adduser", "carol", "Carol", "Carol", "Martin"],
        )
        .await,
    );
    let password = created
        .split("password: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the password is shown");
    server
        .client()
        .await
        .login("carol", password)
        .await
        .unwrap();

    // Invitations.
    let server = TestServer::start_with(|c| {
        c.registration = salon_proto::RegistrationMode::Invite;
    })
    .await;
    let made = succeeded(&salon_admin(&server, "admin", PASSWORD, &["invite", "24"]).await);
    let code = made
        .split("code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the code is shown");
    let listed = succeeded(&salon_admin(&server, "admin", PASSWORD, &["invites"]).await);
    assert!(listed.contains("by admin"), "{listed}");
    server
        .client()
        .await
        .register(salon_proto::args::Register {
            invite: Some(code.into()),
            ..registration("dave")
        })
        .await
        .unwrap();
    let out = salon_admin(&server, "admin", PASSWORD, &["invite", "0"]).await;
    assert!(!out.status.success(), "0 hours is refused by the grammar");
}
