//! Login rate limits, per client address and per account, over a sliding window of failures.
//!
//! A limited request is refused before any password is hashed. An attacker's address is limited
//! after a few failures; its refused attempts no longer count against the account, so the real
//! user can still log in from elsewhere. Only a spread-out attack (many addresses) reaches the
//! per-account limit. The clock is passed in, so the logic is tested without sleeping.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_address: usize,
    pub per_account: usize,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_address: 5,
            per_account: 20,
            window: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Default)]
struct Windows {
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
    by_account: HashMap<String, VecDeque<Instant>>,
}

pub struct LoginLimiter {
    limits: Limits,
    inner: Mutex<Windows>,
}

/// Drops failures older than the window; returns how long until the oldest one expires if
/// `limit` failures remain.
fn blocked(
    q: &mut VecDeque<Instant>,
    limit: usize,
    window: Duration,
    now: Instant,
) -> Option<Duration> {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
    (q.len() >= limit).then(|| window.saturating_sub(now.duration_since(q[q.len() - limit])))
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Windows::default()),
        }
    }

    /// `Err(retry_after)` if this attempt must be refused.
    pub fn check(&self, account: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let l = self.limits;
        let by_addr = w
            .by_address
            .get_mut(&address)
            .and_then(|q| blocked(q, l.per_address, l.window, now));
        let by_account = w
            .by_account
            .get_mut(&account.to_lowercase())
            .and_then(|q| blocked(q, l.per_account, l.window, now));
        match by_addr.max(by_account) {
            Some(wait) => Err(wait.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    pub fn failed(&self, account: &str, address: IpAddr, now: Instant) {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.by_address.entry(address).or_default().push_back(now);
        w.by_account
            .entry(account.to_lowercase())
            .or_default()
            .push_back(now);
        // Bound memory: forget windows that have expired entirely.
        if w.by_address.len() + w.by_account.len() > 100_000 {
            let window = self.limits.window;
            let fresh =
                |q: &VecDeque<Instant>| q.back().is_some_and(|t| now.duration_since(*t) < window);
            w.by_address.retain(|_, q| fresh(q));
            w.by_account.retain(|_, q| fresh(q));
        }
    }

    /// A successful login clears the account's and this address's failures.
    pub fn succeeded(&self, account: &str, address: IpAddr) {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.by_address.remove(&address);
        w.by_account.remove(&account.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn address_is_limited_after_n_failures_and_the_user_elsewhere_is_not() {
        let l = LoginLimiter::new(Limits::default());
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.check("Victim@x", ip(1), t0).is_ok(), "attempt {i}");
            l.failed("victim@x", ip(1), t0);
        }
        let wait = l.check("victim@x", ip(1), t0).unwrap_err();
        assert!(wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60));
        // Any account from that address is refused; the victim from another address is not.
        assert!(l.check("other@x", ip(1), t0).is_err());
        assert!(l.check("victim@x", ip(2), t0).is_ok());
    }

    #[test]
    fn window_slides() {
        let l = LoginLimiter::new(Limits {
            per_address: 2,
            per_account: 10,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        l.failed("a", ip(1), t0);
        l.failed("a", ip(1), t0 + Duration::from_secs(30));
        assert_eq!(
            l.check("a", ip(1), t0 + Duration::from_secs(40)),
            Err(Duration::from_secs(20))
        );
        assert!(l.check("a", ip(1), t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn spread_attack_reaches_the_account_limit_and_success_resets() {
        let l = LoginLimiter::new(Limits {
            per_address: 5,
            per_account: 4,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for i in 0..4 {
            l.failed("a", ip(i), t0);
        }
        assert!(
            l.check("a", ip(200), t0).is_err(),
            "account limited for every address"
        );
        l.succeeded("a", ip(9));
        assert!(l.check("a", ip(200), t0).is_ok());
    }
}
