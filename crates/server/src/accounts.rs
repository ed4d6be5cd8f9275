//! Account rules: what a valid username, alias, name and password are (R1), and password
//! hashing with Argon2id at OWASP's recommended parameters (R2). Hashing runs on a fixed
//! set of threads of its own, behind a bounded queue, so that it never stalls the async
//! workers and a login storm cannot queue work without limit.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use salon_proto::{args, Account, ErrorBody, ErrorCode, Status};

use crate::ids::IdGenerator;
use crate::names;
use crate::service::Result;
use crate::store::{fold, NewUser, Store};

pub const USERNAME_CHARS: (usize, usize) = (3, 32);
pub const ALIAS_CHARS: (usize, usize) = (2, 32);
pub const NAME_CHARS: (usize, usize) = (1, 64);
pub const PASSWORD_CHARS: (usize, usize) = (8, 128);
pub const ROOM_NAME_CHARS: (usize, usize) = (2, 48);

/// Creates an account after checking every field (R1): registration, the first
/// administrator and `salon admin create-user` all come through here.
pub async fn create_account(
    store: &Store,
    ids: &IdGenerator,
    now: i64,
    a: args::Register,
    is_admin: bool,
) -> Result<Account> {
    create_account_as(store, ids, now, a, is_admin, Admission::default()).await
}

/// How a new account is let in (the server's registration mode).
#[derive(Debug, Default)]
pub struct Admission {
    /// Waits for an administrator's approval before it can log in.
    pub pending: bool,
    /// Consumes this invitation code (fails `invalid_invite` if it cannot be used).
    pub invite: Option<String>,
}

/// [`create_account`] with an admission rule.
pub async fn create_account_as(
    store: &Store,
    ids: &IdGenerator,
    now: i64,
    mut a: args::Register,
    is_admin: bool,
    admission: Admission,
) -> Result<Account> {
    // Stored and compared as people see them: fullwidth, mathematical and other
    // compatibility forms become their plain letters first.
    a.username = names::normalize(&a.username);
    a.alias = names::normalize(&a.alias);
    check_username(&a.username)?;
    check_alias(&a.alias)?;
    check_name("first_name", &a.first_name)?;
    check_name("last_name", &a.last_name)?;
    check_password(&a.password, &a.username, &a.alias)?;
    // Hashed before the names are looked up, so that a taken name is not answered faster
    // than a free one: the answer's timing does not tell which names exist.
    let password_hash = hash_password(a.password).await?;
    check_names_free(store, &a.username, &a.alias).await?;
    let user = NewUser {
        id: ids.next(now),
        password_hash,
        username: a.username,
        alias: a.alias,
        first_name: a.first_name,
        last_name: a.last_name,
        is_admin,
        created_at: now,
    };
    let invite = admission.invite.as_deref().map(session_token_hash);
    let stored = store
        .register_user(
            &user,
            !admission.pending,
            invite.as_deref().map(|h| (h, now)),
        )
        .await;
    match stored {
        Ok(()) => {}
        Err(crate::store::StoreError::InvalidInvite) => {
            return Err(ErrorBody::new(
                ErrorCode::InvalidInvite,
                "this invitation is unknown, already used or expired; ask an administrator \
                 for a new one",
            )
            .with_field("invite")
            .into())
        }
        // Lost a race with another registration of the same name.
        Err(e) if e.is_unique_violation() => {
            check_names_free(store, &user.username, &user.alias).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(username = %user.username, is_admin, "account created");
    Ok(Account {
        username: user.username,
        alias: user.alias,
        first_name: user.first_name,
        last_name: user.last_name,
        is_admin,
        status: Status::Offline,
        pending_approval: admission.pending,
    })
}

async fn check_names_free(store: &Store, username: &str, alias: &str) -> Result<()> {
    let clash = store.name_clash(username, alias).await?;
    let taken = |what: &str, mine: &str, theirs: &str| {
        if fold(mine) == fold(theirs) {
            format!("the {what} {mine:?} is already taken")
        } else {
            format!("the {what} {mine:?} looks too much like the existing name {theirs:?}")
        }
    };
    if let Some(theirs) = clash.username {
        return Err(ErrorBody::new(
            ErrorCode::UsernameTaken,
            taken("username", username, &theirs),
        )
        .with_field("username")
        .into());
    }
    if let Some(theirs) = clash.alias {
        return Err(
            ErrorBody::new(ErrorCode::AliasTaken, taken("alias", alias, &theirs))
                .with_field("alias")
                .into(),
        );
    }
    Ok(())
}

/// R5: a server always has an administrator. If none exists, creates `admin` with the
/// given password, or a generated one that is returned so that it can be shown once.
pub async fn ensure_first_admin(
    store: &Store,
    ids: &IdGenerator,
    now: i64,
    password: Option<String>,
) -> Result<Option<String>> {
    if store.admin_exists().await? {
        return Ok(None);
    }
    let generated = password.is_none();
    let password = password.unwrap_or_else(generate_password);
    create_account(
        store,
        ids,
        now,
        args::Register {
            username: "admin".into(),
            alias: "Administrator".into(),
            first_name: "Salon".into(),
            last_name: "Administrator".into(),
            password: password.clone(),
            invite: None,
        },
        true,
    )
    .await?;
    let entry = salon_proto::AuditEntry {
        ts: now,
        actor: "server".into(),
        action: salon_proto::AuditAction::CreateUser,
        target: "admin".into(),
        reason: "first administrator".into(),
    };
    store.audit(ids.next(now), &entry).await?;
    Ok(generated.then_some(password))
}

/// OWASP password storage cheat sheet: Argon2id, 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Hashing slots reserved for local sessions (the console, `salon admin` on the server's
/// machine), whatever remote clients keep busy.
const LOCAL_HASH_SLOTS: usize = 4;

/// A server's bound on password hashes waiting or running (`max_pending_password_hashes`).
/// The hashing threads are few; without a bound, a guessing flood from many addresses
/// queues for seconds ahead of every honest login. With it, a request that finds no slot
/// is refused at once (`rate_limited`, with the expected wait). Local sessions have slots
/// of their own.
#[derive(Debug)]
pub struct HashSlots {
    remote: std::sync::Arc<tokio::sync::Semaphore>,
    local: std::sync::Arc<tokio::sync::Semaphore>,
    max: usize,
}

/// A slot held while a request's hashing runs.
pub type HashSlot = tokio::sync::OwnedSemaphorePermit;

impl HashSlots {
    pub fn new(max: usize) -> HashSlots {
        HashSlots {
            remote: std::sync::Arc::new(tokio::sync::Semaphore::new(max)),
            local: std::sync::Arc::new(tokio::sync::Semaphore::new(LOCAL_HASH_SLOTS)),
            max,
        }
    }

    /// A slot now (a local session first tries its own), or how long the hashes ahead
    /// should take, in ms.
    pub fn try_acquire(&self, local: bool) -> Result<HashSlot, u64> {
        if local {
            if let Ok(slot) = self.local.clone().try_acquire_owned() {
                return Ok(slot);
            }
        }
        self.remote.clone().try_acquire_owned().map_err(|_| {
            let per_hash = HASH_MS.load(std::sync::atomic::Ordering::Relaxed).max(1);
            (self.max as u64 * per_hash / hashing_threads() as u64).max(50)
        })
    }
}

/// How long one hash took lately, in ms (a moving average; 20 until measured).
static HASH_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(20);

fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Argon2 runs on a fixed set of threads, one per core. Each hash takes 19 MiB and a core
/// for tens of milliseconds: unbounded (tokio's blocking pool), a login storm or an
/// attack would take memory without limit — the allocator keeps a 19 MiB arena on every
/// thread that ever hashed — and starve everything else. Here logins queue and the memory
/// stays at one arena per core. The queue is bounded too ([`HASH_QUEUE_MAX`]): callers
/// hold a [`HashSlot`] first, which bounds it already, but a job that finds it full
/// anyway is refused ([`HashError::Busy`]) rather than queued.
fn run_hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Result<T, HashError>> {
    static QUEUE: OnceLock<std::sync::mpsc::SyncSender<HashJob>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<HashJob>(HASH_QUEUE_MAX);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for n in 0..hashing_threads() {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("salon-argon2-{n}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return, // the sender is gone: the process is ending
                    }
                });
        }
        tx
    });
    let (done, result) = tokio::sync::oneshot::channel();
    let sent = queue.try_send(Box::new(move || {
        let started = std::time::Instant::now();
        let result = work();
        let took = started.elapsed().as_millis() as u64;
        let _ = HASH_MS.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |avg| Some((avg * 7 + took) / 8),
        );
        let _ = done.send(result);
    }));
    async move {
        sent.map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => HashError::Busy,
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                HashError::Failed("the hashing threads are gone".into())
            }
        })?;
        result
            .await
            .map_err(|_| HashError::Failed("a hashing thread failed".into()))
    }
}

/// Hashes a password (PHC string with its own random salt).
pub async fn hash_password(password: String) -> Result<String, HashError> {
    run_hashing(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError::Failed(e.to_string()))
    })
    .await?
}

/// Checks a password against a stored hash. With `None` (no such account) it checks
/// against a fixed dummy hash, so that the time taken does not reveal whether the account
/// exists (R3), and returns false.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, HashError> {
    run_hashing(move || {
        let (stored, real) = match &hash {
            Some(h) => (h.as_str(), true),
            None => (dummy_hash(), false),
        };
        let parsed = PasswordHash::new(stored).map_err(|e| HashError::Failed(e.to_string()))?;
        let ok = argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(b"salon-dummy-password-for-timing", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A random password for an administrator to hand over (20 letters and digits, about
/// 119 bits).
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new session token and the hash under which it is stored. The token is 256 random
/// bits, so a fast hash is enough (no guessing to slow down).
pub fn new_session_token() -> (String, String) {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let token = hex(&raw);
    let hash = session_token_hash(&token);
    (token, hash)
}

pub fn session_token_hash(token: &str) -> String {
    use blake2::{Blake2s256, Digest};
    hex(&Blake2s256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Failed(String),
    /// The queue of hashes waiting for a thread is full.
    #[error("too many password hashes are waiting")]
    Busy,
}

/// Hashing jobs waiting for a thread, at most, whatever `max_pending_password_hashes`
/// says: [`HashSlots`] admits that many (plus the local sessions' own) and this bounds
/// the queue itself, for a setting above it or a caller without a slot.
pub const HASH_QUEUE_MAX: usize = 1024;

fn field_error(code: ErrorCode, field: &str, message: String) -> ErrorBody {
    ErrorBody::new(code, message).with_field(field)
}

fn check_length(field: &str, value: &str, (min, max): (usize, usize)) -> Result<(), ErrorBody> {
    let n = value.chars().count();
    if n == 0 {
        return Err(field_error(
            ErrorCode::MissingField,
            field,
            format!("{field} is required"),
        ));
    }
    if n < min {
        return Err(field_error(
            ErrorCode::TooShort,
            field,
            format!("{field} must have at least {min} characters"),
        ));
    }
    if n > max {
        return Err(field_error(
            ErrorCode::TooLong,
            field,
            format!("{field} must have at most {max} characters"),
        ));
    }
    Ok(())
}

/// Username: 3–32 of ASCII letters, digits, `.`, `_`, `-`, starting with a letter or digit
/// (it is typed at login and used in commands, so it stays plain).
pub fn check_username(username: &str) -> Result<(), ErrorBody> {
    check_length("username", username, USERNAME_CHARS)?;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = username
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !username.chars().all(ok_char) {
        return Err(field_error(
            ErrorCode::InvalidCharacters,
            "username",
            "username may only contain letters a-z, digits, '.', '_' and '-', and must start \
             with a letter or digit"
                .into(),
        ));
    }
    Ok(())
}

/// Alias (display name): 2–32 characters; letters of any script, digits, spaces inside,
/// and `.`, `_`, `-`, `'`.
pub fn check_alias(alias: &str) -> Result<(), ErrorBody> {
    check_display("alias", alias, ALIAS_CHARS, |c| {
        c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-' | '\'')
    })?;
    names::check_visible("alias", alias)
}

/// First and last names: 1–64 characters; letters of any script, spaces inside, and
/// `-`, `'`, `.`.
pub fn check_name(field: &str, name: &str) -> Result<(), ErrorBody> {
    check_display(field, name, NAME_CHARS, |c| {
        c.is_alphabetic() || matches!(c, ' ' | '-' | '\'' | '.')
    })
}

/// Room and channel names: 2–48 characters; letters, digits, spaces inside, `-`, `_`, `.`.
pub fn check_room_name(name: &str) -> Result<(), ErrorBody> {
    check_display("name", name, ROOM_NAME_CHARS, |c| {
        c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')
    })?;
    names::check_visible("name", name)
}

fn check_display(
    field: &str,
    value: &str,
    bounds: (usize, usize),
    ok_char: impl Fn(char) -> bool,
) -> Result<(), ErrorBody> {
    check_length(field, value, bounds)?;
    if value.trim() != value || value.contains("  ") || !value.chars().all(ok_char) {
        return Err(field_error(
            ErrorCode::InvalidCharacters,
            field,
            format!(
                "{field} contains characters that are not allowed (or spaces at its ends or \
                 doubled)"
            ),
        ));
    }
    Ok(())
}

/// Passwords the originals' users would pick first, compared after lowercasing and
/// stripping trailing digits and symbols ("Password2024!" is "password").
const OBVIOUS: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "motdepasse",
    "azerty",
    "azertyuiop",
    "qwerty",
    "qwertyuiop",
    "qwertz",
    "azertyui",
    "qwertyui",
    "asdfghjk",
    "asdfghjkl",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome",
    "bienvenue",
    "bonjour",
    "soleil",
    "letmein",
    "trustno",
    "superman",
    "batman",
    "dragon",
    "monkey",
    "shadow",
    "master",
    "admin",
    "administrator",
    "administrateur",
    "changeme",
    "secret",
    "starwars",
    "whatever",
    "computer",
    "ordinateur",
    "internet",
    "salon",
    "chat",
    "abc",
    "abcd",
    "abcdef",
    "abcdefgh",
    "zaq",
    "qazwsx",
    "zaqxsw",
    "1q2w3e4r",
    "1qaz2wsx",
    "zaq12wsx",
    "loveme",
    "jesus",
    "freedom",
    "pokemon",
    "hello",
    "login",
    "root",
    "toor",
    "user",
    "test",
    "guest",
    "server",
    "serveur",
    "company",
    "entreprise",
    "general",
    "général",
];

/// Password: 8–128 characters, not an obvious one, not the username or alias.
pub fn check_password(password: &str, username: &str, alias: &str) -> Result<(), ErrorBody> {
    check_length("password", password, PASSWORD_CHARS)?;
    let weak = |why: &str| {
        Err(field_error(
            ErrorCode::WeakPassword,
            "password",
            format!("password is too easy to guess: {why}"),
        ))
    };
    let lower = password.to_lowercase();
    let stem = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    if OBVIOUS.contains(&lower.as_str()) || OBVIOUS.contains(&stem) {
        return weak("it is one of the most common passwords");
    }
    let first = lower.chars().next();
    if lower.chars().all(|c| Some(c) == first) {
        return weak("it repeats one character");
    }
    if is_run(&lower) {
        return weak("it is a simple sequence");
    }
    for (name, value) in [("username", username), ("alias", alias)] {
        let value = value.to_lowercase();
        if value.chars().count() >= 3 && lower.contains(&value) {
            return weak(&format!("it contains your {name}"));
        }
    }
    Ok(())
}

/// "12345678", "87654321", "abcdefgh": each character one step from the previous.
fn is_run(s: &str) -> bool {
    let codes: Vec<i64> = s.chars().map(|c| c as i64).collect();
    let step = |d: i64| codes.windows(2).all(|w| w[1] - w[0] == d);
    codes.len() > 2 && (step(1) || step(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), ErrorBody>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn usernames() {
        assert_eq!(code(check_username("alice")), None);
        assert_eq!(code(check_username("a.b-c_9")), None);
        assert_eq!(code(check_username("")), Some(ErrorCode::MissingField));
        assert_eq!(code(check_username("ab")), Some(ErrorCode::TooShort));
        assert_eq!(
            code(check_username(&"a".repeat(33))),
            Some(ErrorCode::TooLong)
        );
        assert_eq!(
            code(check_username("al ice")),
            Some(ErrorCode::InvalidCharacters)
        );
        assert_eq!(
            code(check_username("_alice")),
            Some(ErrorCode::InvalidCharacters)
        );
        assert_eq!(
            code(check_username("zoé")),
            Some(ErrorCode::InvalidCharacters)
        );
    }

    #[test]
    fn aliases_and_names_accept_accents_but_not_markup() {
        assert_eq!(code(check_alias("Zoé D'Arc")), None);
        assert_eq!(
            code(check_alias("<b>x</b>")),
            Some(ErrorCode::InvalidCharacters)
        );
        assert_eq!(
            code(check_alias(" Zoé")),
            Some(ErrorCode::InvalidCharacters)
        );
        assert_eq!(code(check_name("first_name", "Jean-Éric")), None);
        assert_eq!(
            code(check_name("last_name", "Dupont3")),
            Some(ErrorCode::InvalidCharacters)
        );
    }

    #[test]
    fn weak_passwords_are_refused() {
        for p in [
            "password",
            "Password2024!",
            "12345678",
            "azertyuiop",
            "aaaaaaaaaa",
            "abcdefghij",
            "alice-rocks-99",
            "motdepasse1",
        ] {
            assert_eq!(
                code(check_password(p, "alice", "Ali")),
                Some(ErrorCode::WeakPassword),
                "{p}"
            );
        }
        assert_eq!(
            code(check_password("short1", "alice", "Ali")),
            Some(ErrorCode::TooShort)
        );
        assert_eq!(
            code(check_password("correct horse battery", "alice", "Ali")),
            None
        );
    }

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse".into()).await.unwrap();
        let b = hash_password("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("correct horse".into(), Some(a.clone()))
            .await
            .unwrap());
        assert!(!verify_password("wrong horse".into(), Some(a))
            .await
            .unwrap());
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }
}
