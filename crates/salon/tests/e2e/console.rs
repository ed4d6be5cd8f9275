//! R17: the server console, driven as a real terminal program through a pseudo-terminal
//! and in process with scripted lines and the server's manual clock (its idle lock), and
//! `salon admin`, run as a real process against a running server.

use std::process::Command as StdCommand;
use std::sync::Arc;
use std::time::Duration;

use rexpect::session::spawn_command;
use salon::console::{self, EventSink, Input, Terminal};
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
fn the_console_asks_for_an_admin_login_on_a_terminal_and_stops_the_server() {
    let data = DataDir::new();
    let tcp = free_port();
    let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_salon"));
    cmd.arg("serve")
        .arg("--console")
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

    // Locked (the idle lock is tested in process, on a manual clock): the terminal asks
    // for the login again.
    enter(&mut console, "lock").unwrap();
    console.exp_string("console locked").unwrap();
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

/// A terminal scripted by the test: the lines it types go in through one channel; what
/// the console shows, prompts included, comes out through another, in order; events,
/// shown by another task at any moment, through a third.
struct Scripted {
    typed: std::sync::mpsc::Receiver<String>,
    shown: tokio::sync::mpsc::UnboundedSender<String>,
    events: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Terminal for Scripted {
    fn read_line(&mut self, prompt: &str) -> std::io::Result<Input> {
        let _ = self.shown.send(prompt.to_owned());
        Ok(self.typed.recv().map_or(Input::End, Input::Line))
    }

    fn read_password(&mut self) -> std::io::Result<Option<String>> {
        let _ = self.shown.send("password: ".to_owned());
        Ok(self.typed.recv().ok())
    }

    fn say(&mut self, text: &str) {
        let _ = self.shown.send(text.to_owned());
    }

    fn events(&self) -> EventSink {
        let events = self.events.clone();
        Arc::new(move |line| {
            let _ = events.send(line.to_owned());
        })
    }
}

/// The console's loop on its own thread (as `salon serve` runs it), connected to a test
/// server in process and reading time from the server's manual clock.
struct ScriptedConsole {
    /// Dropped to end the console's input.
    typed: Option<std::sync::mpsc::Sender<String>>,
    shown: tokio::sync::mpsc::UnboundedReceiver<String>,
    events: tokio::sync::mpsc::UnboundedReceiver<String>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl ScriptedConsole {
    fn start(server: &TestServer, idle_lock: Duration) -> ScriptedConsole {
        let (typed, lines) = std::sync::mpsc::channel();
        let (shows, shown) = tokio::sync::mpsc::unbounded_channel();
        let (tells, events) = tokio::sync::mpsc::unbounded_channel();
        let local = server.local.clone();
        let clock: salon_server::SharedClock = server.clock.clone();
        let rt = tokio::runtime::Handle::current();
        let thread = std::thread::spawn(move || {
            let mut term = Scripted {
                typed: lines,
                shown: shows,
                events: tells,
            };
            console::run(&mut term, &local, idle_lock, &clock, &rt)
        });
        ScriptedConsole {
            typed: Some(typed),
            shown,
            events,
            thread: Some(thread),
        }
    }

    fn enter(&self, line: &str) {
        if let Some(typed) = &self.typed {
            typed
                .send(line.to_owned())
                .expect("the console reads its input");
        }
    }

    /// Waits until the console shows a line containing `text`; returns the lines shown
    /// before it.
    async fn expect(&mut self, text: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let line = tokio::time::timeout(WAIT, self.shown.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("the console never showed {text:?}; it showed {before:#?}")
                })
                .unwrap_or_else(|| {
                    panic!("the console ended before showing {text:?}: {before:#?}")
                });
            if line.contains(text) {
                return before;
            }
            before.push(line);
        }
    }

    /// The next line the console shows.
    async fn next(&mut self) -> String {
        tokio::time::timeout(WAIT, self.shown.recv())
            .await
            .expect("the console shows something")
            .expect("the console still runs")
    }

    /// Waits until the console shows an event containing `text`.
    async fn expect_event(&mut self, text: &str) {
        loop {
            let line = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("the console never showed the event {text:?}"))
                .expect("the console still shows events");
            if line.contains(text) {
                return;
            }
        }
    }

    async fn log_in(&mut self, login: &str, password: &str) {
        self.expect(console::LOGIN_PROMPT).await;
        self.enter(login);
        self.expect("password: ").await;
        self.enter(password);
    }

    /// Ends the console's input; the console must say so and stop cleanly.
    async fn end(mut self) {
        self.typed = None;
        self.expect("end of input: the console stops, the server keeps running")
            .await;
        let thread = self.thread.take().expect("started");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap()
            .expect("the console's thread did not panic")
            .expect("the console stopped without error");
    }
}

// The console's thread blocks on its input and runs commands with `Handle::block_on`,
// so the server needs worker threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_locks_when_idle_and_runs_nothing_until_an_admin_logs_in_again() {
    let server = TestServer::start().await;
    let (mut carol, _) = server.user("carol").await;
    let (admin, _) = server.login("admin").await;
    let console_sessions = || async {
        admin
            .connected()
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.transport == salon_proto::Transport::Local)
            .count()
    };
    let mut console = ScriptedConsole::start(&server, Duration::from_secs(2));
    console.log_in("admin", PASSWORD).await;
    console.expect("logged in as admin").await;
    assert_eq!(console_sessions().await, 1);
    console.enter("requests");
    console.expect("no pending join requests").await;

    // Idle for exactly the limit is not idle for more than it: the command runs.
    server.clock.advance_ms(2_000);
    console.enter("requests");
    console.expect("no pending join requests").await;

    // Idle for longer than the lock: the command typed is not run; the console says it
    // is locked, closes its session and asks for the login again.
    server.clock.advance_ms(2_001);
    console.expect(console::PROMPT).await;
    console.enter("broadcast typed while locked");
    assert_eq!(
        console.next().await,
        "the console was idle for more than 2 s and is locked; log in again"
    );
    assert_eq!(console.next().await, console::LOGIN_PROMPT);
    console
        .expect_event("[console session closed] logged out")
        .await;
    assert_eq!(
        console_sessions().await,
        0,
        "the locked console is logged out"
    );
    // Until an administrator logs in again, what is typed is taken for a login.
    console.enter("requests");
    console.expect("password: ").await;
    console.enter(PASSWORD);
    console.expect("login refused: invalid_credentials").await;
    console.log_in("admin", PASSWORD).await;
    console.expect("logged in as admin").await;
    // The lock is counted from the login again.
    server.clock.advance_ms(2_000);
    console.enter("broadcast after the login");
    console.expect("done").await;
    let text = expect_event(&mut carol, "the console's notice", |e| match e {
        salon_proto::Event::Notice { text, .. } => Some(text.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        text, "after the login",
        "the command typed while locked never ran"
    );
    console.end().await;
}

/// Runs `salon admin --server <server> --user <user> ARGS` with the password in the
/// environment.
pub(crate) async fn salon_admin(
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

    // Every account, connected or not, with its sanctions.
    let out = salon_admin(&server, "admin", PASSWORD, &["users", "BOB"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listed.starts_with("1 account(s) match:"), "{listed}");
    assert!(
        listed.contains("bob") && listed.contains("offline") && listed.contains("[kick until"),
        "{listed}"
    );
    let out = salon_admin(&server, "admin", PASSWORD, &["users"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.starts_with("4 account(s) match:"), "{listed}");
    assert!(listed.contains("[administrator]"), "{listed}");
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
