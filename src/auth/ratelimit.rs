//! Login rate limits, per client address and per account, over a sliding window of failures.
//!
//! A limited request is refused before any password is hashed. An attempt is counted as a failure
//! the moment it is let through (under the same lock as the check), so a burst of parallel
//! requests cannot all pass the check before the first failure is recorded; a success clears the
//! count and an attempt that ended in an internal error is refunded. An attacker's address is
//! limited after a few failures; its refused attempts no longer count against the account, so the real
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
    /// Failures from an address, with the account each was for.
    by_address: HashMap<IpAddr, VecDeque<(Instant, String)>>,
    by_account: HashMap<String, VecDeque<(Instant, ())>>,
}

pub struct LoginLimiter {
    limits: Limits,
    inner: Mutex<Windows>,
}

/// Drops failures older than the window; returns how long until the oldest one expires if
/// `limit` failures remain.
fn blocked<T>(
    q: &mut VecDeque<(Instant, T)>,
    limit: usize,
    window: Duration,
    now: Instant,
) -> Option<Duration> {
    while q
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) >= window)
    {
        q.pop_front();
    }
    (q.len() >= limit).then(|| window.saturating_sub(now.duration_since(q[q.len() - limit].0)))
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Windows::default()),
        }
    }

    /// Lets an attempt through, counting it as a failure at once, or `Err(retry_after)` if it
    /// must be refused. Call [`Self::succeeded`] or [`Self::refund`] when it turns out otherwise.
    pub fn attempt(&self, account: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let l = self.limits;
        let account = account.to_lowercase();
        let by_addr = w
            .by_address
            .get_mut(&address)
            .and_then(|q| blocked(q, l.per_address, l.window, now));
        let by_account = w
            .by_account
            .get_mut(&account)
            .and_then(|q| blocked(q, l.per_account, l.window, now));
        if let Some(wait) = by_addr.max(by_account) {
            return Err(wait.max(Duration::from_secs(1)));
        }
        w.by_address
            .entry(address)
            .or_default()
            .push_back((now, account.clone()));
        w.by_account
            .entry(account)
            .or_default()
            .push_back((now, ()));
        // Bound memory: forget windows that have expired entirely.
        if w.by_address.len() + w.by_account.len() > 100_000 {
            let window = l.window;
            let fresh = |t: Option<&Instant>| t.is_some_and(|t| now.duration_since(*t) < window);
            w.by_address.retain(|_, q| fresh(q.back().map(|(t, _)| t)));
            w.by_account.retain(|_, q| fresh(q.back().map(|(t, _)| t)));
        }
        Ok(())
    }

    /// Takes back an attempt let through at `at` that could not be judged (database or hashing
    /// error): an outage must not lock users out.
    pub fn refund(&self, account: &str, address: IpAddr, at: Instant) {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let account = account.to_lowercase();
        if let Some(q) = w.by_address.get_mut(&address)
            && let Some(i) = q.iter().rposition(|(t, a)| *t == at && *a == account)
        {
            q.remove(i);
        }
        if let Some(q) = w.by_account.get_mut(&account)
            && let Some(i) = q.iter().rposition(|(t, _)| *t == at)
        {
            q.remove(i);
        }
    }

    /// A successful login clears the account's failures, everywhere and from this address. The
    /// address keeps its failures for other accounts: logging in to one's own account must not
    /// reset an attack on someone else's.
    pub fn succeeded(&self, account: &str, address: IpAddr) {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let account = account.to_lowercase();
        if let Some(q) = w.by_address.get_mut(&address) {
            q.retain(|(_, a)| *a != account);
        }
        w.by_account.remove(&account);
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
            assert!(l.attempt("Victim@x", ip(1), t0).is_ok(), "attempt {i}");
        }
        let wait = l.attempt("victim@x", ip(1), t0).unwrap_err();
        assert!(wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60));
        // Any account from that address is refused; the victim from another address is not.
        assert!(l.attempt("other@x", ip(1), t0).is_err());
        assert!(l.attempt("victim@x", ip(2), t0).is_ok());
    }

    #[test]
    fn parallel_attempts_cannot_all_pass_before_a_failure_is_recorded() {
        // Nothing is reported back between the attempts, as with requests still hashing.
        let l = LoginLimiter::new(Limits::default());
        let t0 = Instant::now();
        let passed = (0..50)
            .filter(|_| l.attempt("a", ip(1), t0).is_ok())
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn window_slides() {
        let l = LoginLimiter::new(Limits {
            per_address: 2,
            per_account: 10,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        assert!(l.attempt("a", ip(1), t0).is_ok());
        assert!(l.attempt("a", ip(1), t0 + Duration::from_secs(30)).is_ok());
        assert_eq!(
            l.attempt("a", ip(1), t0 + Duration::from_secs(40)),
            Err(Duration::from_secs(20))
        );
        assert!(l.attempt("a", ip(1), t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn refunded_attempts_do_not_count() {
        let l = LoginLimiter::new(Limits {
            per_address: 2,
            per_account: 10,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for i in 0..10 {
            let at = t0 + Duration::from_secs(i);
            assert!(l.attempt("a", ip(1), at).is_ok(), "attempt {i}");
            l.refund("A", ip(1), at);
        }
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
            assert!(l.attempt("a", ip(i), t0).is_ok());
        }
        assert!(
            l.attempt("a", ip(200), t0).is_err(),
            "account limited for every address"
        );
        l.succeeded("a", ip(9));
        assert!(l.attempt("a", ip(200), t0).is_ok());
    }

    #[test]
    fn own_success_does_not_reset_failures_against_another_account() {
        let l = LoginLimiter::new(Limits {
            per_address: 3,
            per_account: 10,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(l.attempt("victim", ip(1), t0).is_ok());
        }
        assert!(l.attempt("mine", ip(1), t0).is_ok());
        l.succeeded("mine", ip(1));
        assert!(l.attempt("victim", ip(1), t0).is_ok());
        assert!(
            l.attempt("victim", ip(1), t0).is_err(),
            "3 failures on victim"
        );
    }
}
