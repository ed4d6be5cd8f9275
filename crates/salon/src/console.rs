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
//! The command loop ([`run`]) is generic over a [`Terminal`] and reads time from the
//! server's injectable clock, so the tests drive it in process with scripted lines and
//! a manual clock; [`start`] runs it on the real terminal with the system clock.
//!
//! Threads: the loop blocks on its terminal (rustyline's line editor), so it runs on its
//! own thread; each command is executed on the server's runtime with `Handle::block_on`.
//! Events for the console's session (join requests, notices) are shown as they arrive,
//! by a task on the runtime.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rustyline::error::ReadlineError;
use salon_client::{Client, Incoming};
use salon_proto::Event;
use salon_server::SharedClock;
use tokio::io::DuplexStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::admin::{self, AdminCommand};

pub const PROMPT: &str = "salon> ";
pub const LOGIN_PROMPT: &str = "admin login: ";

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

/// What reading a line gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Line(String),
    /// Ctrl-C: at the login it leaves the console, at the prompt it drops the line.
    Interrupted,
    /// Ctrl-D, or the end of a pipe: the console ends (the server does not).
    End,
}

/// Shows one line of events above the prompt. Called from a task on the runtime while
/// the console's thread may be waiting for input, hence `Send + Sync`.
pub type EventSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What the console talks to: the terminal in production, a script in tests.
pub trait Terminal {
    /// The next line typed after `prompt`.
    fn read_line(&mut self, prompt: &str) -> std::io::Result<Input>;
    /// The password for the login just typed; `None` at the end of the input.
    fn read_password(&mut self) -> std::io::Result<Option<String>>;
    /// Keeps a command in the line editor's history.
    fn remember(&mut self, _line: &str) {}
    /// Shows one line (or several, joined by `\n`) of the console's own output.
    fn say(&mut self, text: &str);
    /// Where the console session's events are shown while commands are typed.
    fn events(&self) -> EventSink;
}

/// Starts the console on the real terminal, on its own thread. `clock` is the one the
/// server runs with.
pub fn start(
    local: mpsc::Sender<DuplexStream>,
    idle_lock: Duration,
    clock: SharedClock,
    runtime: Handle,
) {
    std::thread::Builder::new()
        .name("salon-console".into())
        .spawn(move || {
            let result = rustyline::DefaultEditor::new()
                .map_err(std::io::Error::other)
                .and_then(|editor| run(&mut Tty { editor }, &local, idle_lock, &clock, &runtime));
            if let Err(e) = result {
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

/// The console: the login gate, then commands until a lock, the idle limit or the end of
/// the input, then the gate again. Blocks the calling thread (which must not be one of
/// `rt`'s); returns when the console ends, the server keeping running.
pub fn run<T: Terminal>(
    term: &mut T,
    local: &mpsc::Sender<DuplexStream>,
    idle_lock: Duration,
    clock: &SharedClock,
    rt: &Handle,
) -> std::io::Result<()> {
    let idle_lock_ms = i64::try_from(idle_lock.as_millis()).unwrap_or(i64::MAX);
    let mut greeted = false;
    loop {
        // A connection first: its `hello` means the server is up (and has printed what
        // it prints at start), so the prompt comes after.
        let client = match rt.block_on(connect(local)) {
            Ok(c) => c,
            Err(e) => {
                term.say(&format!("console unavailable: {e}"));
                return Ok(());
            }
        };
        if !greeted {
            term.say(
                "Salon server console. Log in as an administrator (Ctrl-D leaves the console).",
            );
            greeted = true;
        }
        // ----- the login gate -----
        let login = match term.read_line(LOGIN_PROMPT)? {
            Input::Line(l) => l.trim().to_owned(),
            Input::Interrupted | Input::End => return ended(term),
        };
        if login.is_empty() {
            continue;
        }
        let password = match term.read_password() {
            Ok(Some(p)) => p,
            Ok(None) => return ended(term),
            Err(e) => {
                // No way to read it will work better next time.
                term.say(&format!(
                    "cannot read the password ({e}); the console stops, the server keeps running"
                ));
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
                term.say(&format!("login refused: {e}"));
                continue;
            }
        };
        term.say(&format!(
            "logged in as {login}. Type `help` for the commands."
        ));
        rt.spawn(show_events(client.take_events(), term.events()));

        // ----- commands until lock, idle timeout or exit -----
        let mut last_ms = clock.now_ms();
        loop {
            let line = match term.read_line(PROMPT)? {
                Input::Line(l) => l,
                Input::Interrupted => continue,
                Input::End => {
                    rt.block_on(client.logout()).ok();
                    return ended(term);
                }
            };
            // Measured when the line arrives: what was typed after the limit is not run.
            let now_ms = clock.now_ms();
            if now_ms.saturating_sub(last_ms) > idle_lock_ms {
                term.say(&format!(
                    "the console was idle for more than {} s and is locked; log in again",
                    idle_lock.as_secs()
                ));
                rt.block_on(client.logout()).ok();
                break;
            }
            last_ms = now_ms;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            term.remember(line);
            let Some(words) = shlex::split(line) else {
                term.say("unbalanced quotes");
                continue;
            };
            let cmd = match Line::try_parse_from(words) {
                Ok(parsed) => parsed.cmd,
                Err(e) => {
                    // Includes `help` and `help COMMAND`.
                    term.say(e.to_string().trim_end_matches('\n'));
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
                    term.say("console locked");
                    break;
                }
                ConsoleCommand::Admin(cmd) => {
                    let request = match cmd.to_command() {
                        Ok(r) => r,
                        Err(e) => {
                            term.say(&e.to_string());
                            continue;
                        }
                    };
                    match rt.block_on(client.execute(request)) {
                        Ok(reply) => term.say(&admin::render(&cmd, &reply)),
                        Err(e) => term.say(&format!("error: {e}")),
                    }
                }
            }
        }
    }
}

/// The console ends with its input (Ctrl-D, or the end of a pipe); the server does not.
fn ended(term: &mut impl Terminal) -> std::io::Result<()> {
    term.say("end of input: the console stops, the server keeps running");
    Ok(())
}

/// Shows the console session's events as they arrive; ends with the session.
async fn show_events(mut events: mpsc::Receiver<Incoming>, sink: EventSink) {
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
        sink(&line);
    }
}

/// The real terminal: rustyline's line editor, the password without echo, standard
/// output.
struct Tty {
    editor: rustyline::DefaultEditor,
}

impl Terminal for Tty {
    fn read_line(&mut self, prompt: &str) -> std::io::Result<Input> {
        match self.editor.readline(prompt) {
            Ok(line) => Ok(Input::Line(line)),
            Err(ReadlineError::Interrupted) => Ok(Input::Interrupted),
            Err(ReadlineError::Eof) => Ok(Input::End),
            Err(ReadlineError::Io(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Typed without echo on a terminal; otherwise the next line of standard input.
    fn read_password(&mut self) -> std::io::Result<Option<String>> {
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

    fn remember(&mut self, line: &str) {
        let _ = self.editor.add_history_entry(line);
    }

    fn say(&mut self, text: &str) {
        println!("{text}");
    }

    /// Above a fresh prompt on a terminal. (rustyline's own external printer stalls on
    /// fast or pasted input, so the line being typed is simply redrawn by the next
    /// keystroke instead.)
    fn events(&self) -> EventSink {
        Arc::new(|line| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if out.is_terminal() {
                let _ = write!(out, "\r\x1b[K{line}\r\n{PROMPT}");
            } else {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        })
    }
}
