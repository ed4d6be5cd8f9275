//! Password-guessing throttles (OWASP Authentication Cheat Sheet: progressive delays
//! rather than lockout, per account and per source). Every password check a client can
//! ask for (`login`, `change_password`) goes through [`Throttle::begin`] before any
//! hashing.
//!
//! The scheme, for one account (an account id; a login naming no account is keyed by
//! what it names, so that the answers never tell whether an account exists):
//!
//! - **Per account and source** (a source is an IPv4 address or an IPv6 /64): the first
//!   `login_failures_before_delay` failed attempts are free; each further attempt must
//!   wait 1 s, then 2 s, 4 s… after the previous one, up to `login_delay_max_secs`. A
//!   success from that source forgets its failures; so does an hour without attempts.
//!   Someone guessing from one address slows only themselves.
//! - **Per account, all sources together**: at most `login_failures_per_hour_per_account`
//!   unsuccessful checks an hour (a bucket that refills continuously). When it is empty,
//!   only sources *trusted* for the account are still checked: those it logged in from
//!   (password or session token) within `session_ttl_hours`. So a distributed guessing
//!   run checks at most that many passwords an hour whatever its number of addresses,
//!   while the owner, from a device they have used, is never refused because others
//!   failed. An untrusted source is then told when the bucket has room again: a delay,
//!   not a lock (and only while failures exceed the ceiling, which honest use never
//!   approaches: NIST SP 800-63B allows 100).
//! - **Local sources** (the server console, and TCP from 127.0.0.1 or ::1, where
//!   `salon admin` on the server's machine comes from) have an account ceiling of their
//!   own: remote guessing never delays them.
//!
//! An attempt counts as failed from the moment it is let through, and is given back if
//! the password turns out right (or was never checked): concurrent attempts cannot pass
//! the limits together. All state is in memory, bounded (`MAX_ENTRIES` per map, the
//! oldest forgotten first), and lost at restart.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use salon_proto::Transport;

/// Entries kept per map at most (failing pairs, account buckets, trusted sources).
const MAX_ENTRIES: usize = 100_000;
/// The first delay after the free failures; each next one doubles.
const FIRST_DELAY_MS: i64 = 1_000;
/// A pair's failures are forgotten this long after its last attempt.
const PAIR_MEMORY_MS: i64 = 3_600_000;
const HOUR_MS: f64 = 3_600_000.0;

/// Whose password is being guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKey {
    Id(i64),
    /// A login naming no account: a keyed hash of its folded form (bounded memory,
    /// whatever its length).
    Unknown(u64),
}

/// Where guesses come from: an IPv4 address or an IPv6 /64 (one subscriber's block),
/// and whether that is the server's own machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    net: u128,
    pub local: bool,
}

impl Source {
    /// `transport` is the session's (`local` for the console).
    pub fn of(peer: SocketAddr, transport: Transport) -> Source {
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let net = match ip {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
        };
        let loopback_host = match ip {
            IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
            IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
        };
        // WebSocket connections are not local even from 127.0.0.1: a reverse proxy on
        // the machine would make every web client look local.
        let local = transport == Transport::Local || (transport == Transport::Tcp && loopback_host);
        Source { net, local }
    }
}

/// The address a limit applies to: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's block: an attacker gets a whole one for free).
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// The throttle's settings (from `Limits`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub free_failures: u32,
    pub max_delay_ms: i64,
    pub failures_per_hour: u32,
    pub trust_ms: i64,
}

/// Failures of one account from one source.
#[derive(Debug, Clone, Copy)]
struct Pair {
    failures: u32,
    last: i64,
}

/// Unsuccessful checks an account may still take (refills continuously).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: i64,
}

#[derive(Debug, Default)]
struct Inner {
    pairs: HashMap<(AccountKey, Source), Pair>,
    buckets: HashMap<(AccountKey, bool), Bucket>,
    /// When each account last logged in from each source.
    trusted: HashMap<(i64, Source), i64>,
}

/// Why an attempt is not let through, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This source failed too often for this account.
    Source { retry_after_ms: u64 },
    /// The account's hourly ceiling is spent and the source is not trusted for it.
    Account { retry_after_ms: u64 },
}

impl Refusal {
    pub fn retry_after_ms(self) -> u64 {
        match self {
            Refusal::Source { retry_after_ms } | Refusal::Account { retry_after_ms } => {
                retry_after_ms
            }
        }
    }
}

/// A check let through; counted as failed until [`Throttle::succeeded`] or
/// [`Throttle::cancel`] says otherwise.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Attempt {
    account: AccountKey,
    source: Source,
    /// Whether it took one of the account's checks (a trusted source past the ceiling
    /// takes none).
    took: bool,
}

#[derive(Debug)]
pub struct Throttle {
    settings: Settings,
    inner: Mutex<Inner>,
    hasher: std::collections::hash_map::RandomState,
}

impl Throttle {
    pub fn new(settings: Settings) -> Throttle {
        Throttle {
            settings,
            inner: Mutex::default(),
            hasher: Default::default(),
        }
    }

    /// The key of a login naming no account.
    pub fn unknown(&self, folded_login: &str) -> AccountKey {
        AccountKey::Unknown(self.hasher.hash_one(folded_login))
    }

    fn delay_ms(&self, over: u32) -> i64 {
        // over >= 1: 1 s, 2 s, 4 s…, capped.
        let doubling = over.saturating_sub(1).min(40);
        FIRST_DELAY_MS
            .saturating_mul(1_i64 << doubling)
            .min(self.settings.max_delay_ms)
    }

    fn refill(&self, bucket: &mut Bucket, now: i64) {
        let cap = f64::from(self.settings.failures_per_hour);
        let elapsed = (now - bucket.at).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * cap / HOUR_MS).min(cap);
        bucket.at = now;
    }

    /// Lets a password check through, or says how long to wait.
    pub fn begin(&self, account: AccountKey, source: Source, now: i64) -> Result<Attempt, Refusal> {
        let mut inner = crate::lock(&self.inner);
        let inner = &mut *inner;
        let free = self.settings.free_failures;
        let pair = inner
            .pairs
            .get(&(account, source))
            .copied()
            .filter(|p| now - p.last < PAIR_MEMORY_MS);
        if let Some(pair) = pair {
            if pair.failures >= free {
                let allowed_at = pair.last + self.delay_ms(pair.failures - free + 1);
                if now < allowed_at {
                    return Err(Refusal::Source {
                        retry_after_ms: (allowed_at - now) as u64,
                    });
                }
            }
        }
        let trusted = match account {
            AccountKey::Id(id) => inner
                .trusted
                .get(&(id, source))
                .is_some_and(|at| now - at <= self.settings.trust_ms),
            AccountKey::Unknown(_) => false,
        };
        let cap = f64::from(self.settings.failures_per_hour);
        let mut bucket = inner
            .buckets
            .get(&(account, source.local))
            .copied()
            .unwrap_or(Bucket {
                tokens: cap,
                at: now,
            });
        self.refill(&mut bucket, now);
        if bucket.tokens < 1.0 && !trusted {
            let missing = 1.0 - bucket.tokens;
            return Err(Refusal::Account {
                retry_after_ms: (missing * HOUR_MS / cap).ceil().max(1.0) as u64,
            });
        }
        let took = bucket.tokens >= 1.0;
        if took {
            bucket.tokens -= 1.0;
        }
        insert_bounded(&mut inner.buckets, (account, source.local), bucket, |b| {
            b.at
        });
        let pair = pair.map_or(
            Pair {
                failures: 1,
                last: now,
            },
            |p| Pair {
                failures: p.failures.saturating_add(1),
                last: now,
            },
        );
        insert_bounded(&mut inner.pairs, (account, source), pair, |p| p.last);
        Ok(Attempt {
            account,
            source,
            took,
        })
    }

    /// The check was not made after all (no hashing slot): it does not count.
    pub fn cancel(&self, attempt: Attempt, now: i64) {
        let mut inner = crate::lock(&self.inner);
        if let Some(pair) = inner.pairs.get_mut(&(attempt.account, attempt.source)) {
            pair.failures = pair.failures.saturating_sub(1);
        }
        self.give_back(&mut inner, attempt, now);
    }

    /// The password was right: the source's failures are forgotten, the account's
    /// ceiling gets its check back, and the source becomes trusted for the account.
    pub fn succeeded(&self, attempt: Attempt, now: i64) {
        let mut inner = crate::lock(&self.inner);
        inner.pairs.remove(&(attempt.account, attempt.source));
        self.give_back(&mut inner, attempt, now);
        if let AccountKey::Id(id) = attempt.account {
            insert_bounded(&mut inner.trusted, (id, attempt.source), now, |at| *at);
        }
    }

    /// A login by session token: the source is trusted for the account.
    pub fn trust(&self, account: i64, source: Source, now: i64) {
        let mut inner = crate::lock(&self.inner);
        insert_bounded(&mut inner.trusted, (account, source), now, |at| *at);
    }

    fn give_back(&self, inner: &mut Inner, attempt: Attempt, now: i64) {
        if !attempt.took {
            return;
        }
        let cap = f64::from(self.settings.failures_per_hour);
        if let Some(bucket) = inner
            .buckets
            .get_mut(&(attempt.account, attempt.source.local))
        {
            let mut b = *bucket;
            self.refill(&mut b, now);
            b.tokens = (b.tokens + 1.0).min(cap);
            *bucket = b;
        }
    }

    /// Forgets what no longer matters: pairs quiet for an hour, full buckets, old trust.
    pub fn prune(&self, now: i64) {
        let mut inner = crate::lock(&self.inner);
        let inner = &mut *inner;
        inner.pairs.retain(|_, p| now - p.last < PAIR_MEMORY_MS);
        let cap = f64::from(self.settings.failures_per_hour);
        let rate = cap / HOUR_MS;
        inner
            .buckets
            .retain(|_, b| b.tokens + (now - b.at).max(0) as f64 * rate < cap);
        let trust = self.settings.trust_ms;
        inner.trusted.retain(|_, at| now - *at <= trust);
    }
}

/// Inserts, first making room if the map is full: the oldest tenth (by `time`) goes.
fn insert_bounded<K: Eq + Hash + Copy, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    time: impl Fn(&V) -> i64,
) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
        let mut times: Vec<i64> = map.values().map(&time).collect();
        let cut = times.len() / 10;
        let (_, threshold, _) = times.select_nth_unstable(cut);
        let threshold = *threshold;
        map.retain(|_, v| time(v) > threshold);
    }
    map.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(free: u32, per_hour: u32) -> Throttle {
        Throttle::new(Settings {
            free_failures: free,
            max_delay_ms: 60_000,
            failures_per_hour: per_hour,
            trust_ms: 3_600_000,
        })
    }

    fn src(last: u8) -> Source {
        Source::of(SocketAddr::from(([192, 0, 2, last], 4000)), Transport::Tcp)
    }

    #[test]
    fn a_source_gets_its_free_failures_then_doubling_delays() {
        let t = throttle(3, 1000);
        let a = AccountKey::Id(1);
        for _ in 0..3 {
            let _ = t.begin(a, src(1), 0).unwrap();
        }
        assert_eq!(
            t.begin(a, src(1), 0).unwrap_err(),
            Refusal::Source {
                retry_after_ms: 1000
            }
        );
        let _ = t.begin(a, src(1), 1000).unwrap();
        assert_eq!(
            t.begin(a, src(1), 2000).unwrap_err(),
            Refusal::Source {
                retry_after_ms: 1000
            }
        );
        let _ = t.begin(a, src(1), 3000).unwrap();
        assert_eq!(t.begin(a, src(1), 3000).unwrap_err().retry_after_ms(), 4000);
        // Another source is not affected, nor another account.
        let _ = t.begin(a, src(2), 3000).unwrap();
        let _ = t.begin(AccountKey::Id(2), src(1), 3000).unwrap();
        // The delay is capped.
        for n in 0..20 {
            let now = 10_000_000 + n * 60_000;
            let _ = t.begin(a, src(3), now);
        }
        let left = t.begin(a, src(3), 10_000_000 + 19 * 60_000).unwrap_err();
        assert_eq!(left.retry_after_ms(), 60_000);
    }

    #[test]
    fn the_account_ceiling_spares_trusted_sources_and_refills() {
        let t = throttle(100, 10);
        let a = AccountKey::Id(7);
        let owner = src(200);
        let ok = t.begin(a, owner, 0).unwrap();
        t.succeeded(ok, 0);
        for n in 0..10 {
            let _ = t.begin(a, src(n), 0).unwrap();
        }
        // Spent: new sources wait, the owner's known source does not.
        let refused = t.begin(a, src(50), 0).unwrap_err();
        assert!(
            matches!(refused, Refusal::Account { retry_after_ms } if retry_after_ms == 360_000)
        );
        let ok = t.begin(a, owner, 0).unwrap();
        t.succeeded(ok, 0);
        // The owner's success gives back nothing it did not take.
        assert!(t.begin(a, src(51), 0).is_err());
        // Six minutes give one check back.
        let _ = t.begin(a, src(51), 360_000).unwrap();
        assert!(t.begin(a, src(52), 360_000).is_err());
        // Local sources have their own ceiling.
        let local = Source::of(SocketAddr::from(([127, 0, 0, 1], 1)), Transport::Tcp);
        assert!(local.local);
        let _ = t.begin(a, local, 360_000).unwrap();
    }

    #[test]
    fn cancelled_attempts_do_not_count() {
        let t = throttle(1, 1);
        let a = AccountKey::Id(1);
        let attempt = t.begin(a, src(1), 0).unwrap();
        t.cancel(attempt, 0);
        let _ = t.begin(a, src(1), 0).unwrap();
        assert!(t.begin(a, src(1), 0).is_err());
    }

    #[test]
    fn sources_are_addresses_and_ipv6_blocks() {
        let v6 = |s: &str| Source::of(SocketAddr::new(s.parse().unwrap(), 1), Transport::Tcp);
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::ffff:1"));
        assert_ne!(v6("2001:db8::1"), v6("2001:db8:0:1::1"));
        assert_eq!(v6("::ffff:192.0.2.1"), src(1));
        assert!(v6("::1").local);
        assert!(!Source::of(SocketAddr::from(([127, 0, 0, 1], 1)), Transport::Websocket).local);
        assert!(!Source::of(SocketAddr::from(([127, 0, 0, 2], 1)), Transport::Tcp).local);
        assert!(Source::of(SocketAddr::from(([127, 0, 0, 1], 0)), Transport::Local).local);
    }

    #[test]
    fn maps_stay_bounded() {
        let mut map = HashMap::new();
        for n in 0..(MAX_ENTRIES as i64 + 10) {
            insert_bounded(&mut map, n, n, |v| *v);
        }
        assert!(map.len() <= MAX_ENTRIES);
        assert!(map.contains_key(&(MAX_ENTRIES as i64 + 9)));
    }
}
