//! Admission: the connection limits every accepted socket passes before anything is read,
//! `max_connections` for the server and `max_connections_per_address` per address: an
//! IPv4 address or an IPv6 /64, the block one subscriber (or one rented server) gets
//! whole, so that one machine cannot take every place with addresses of its own block.
//! A [`Permit`] is a connection's place, held for its whole life.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::lock;
use crate::throttle::network_of;

/// Refused connections lingering at once; beyond that they are closed at once.
const REFUSALS_IN_FLIGHT: usize = 256;

/// The connection limits: `max_connections` for the whole server and
/// `max_connections_per_address` for each IP address (except the exempt ones).
pub struct Admission {
    total: Arc<Semaphore>,
    /// Open connections per address (IPv6: per /64, [`network_of`]); an address leaves
    /// the map with its last connection, so it holds at most `max_connections` entries.
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
    exempt: Vec<IpAddr>,
    /// Refused connections still lingering (see [`super::REFUSAL_LINGER`]).
    pub(super) refusals: Arc<Semaphore>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds `max_connections`.
    Server,
    /// The client's address holds `max_connections_per_address`.
    Address,
}

/// A connection's place, held for its whole life; dropping it frees the place.
pub struct Permit {
    _total: OwnedSemaphorePermit,
    /// The address counted, unless exempt.
    address: Option<IpAddr>,
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(address) = self.address {
            let mut map = lock(&self.admission.per_address);
            if let Some(n) = map.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&address);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(limits: &crate::Limits) -> Arc<Admission> {
        Arc::new(Admission {
            total: Arc::new(Semaphore::new(limits.max_connections)),
            per_address: Mutex::new(HashMap::new()),
            max_per_address: limits.max_connections_per_address,
            exempt: limits
                .connection_limit_exempt
                .iter()
                .map(|a| a.to_canonical())
                .collect(),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
        })
    }

    /// Takes a place for a connection from `address`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Permit, Refused> {
        let address = address.to_canonical();
        // Exempt addresses are exact (a proxy's); the others count by network.
        let counted = !self.exempt.contains(&address);
        let address = network_of(address);
        // The address first: a flood from one address must not take the server's places.
        if counted {
            let mut map = lock(&self.per_address);
            let n = map.entry(address).or_insert(0);
            if *n >= self.max_per_address {
                return Err(Refused::Address);
            }
            *n += 1;
        }
        // From here on, dropping the permit (or this guard) gives the address's place back.
        let total = match self.total.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if counted {
                    let mut map = lock(&self.per_address);
                    if let Some(n) = map.get_mut(&address) {
                        *n -= 1;
                        if *n == 0 {
                            map.remove(&address);
                        }
                    }
                }
                return Err(Refused::Server);
            }
        };
        Ok(Permit {
            _total: total,
            address: counted.then_some(address),
            admission: self.clone(),
        })
    }

    pub(super) fn refusal_message(&self, why: Refused) -> String {
        match why {
            Refused::Server => {
                "the server has reached its connection limit; try again later".to_owned()
            }
            Refused::Address => format!(
                "too many connections from your address (at most {}); close some and try again",
                self.max_per_address
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_address_limit_counts_each_address_and_spares_the_exempt() {
        let limits = crate::Limits {
            max_connections: 5,
            max_connections_per_address: 2,
            connection_limit_exempt: vec!["10.0.0.5".parse().unwrap()],
            ..crate::Limits::default()
        };
        let admission = Admission::new(&limits);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refused::Address));
        drop(first);
        let _third = admission.admit(a).unwrap();
        let _b = admission.admit(b).unwrap();
        let _p1 = admission.admit(proxy).unwrap();
        let _p2 = admission.admit(proxy).unwrap();
        assert_eq!(admission.admit(proxy).err(), Some(Refused::Server));
        assert_eq!(lock(&admission.per_address).len(), 2, "exempt not counted");
    }

    #[test]
    fn addresses_of_one_ipv6_64_count_together() {
        let limits = crate::Limits {
            max_connections: 10,
            max_connections_per_address: 2,
            ..crate::Limits::default()
        };
        let admission = Admission::new(&limits);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _one = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        let _two = admission.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8:1:2:abcd:1:2:3")).err(),
            Some(Refused::Address),
            "a third address of the same /64"
        );
        // Another /64, and IPv4 addresses (each its own), are not concerned.
        let _other = admission.admit(ip("2001:db8:1:3::1")).unwrap();
        let _v4 = admission.admit(ip("192.0.2.1")).unwrap();
        let _v4b = admission.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(lock(&admission.per_address).len(), 4);
    }
}
