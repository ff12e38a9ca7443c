//! Login rate limits, designed so that they cannot be turned against the account they protect.
//!
//! - **Per client** (an IPv4 address, or an IPv6 /64: one subscriber's whole network): after
//!   `per_client` failures within `window` the client is refused until the oldest failure ages out.
//! - **Per account**, the first `account_free` failures within `window` cost nothing; each further
//!   one makes the account wait a growing delay (`delay_first`, doubling, at most `delay_max`) before
//!   the next attempt from a client it does not know. A spread-out attack is slowed to a trickle,
//!   never turned into a lockout.
//! - **Known clients** skip the account-wide delay: a client (address or /64) that logged in to this
//!   account successfully within `remember`, or one that presents a session token we issued for
//!   this account's user. Their own failures still count against them per client.
//!
//! A limited request is refused before any password is hashed. An attempt is counted as a failure
//! the moment it is let through (under the same lock as the check), so a burst of parallel
//! requests cannot all pass before the first failure is recorded; a success clears the account's
//! failures and an attempt that ended in an internal error is refunded.

use super::window::Windows;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_client: usize,
    pub account_free: usize,
    pub delay_first: Duration,
    pub delay_max: Duration,
    pub window: Duration,
    pub remember: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_client: 5,
            account_free: 10,
            delay_first: Duration::from_secs(1),
            delay_max: Duration::from_secs(60),
            window: Duration::from_secs(15 * 60),
            remember: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Who a limit applies to: an IPv4 address, or the /64 an IPv6 address lies in (a subscriber
/// gets at least a /64, so counting per /128 would give an attacker 2^64 fresh addresses).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// Most known clients remembered per account.
const KNOWN_PER_ACCOUNT: usize = 32;

#[derive(Default)]
struct Account {
    /// No attempt from an unknown client before this.
    next_allowed: Option<Instant>,
    /// Clients that logged in to the account, with when they last did.
    known: HashMap<IpAddr, Instant>,
}

struct State {
    /// Failures per client, tagged with the account each was for.
    by_client: Windows<IpAddr, String>,
    by_account: Windows<String>,
    accounts: HashMap<String, Account>,
}

pub struct LoginLimiter {
    limits: Limits,
    inner: Mutex<State>,
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            inner: Mutex::new(State {
                by_client: Windows::new(limits.window),
                by_account: Windows::new(limits.window),
                accounts: HashMap::new(),
            }),
        }
    }

    /// The account-wide wait after `n` failures beyond the free ones.
    fn delay(&self, n: usize) -> Duration {
        let l = self.limits;
        let doublings = u32::try_from(n.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(30);
        l.delay_first
            .saturating_mul(1u32 << doublings)
            .min(l.delay_max)
    }

    /// Lets an attempt through, counting it as a failure at once, or `Err(retry_after)` if it
    /// must be refused. `has_session`: the client presented a session token of this account's
    /// user. Call [`Self::succeeded`] or [`Self::refund`] when it turns out otherwise.
    pub fn attempt(
        &self,
        account: &str,
        client: IpAddr,
        has_session: bool,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let l = self.limits;
        let client = client_key(client);
        if let Some(wait) = s.by_client.blocked(&client, l.per_client, now) {
            return Err(wait.max(Duration::from_secs(1)));
        }
        let known = has_session
            || s.accounts.get(account).is_some_and(|a| {
                a.known
                    .get(&client)
                    .is_some_and(|t| now.duration_since(*t) < l.remember)
            });
        let failures = s.by_account.count(&account.to_string(), now);
        let next = s.accounts.get(account).and_then(|a| a.next_allowed);
        if !known
            && failures >= l.account_free
            && let Some(next) = next.filter(|t| *t > now)
        {
            return Err((next - now).max(Duration::from_secs(1)));
        }
        s.by_client.push(client, now, account.to_string());
        s.by_account.push(account.to_string(), now, ());
        if failures + 1 > l.account_free {
            let wait = self.delay(failures + 1 - l.account_free);
            s.accounts
                .entry(account.to_string())
                .or_default()
                .next_allowed = Some(now + wait);
        }
        s.by_client.prune(50_000, now);
        s.by_account.prune(50_000, now);
        if s.accounts.len() > 50_000 {
            let remember = l.remember;
            s.accounts.retain(|_, a| {
                a.known.retain(|_, t| now.duration_since(*t) < remember);
                !a.known.is_empty() || a.next_allowed.is_some_and(|t| t > now)
            });
        }
        Ok(())
    }

    /// Takes back an attempt let through at `at` that could not be judged (database or hashing
    /// error): an outage must not lock users out.
    pub fn refund(&self, account: &str, client: IpAddr, at: Instant) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.by_client
            .remove(&client_key(client), at, |a| a == account);
        s.by_account.remove(&account.to_string(), at, |_| true);
        if s.by_account.count(&account.to_string(), at) < self.limits.account_free
            && let Some(a) = s.accounts.get_mut(account)
        {
            a.next_allowed = None;
        }
    }

    /// A successful login clears the account's failures, everywhere and from this client, and
    /// makes the client known to the account. The client keeps its failures for other accounts:
    /// logging in to one's own account must not reset an attack on someone else's.
    pub fn succeeded(&self, account: &str, client: IpAddr, now: Instant) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let client = client_key(client);
        s.by_client.retain(&client, |a| a != account);
        s.by_account.clear(&account.to_string());
        let a = s.accounts.entry(account.to_string()).or_default();
        a.next_allowed = None;
        a.known.insert(client, now);
        if a.known.len() > KNOWN_PER_ACCOUNT
            && let Some(oldest) = a.known.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
        {
            a.known.remove(&oldest);
        }
    }
}

/// Limits on `POST /auth/password` (each try costs an Argon2 verify): wrong current passwords per
/// session and per account within a window. Only holders of a session can try at all, so a hard
/// limit here locks out nobody from logging in.
pub struct ChangeLimiter {
    per_session: usize,
    per_account: usize,
    inner: Mutex<(Windows<uuid::Uuid>, Windows<uuid::Uuid>)>,
}

impl ChangeLimiter {
    pub fn new(per_session: usize, per_account: usize, window: Duration) -> Self {
        Self {
            per_session,
            per_account,
            inner: Mutex::new((Windows::new(window), Windows::new(window))),
        }
    }

    /// Lets a try through, counting it as a failure at once, or `Err(retry_after)`.
    pub fn attempt(
        &self,
        session: uuid::Uuid,
        user: uuid::Uuid,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let by_session = w.0.blocked(&session, self.per_session, now);
        let by_user = w.1.blocked(&user, self.per_account, now);
        if let Some(wait) = by_session.max(by_user) {
            return Err(wait.max(Duration::from_secs(1)));
        }
        w.0.push(session, now, ());
        w.1.push(user, now, ());
        w.0.prune(50_000, now);
        w.1.prune(50_000, now);
        Ok(())
    }

    /// Takes back a try that was right (or could not be judged).
    pub fn refund(&self, session: uuid::Uuid, user: uuid::Uuid, at: Instant) {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.0.remove(&session, at, |_| true);
        w.1.remove(&user, at, |_| true);
    }
}

impl Default for ChangeLimiter {
    fn default() -> Self {
        Self::new(5, 10, Duration::from_secs(15 * 60))
    }
}

#[cfg(test)]
mod tests;
