//! The server console (R17): `salon serve` on a terminal (or with `--console`). It first
//! asks for an administrator's login, as the originals did, and locks again after
//! `console_idle_lock_secs` without a command. Commands travel as protocol requests over
//! an in-process session, so the server runs exactly the code that `salon admin` and
//! clients reach.
//!
//! Without a terminal (`salon serve --console` with standard input a pipe or a file), the
//! console reads lines as they come, the password being the line after the login (as
//! `--password-stdin` does elsewhere); at the end of the input it ends and the server
//! keeps running.
//!
//! Threads: rustyline's blocking line editor runs on its own thread; each command is
//! executed on the server's runtime with `Handle::block_on`. Events for the console's
//! session (join requests, notices) are printed above the prompt as they arrive.

use std::io::{BufRead, IsTerminal};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rustyline::error::ReadlineError;
use salon_client::{Client, Incoming};
use salon_proto::Event;
use tokio::io::DuplexStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::admin::{self, AdminCommand};

const PROMPT: &str = "salon> ";

/// Size of the in-process pipe between console and server.
const PIPE_BYTES: usize = 256 * 1024;

#[derive(Parser)]
#[command(no_binary_name = true, name = "", disable_version_flag = true)]
#[command(help_template = "Commands:\n{subcommands}\n\nType `help COMMAND` for details.")]
struct Line {
    #[command(subcommand)]
    cmd: ConsoleCommand,
}

#[derive(Subcommand)]
enum ConsoleCommand {
    #[command(flatten)]
    Admin(AdminCommand),
    /// Lock the console (log in again to continue).
    Lock,
    /// Leave the console; the server keeps running.
    Exit,
}

/// Starts the console on its own thread.
pub fn start(local: mpsc::Sender<DuplexStream>, idle_lock: Duration, runtime: Handle) {
    std::thread::Builder::new()
        .name("salon-console".into())
        .spawn(move || {
            if let Err(e) = run(local, idle_lock, runtime) {
                eprintln!("console stopped: {e}");
            }
        })
        .map(drop)
        .unwrap_or_else(|e| eprintln!("cannot start the console: {e}"));
}

async fn connect(local: &mpsc::Sender<DuplexStream>) -> Result<Client, String> {
    let (mine, theirs) = tokio::io::duplex(PIPE_BYTES);
    local
        .send(theirs)
        .await
        .map_err(|_| "the server is not accepting console sessions".to_string())?;
    Client::connect_stream(mine)
        .await
        .map_err(|e| e.to_string())
}

fn run(
    local: mpsc::Sender<DuplexStream>,
    idle_lock: Duration,
    rt: Handle,
) -> Result<(), ReadlineError> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let mut greeted = false;
    loop {
        // A connection first: its `hello` means the server is up (and has printed what
        // it prints at start), so the prompt comes after.
        let client = match rt.block_on(connect(&local)) {
            Ok(c) => c,
            Err(e) => {
                println!("console unavailable: {e}");
                return Ok(());
            }
        };
        if !greeted {
            println!(
                "Salon server console. Log in as an administrator (Ctrl-D leaves the console)."
            );
            greeted = true;
        }
        // ----- the login gate -----
        let login = match editor.readline("admin login: ") {
            Ok(l) => l.trim().to_owned(),
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => return ended(),
            Err(e) => return Err(e),
        };
        if login.is_empty() {
            continue;
        }
        let password = match read_password() {
            Ok(Some(p)) => p,
            Ok(None) => return ended(),
            Err(e) => {
                // No way to read it will work better next time.
                println!(
                    "cannot read the password ({e}); the console stops, the server keeps running"
                );
                return Ok(());
            }
        };
        let mut client = match rt.block_on(async {
            // A tool, not a presence: users do not see the administrator come and go.
            let welcome = client
                .login_with(salon_proto::args::Login {
                    login: login.clone(),
                    password,
                    presence: Some(false),
                })
                .await
                .map_err(|e| e.to_string())?;
            if !welcome.account.is_admin {
                let _ = client.logout().await;
                return Err("this account is not an administrator".to_string());
            }
            Ok(client)
        }) {
            Ok(c) => c,
            Err(e) => {
                println!("login refused: {e}");
                continue;
            }
        };
        println!("logged in as {login}. Type `help` for the commands.");
        rt.spawn(print_events(client.take_events()));

        // ----- commands until lock, idle timeout or exit -----
        let mut last = Instant::now();
        loop {
            let line = match editor.readline(PROMPT) {
                Ok(l) => l,
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => {
                    rt.block_on(client.logout()).ok();
                    return ended();
                }
                Err(e) => return Err(e),
            };
            if last.elapsed() > idle_lock {
                println!(
                    "the console was idle for more than {} s and is locked; log in again",
                    idle_lock.as_secs()
                );
                rt.block_on(client.logout()).ok();
                break;
            }
            last = Instant::now();
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(line);
            let Some(words) = shlex::split(line) else {
                println!("unbalanced quotes");
                continue;
            };
            let cmd = match Line::try_parse_from(words) {
                Ok(parsed) => parsed.cmd,
                Err(e) => {
                    // Includes `help` and `help COMMAND`.
                    print!("{e}");
                    continue;
                }
            };
            match cmd {
                ConsoleCommand::Exit => {
                    rt.block_on(client.logout()).ok();
                    return Ok(());
                }
                ConsoleCommand::Lock => {
                    rt.block_on(client.logout()).ok();
                    println!("console locked");
                    break;
                }
                ConsoleCommand::Admin(cmd) => {
                    let request = match cmd.to_command() {
                        Ok(r) => r,
                        Err(e) => {
                            println!("{e}");
                            continue;
                        }
                    };
                    match rt.block_on(client.execute(request)) {
                        Ok(reply) => println!("{}", admin::render(&cmd, &reply)),
                        Err(e) => println!("error: {e}"),
                    }
                }
            }
        }
    }
}

/// The password: typed without echo on a terminal; otherwise the next line of standard
/// input (`None` at its end).
fn read_password() -> std::io::Result<Option<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return rpassword::prompt_password("password: ").map(Some);
    }
    // The same buffered reader rustyline reads the other lines from.
    let mut line = String::new();
    if stdin.lock().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(Some(line.strip_suffix('\r').unwrap_or(line).to_owned()))
}

/// The console ends with its input (Ctrl-D, or the end of a pipe); the server does not.
fn ended() -> Result<(), ReadlineError> {
    println!("end of input: the console stops, the server keeps running");
    Ok(())
}

/// Prints the console session's events as they arrive, above a fresh prompt.
/// (rustyline's own external printer stalls on fast or pasted input, so the line being
/// typed is simply redrawn by the next keystroke instead.)
async fn print_events(mut events: mpsc::Receiver<Incoming>) {
    use std::io::Write;
    while let Some(item) = events.recv().await {
        let line = match item {
            Incoming::Event(Event::JoinRequest(r)) => format!(
                "[join request] {} ({}) asks to join {} — `accept {} '{}'` or `reject …`",
                r.user, r.alias, r.room, r.user, r.room
            ),
            Incoming::Event(Event::AccountRequest(a)) => format!(
                "[account request] {} ({}, {} {}) registered — `approve {}` or `deny {} …`",
                a.username, a.alias, a.first_name, a.last_name, a.username, a.username
            ),
            Incoming::Event(Event::Notice {
                from_alias, text, ..
            }) => {
                format!("[notice from {from_alias}] {text}")
            }
            Incoming::Event(Event::Shutdown { seconds, message }) => {
                format!("[shutdown in {seconds} s] {message}")
            }
            Incoming::Closing { message, .. } => format!("[console session closed] {message}"),
            _ => continue,
        };
        let mut out = std::io::stdout().lock();
        if out.is_terminal() {
            let _ = write!(out, "\r\x1b[K{line}\r\n{PROMPT}");
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}
