//! R17: the server console, driven as a real terminal program through a pseudo-terminal,
//! and `salon admin`, run as a real process against a running server.

use std::process::Command as StdCommand;
use std::time::Duration;

use rexpect::session::spawn_command;
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
