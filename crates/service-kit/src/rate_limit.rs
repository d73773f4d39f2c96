//! Per-client rate limits: governor's GCRA per client, a client being its
//! bearer token, or its address when the door takes no token, with a bound
//! on how many clients are remembered.

use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::Quota;
use settings::{env_or, env_parse, ConfigError};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most clients whose state is kept at once: about 5 MiB. Past it, new
/// clients share one state ([`Client::Others`]) until housekeeping has
/// forgotten those idle long enough to be as good as new, so a client that
/// sends from random addresses (an IPv6 network has plenty) cannot grow
/// the table without bound.
pub const MAX_CLIENTS: usize = 65_536;

/// How often the clients whose state is as good as new are forgotten.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// One door's limit as configured: requests a second per client, in bursts
/// of up to `burst` (by default as many as a second's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RateSettings {
    /// The rate of the variable `limit_var` and the burst of `burst_var`;
    /// `None` (no limit) when the rate is unset or empty.
    pub fn from_env(limit_var: &str, burst_var: &str) -> Result<Option<Self>, ConfigError> {
        if env_or(limit_var, "").trim().is_empty() {
            return Ok(None);
        }
        let per_second = positive(limit_var, env_parse(limit_var, 0)?)?;
        let burst = positive(burst_var, env_parse(burst_var, per_second.get())?)?;
        Ok(Some(RateSettings { per_second, burst }))
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

fn positive(name: &str, value: u32) -> Result<NonZeroU32, ConfigError> {
    NonZeroU32::new(value).ok_or_else(|| ConfigError {
        name: name.to_owned(),
        value: "0".to_owned(),
        reason: "must be at least 1 (leave it unset for no limit)".to_owned(),
    })
}

/// Who a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// The SHA-256 digest of an accepted bearer token.
    Token([u8; 32]),
    /// An IPv4 address, or the /64 network of an IPv6 one: one host, as a
    /// provider hands them out.
    Address(IpAddr),
    /// Every new client while [`MAX_CLIENTS`] are remembered.
    Others,
}

impl Client {
    pub fn address(ip: IpAddr) -> Client {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        };
        Client::Address(ip)
    }
}

/// A keyed rate limiter over a bounded table of clients.
pub struct RateLimiter {
    limiter: governor::RateLimiter<Client, Bounded, DefaultClock>,
    clock: DefaultClock,
    started: Instant,
    /// Milliseconds after `started` when housekeeping is next due.
    next_housekeeping: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RateLimiter({} clients)", self.limiter.len())
    }
}

impl RateLimiter {
    pub fn new(settings: RateSettings) -> Self {
        RateLimiter::with_capacity(settings, MAX_CLIENTS)
    }

    fn with_capacity(settings: RateSettings, max_clients: usize) -> Self {
        let clock = DefaultClock::default();
        let store = Bounded {
            clients: DashMapStateStore::default(),
            max_clients,
        };
        RateLimiter {
            limiter: governor::RateLimiter::new(settings.quota(), store, clock.clone()),
            clock,
            started: Instant::now(),
            next_housekeeping: AtomicU64::new(0),
        }
    }

    /// Counts one request of `client`: `Ok`, or how long until it may send
    /// the next one.
    pub fn check(&self, client: &Client) -> Result<(), Duration> {
        self.housekeeping();
        self.limiter
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets, at most once per [`HOUSEKEEPING_EVERY`], the clients whose
    /// state is as good as new; the request that finds it due does it.
    fn housekeeping(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let due = self.next_housekeeping.load(Ordering::Relaxed);
        let next = now + HOUSEKEEPING_EVERY.as_millis() as u64;
        if now >= due
            && self
                .next_housekeeping
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }
}

/// governor's DashMap store with a cap: a client not yet in a full table is
/// counted as [`Client::Others`]. governor has no bounded store; this one
/// only decides which key a request counts against, and leaves the state
/// itself to governor's.
struct Bounded {
    clients: DashMapStateStore<Client>,
    max_clients: usize,
}

impl StateStore for Bounded {
    type Key = Client;

    fn measure_and_replace<T, F, E>(&self, key: &Client, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let key = match self.clients.len() >= self.max_clients && !self.clients.contains_key(key) {
            true => &Client::Others,
            false => key,
        };
        self.clients.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<Client> for Bounded {
    fn retain_recent(&self, drop_below: Nanos) {
        self.clients.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.clients);
    }

    fn len(&self) -> usize {
        self.clients.len()
    }

    fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn settings(per_second: u32, burst: u32) -> RateSettings {
        RateSettings {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn address(i: u32) -> Client {
        Client::address(IpAddr::V4(Ipv4Addr::from(i)))
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_not_counted_with_it() {
        let limiter = RateLimiter::new(settings(1, 3));
        for _ in 0..3 {
            assert_eq!(limiter.check(&address(1)), Ok(()));
        }
        let wait = limiter.check(&address(1)).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limiter.check(&address(2)), Ok(()));
        assert_eq!(limiter.check(&Client::Token([7; 32])), Ok(()));
    }

    #[test]
    fn random_clients_cannot_grow_the_table_past_its_cap() {
        let limiter = RateLimiter::with_capacity(settings(1, 1), 100);
        for i in 0..10_000 {
            let _ = limiter.check(&address(i));
        }
        assert!(limiter.clients() <= 101, "{}", limiter.clients());
        // The newcomers shared one state: all but the first were refused.
        assert!(limiter.check(&address(20_000)).is_err());
        // Those already known keep their own.
        assert!(limiter.check(&address(0)).is_err());
    }

    #[test]
    fn an_ipv6_host_is_its_64_network_and_a_mapped_ipv4_is_the_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::address(a), Client::address(b));
        assert_ne!(Client::address(a), Client::address(other));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            Client::address(mapped),
            Client::address("192.0.2.1".parse().unwrap())
        );
    }
}
