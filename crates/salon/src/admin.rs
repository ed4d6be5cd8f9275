//! Administration commands as people type them: one grammar (clap) shared by the server
//! console and `salon admin`, turned into protocol commands that the server executes —
//! so each operation has a single implementation on the server whichever way in.

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use salon_proto::{args, reply, Command, Reply};

/// Commands an administrator types (console) or passes (`salon admin …`).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List connected users: sessions, address, transport, since when.
    #[command(visible_alias = "who")]
    Connected,
    /// Disconnect USER now and refuse their logins for DURATION (default 5m).
    /// Usage: kick USER [DURATION] [REASON...] — e.g. kick bob 10m flooding Général
    /// (a first word that looks like a number must be a valid duration).
    Kick {
        user: String,
        /// Optional duration (300, 90s, 10m, 2h…) followed by the reason.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Lift USER's kick early.
    Unkick { user: String },
    /// Disconnect USER and refuse their logins until unbanned (nothing is deleted).
    /// Usage: ban USER [REASON...] — no duration (use kick for that).
    Ban {
        user: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        reason: Vec<String>,
    },
    /// Lift USER's ban.
    Unban { user: String },
    /// List current kicks and bans.
    Sanctions,
    /// List pending join requests.
    Requests,
    /// Accept USER's request to join ROOM.
    Accept { user: String, room: String },
    /// Reject USER's request to join ROOM.
    Reject {
        user: String,
        room: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        reason: Vec<String>,
    },
    /// Send a notice to every connected user.
    Broadcast {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        text: Vec<String>,
    },
    /// Stop the server after a countdown seen by every client (default 10 s).
    /// Usage: shutdown [SECONDS] [MESSAGE...] — SECONDS may be written 90s, 2m…
    #[command(visible_alias = "kill")]
    Shutdown {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Reset USER's password: a new one is generated and shown once.
    Passwd { user: String },
    /// List accounts waiting for approval (registration = approval).
    Accounts,
    /// Find accounts, connected or not, by any of their names (case and accents
    /// ignored): status, sessions, kicks and bans. Usage: users [WORDS...]; at most 100
    /// are listed, with how many match in all.
    Users {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Approve USER's account: it can log in from now on.
    Approve { user: String },
    /// Refuse USER's waiting account: it is deleted and its names are free again.
    Deny {
        user: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        reason: Vec<String>,
    },
    /// Make a single-use invitation code (registration = invite), valid HOURS (default
    /// 72, at most 720). The code is shown once.
    Invite {
        #[arg(allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=720))]
        hours: Option<u32>,
    },
    /// List invitations neither used nor expired.
    Invites,
    /// Withdraw invitation ID before it is used.
    RevokeInvite { id: i64 },
    /// Create an account (the way in when registration is closed); its password is
    /// generated and shown once. Usage: adduser USERNAME ALIAS FIRST LAST [--admin]
    Adduser {
        username: String,
        alias: String,
        first_name: String,
        last_name: String,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Show the latest N administrative actions (default 20, at most 1000).
    Audit {
        #[arg(allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
        n: Option<u32>,
    },
}

fn joined(words: &[String]) -> Option<String> {
    let text = words.join(" ");
    (!text.trim().is_empty()).then_some(text)
}

impl AdminCommand {
    /// The protocol command, or a usage error.
    pub fn to_command(&self) -> Result<Command, String> {
        Ok(match self {
            AdminCommand::Connected => Command::Connected(args::Empty {}),
            AdminCommand::Kick { user, rest } => {
                let (seconds, reason) = leading_seconds(rest, "kick duration")?;
                if seconds == Some(0) {
                    return Err("a kick lasts at least one second".into());
                }
                Command::Kick(args::Kick {
                    user: user.clone(),
                    seconds,
                    reason,
                })
            }
            AdminCommand::Unkick { user } => Command::Unkick(args::Target { user: user.clone() }),
            AdminCommand::Ban { user, reason } => {
                // A ban has no duration: `ban bob 10m` is surely a kick mistyped, not a
                // permanent ban with the reason "10m".
                if let Some(first) = reason.first().filter(|w| parse_duration(w).is_some()) {
                    return Err(format!(
                        "a ban has no duration (it lasts until unban): {first:?} would be its \
                         reason; for a sanction that ends by itself use kick {user} {first} …"
                    ));
                }
                Command::Ban(args::Ban {
                    user: user.clone(),
                    reason: joined(reason),
                })
            }
            AdminCommand::Unban { user } => Command::Unban(args::Target { user: user.clone() }),
            AdminCommand::Sanctions => Command::Sanctions(args::Empty {}),
            AdminCommand::Users { words } => Command::Accounts(args::Accounts {
                query: joined(words),
                cursor: None,
                limit: Some(100),
            }),
            AdminCommand::Requests => Command::Requests(args::Empty {}),
            AdminCommand::Accept { user, room } => Command::Accept(args::Decide {
                user: user.clone(),
                room: room.clone(),
                reason: None,
            }),
            AdminCommand::Reject { user, room, reason } => Command::Reject(args::Decide {
                user: user.clone(),
                room: room.clone(),
                reason: joined(reason),
            }),
            AdminCommand::Broadcast { text } => Command::Broadcast(args::Broadcast {
                text: text.join(" "),
            }),
            AdminCommand::Shutdown { rest } => {
                let (seconds, message) = leading_seconds(rest, "countdown")?;
                let seconds = seconds
                    .map(|s| {
                        u32::try_from(s).map_err(|_| format!("a countdown of {s} s is too long"))
                    })
                    .transpose()?;
                Command::Shutdown(args::Shutdown { seconds, message })
            }
            AdminCommand::Passwd { user } => Command::ResetPassword(args::ResetPassword {
                user: user.clone(),
                password: None,
            }),
            AdminCommand::Audit { n } => Command::Audit(args::Audit {
                limit: Some(n.unwrap_or(20)),
            }),
            AdminCommand::Accounts => Command::AccountRequests(args::Empty {}),
            AdminCommand::Approve { user } => {
                Command::ApproveAccount(args::Target { user: user.clone() })
            }
            AdminCommand::Deny { user, reason } => Command::RejectAccount(args::Ban {
                user: user.clone(),
                reason: joined(reason),
            }),
            AdminCommand::Invite { hours } => {
                Command::CreateInvite(args::CreateInvite { hours: *hours })
            }
            AdminCommand::Invites => Command::Invites(args::Empty {}),
            AdminCommand::RevokeInvite { id } => Command::RevokeInvite(args::InviteId { id: *id }),
            AdminCommand::Adduser {
                username,
                alias,
                first_name,
                last_name,
                admin,
            } => Command::CreateAccount(args::CreateAccount {
                username: username.clone(),
                alias: alias.clone(),
                first_name: first_name.clone(),
                last_name: last_name.clone(),
                password: None,
                admin: *admin,
            }),
        })
    }
}

/// Splits `words` into an optional leading duration, in whole seconds, and the text after
/// it. The first word is a duration if it reads as one. If it does not, it starts the
/// text, unless it looks like a number (`-5m`, `5x`, `1.5h` begin with a digit or a sign
/// and a digit): such a word is refused rather than silently taken as text.
fn leading_seconds(words: &[String], what: &str) -> Result<(Option<u64>, Option<String>), String> {
    let Some((first, tail)) = words.split_first() else {
        return Ok((None, None));
    };
    if let Some(d) = parse_duration(first) {
        if d.subsec_nanos() != 0 {
            return Err(format!(
                "{first:?} is not a valid {what}: use whole seconds"
            ));
        }
        return Ok((Some(d.as_secs()), joined(tail)));
    }
    // A sign, or a decimal point, then a digit; or a digit.
    let unsigned = first.trim_start_matches(['-', '+']);
    let numeric = unsigned
        .strip_prefix('.')
        .unwrap_or(unsigned)
        .starts_with(|c: char| c.is_ascii_digit());
    if numeric {
        return Err(format!(
            "{first:?} is not a valid {what}: give a positive number of seconds or a \
             duration such as 90s, 10m or 2h (a text starting with a number goes after \
             the {what})"
        ));
    }
    Ok((None, joined(words)))
}

/// "300" (seconds), "90s", "10m", "2h", "1h 30m".
pub fn parse_duration(text: &str) -> Option<Duration> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).ok()
}

/// An RFC 3339 UTC time from milliseconds since the epoch.
pub fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Renders a successful reply for a person; `cmd` gives what the administrator typed.
pub fn render(cmd: &AdminCommand, reply: &Reply) -> String {
    match (cmd, reply) {
        (_, Reply::Connected(reply::Sessions { sessions })) => {
            if sessions.is_empty() {
                return "nobody is connected".into();
            }
            let mut out = format!("{} session(s):", sessions.len());
            for s in sessions {
                out.push_str(&format!(
                    "\n  {:<16} {:<20} {:<7} {:<22} {:<9} since {}",
                    s.username,
                    s.alias,
                    s.status,
                    s.address,
                    s.transport,
                    time(s.since),
                ));
                // In a cluster: the node the session is connected to.
                if let Some(node) = s.node {
                    out.push_str(&format!(" on node {node}"));
                }
            }
            out
        }
        (_, Reply::Kick(kicked)) => {
            format!("{} is kicked until {}", kicked.user, time(kicked.until))
        }
        (_, Reply::Requests(reply::JoinRequests { requests })) => {
            if requests.is_empty() {
                return "no pending join requests".into();
            }
            let mut out = format!("{} pending request(s):", requests.len());
            for r in requests {
                out.push_str(&format!(
                    "\n  {} ({}) → {}   since {}",
                    r.user,
                    r.alias,
                    r.room,
                    time(r.requested_at),
                ));
            }
            out
        }
        (_, Reply::Sanctions(reply::Sanctions { sanctions })) => {
            if sanctions.is_empty() {
                return "nobody is kicked or banned".into();
            }
            sanctions
                .iter()
                .map(|s| {
                    let until = match s.until {
                        Some(t) => format!(" until {}", time(t)),
                        None => String::new(),
                    };
                    format!(
                        "  {} {}{until} — {} (by {}, {})",
                        s.kind,
                        s.user,
                        s.reason,
                        s.by,
                        time(s.since),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        (_, Reply::Accounts(list)) => {
            if list.accounts.is_empty() {
                return "no account matches".into();
            }
            let mut out = format!("{} account(s) match", list.total);
            if list.next.is_some() {
                out.push_str(&format!(", the first {} shown", list.accounts.len()));
            }
            out.push(':');
            for entry in &list.accounts {
                let a = &entry.account;
                let mut notes = Vec::new();
                if a.is_admin {
                    notes.push("administrator".to_owned());
                }
                if a.pending_approval {
                    notes.push("waiting for approval".to_owned());
                }
                for s in &entry.sanctions {
                    notes.push(match s.until {
                        Some(t) => format!("{} until {}", s.kind, time(t)),
                        None => s.kind.to_string(),
                    });
                }
                out.push_str(&format!(
                    "\n  {:<16} {:<20} {:<24} {:<7} {} session(s){}",
                    a.username,
                    a.alias,
                    format!("{} {}", a.first_name, a.last_name),
                    a.status,
                    entry.sessions,
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!("   [{}]", notes.join(", "))
                    },
                ));
            }
            out
        }
        (_, Reply::Shutdown(countdown)) => {
            format!("the server stops in {} s", countdown.seconds)
        }
        (_, Reply::AccountRequests(reply::AccountRequests { accounts })) => {
            if accounts.is_empty() {
                return "no account is waiting for approval".into();
            }
            let mut out = format!("{} account(s) waiting:", accounts.len());
            for a in accounts {
                out.push_str(&format!(
                    "\n  {} ({}, {} {})   since {}",
                    a.username,
                    a.alias,
                    a.first_name,
                    a.last_name,
                    time(a.requested_at),
                ));
            }
            out
        }
        (_, Reply::CreateInvite(invitation)) => format!(
            "invitation {}: code {}\nvalid until {} (shown once; give it to one person)",
            invitation.id,
            invitation.code,
            time(invitation.expires_at),
        ),
        (_, Reply::Invites(reply::Invites { invites })) => {
            if invites.is_empty() {
                return "no unused invitation".into();
            }
            invites
                .iter()
                .map(|i| format!("  {}  by {}  until {}", i.id, i.by, time(i.expires_at)))
                .collect::<Vec<_>>()
                .join("\n")
        }
        (AdminCommand::Adduser { username, .. }, Reply::CreateAccount(created)) => format!(
            "account {username} created; password: {}\n(shown once)",
            created.password.as_deref().unwrap_or_default()
        ),
        (AdminCommand::Passwd { user }, Reply::ResetPassword(reset)) => format!(
            "new password for {user}: {}\n(shown once; their sessions must log in again)",
            reset.password.as_deref().unwrap_or_default()
        ),
        (_, Reply::Audit(reply::AuditLog { entries })) => {
            if entries.is_empty() {
                return "the audit log is empty".into();
            }
            entries
                .iter()
                .map(|e| {
                    let mut line = format!(
                        "{}  {:<12} {:<14} {}",
                        time(e.ts),
                        e.actor,
                        e.action,
                        e.target,
                    );
                    if !e.reason.is_empty() {
                        line.push_str(&format!("  — {}", e.reason));
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => "done".into(),
    }
}

/// `salon admin create-user`: an account made directly in the database (the server may
/// be running or not), e.g. another administrator.
#[derive(Debug, Args)]
pub struct NewAccount {
    #[arg(long)]
    pub username: String,
    /// Display name (default: the username).
    #[arg(long)]
    pub alias: Option<String>,
    #[arg(long, default_value = "Salon")]
    pub first_name: String,
    #[arg(long, default_value = "User")]
    pub last_name: String,
    /// Make the account an administrator.
    #[arg(long)]
    pub admin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct Line {
        #[command(subcommand)]
        cmd: AdminCommand,
    }

    fn parse(line: &str) -> Command {
        let words = shlex::split(line).unwrap();
        Line::try_parse_from(words)
            .unwrap()
            .cmd
            .to_command()
            .unwrap()
    }

    #[test]
    fn kick_takes_an_optional_duration_then_a_reason() {
        let Command::Kick(k) = parse("kick bob 10m flooding the room") else {
            panic!()
        };
        assert_eq!(
            (k.seconds, k.reason.as_deref()),
            (Some(600), Some("flooding the room"))
        );
        let Command::Kick(k) = parse("kick bob flooding") else {
            panic!()
        };
        assert_eq!((k.seconds, k.reason.as_deref()), (None, Some("flooding")));
        let Command::Kick(k) = parse("kick bob 90") else {
            panic!()
        };
        assert_eq!((k.seconds, k.reason), (Some(90), None));
    }

    fn refused(line: &str) -> String {
        let words = shlex::split(line).unwrap();
        match Line::try_parse_from(words) {
            Ok(parsed) => parsed.cmd.to_command().unwrap_err(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_word_that_looks_like_a_number_but_is_no_duration_is_refused() {
        for line in [
            "kick bob -5m",
            "kick bob 5x flooding",
            "kick bob 1.5x",
            "kick bob 500ms",
            "kick bob .5m",
            "shutdown -5 bye",
            "shutdown 2x bye",
            "shutdown 99999999999",
        ] {
            let e = refused(line);
            assert!(
                e.contains("not a valid") || e.contains("too long") || e.contains("at least"),
                "{line}: {e}"
            );
        }
        // A ban takes no duration; a reason merely starting with a digit is fine.
        assert!(refused("ban bob 10m spam").contains("use kick bob 10m"));
        let Command::Ban(b) = parse("ban bob 3rd warning") else {
            panic!()
        };
        assert_eq!(b.reason.as_deref(), Some("3rd warning"));
        // `+` alone is a word, not a number: it starts the reason.
        let Command::Kick(k) = parse("kick bob + spam") else {
            panic!()
        };
        assert_eq!((k.seconds, k.reason.as_deref()), (None, Some("+ spam")));
        // Durations are accepted for the countdown too.
        let Command::Shutdown(s) = parse("shutdown 2m maintenance") else {
            panic!()
        };
        assert_eq!(
            (s.seconds, s.message.as_deref()),
            (Some(120), Some("maintenance"))
        );
        for line in ["audit 0", "audit -5", "audit 1001", "audit x"] {
            assert!(refused(line).contains("invalid value"), "{line}");
        }
        let Command::Audit(a) = parse("audit 1000") else {
            panic!()
        };
        assert_eq!(a.limit, Some(1000));
    }

    #[test]
    fn quoted_arguments_and_aliases() {
        let Command::Reject(r) = parse("reject alice 'Comptabilité' \"not your team\"") else {
            panic!()
        };
        assert_eq!(
            (r.room.as_str(), r.reason.as_deref()),
            ("Comptabilité", Some("not your team"))
        );
        let Command::Shutdown(s) = parse("kill 3 back in five minutes") else {
            panic!()
        };
        assert_eq!(
            (s.seconds, s.message.as_deref()),
            (Some(3), Some("back in five minutes"))
        );
        assert!(matches!(parse("who"), Command::Connected(_)));
    }
}
