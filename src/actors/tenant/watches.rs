//! A tenant's watches ("watch this path"): desired state held by the tenant actor alone, in
//! memory. Each is a counting-only rule with a deadline; every reconcile renders the live ones
//! into the desired firewall (and so drops the expired), and the actor schedules a reconcile
//! for each deadline. Lost with the actor (a restart, a new controller): the next reconcile then
//! removes the leftover chain like any other rule nobody asked for.

use super::super::CoreError;
use crate::policy::watch::{MAX_TTL, MAX_WATCHES, WatchPath, watch_rule};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// One watch as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchInfo {
    pub id: Uuid,
    pub path: WatchPath,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Watches {
    /// In creation order, each with its deadline.
    live: Vec<(WatchInfo, Instant)>,
}

impl Watches {
    /// Forgets the watches whose time is up; true if there were any.
    pub fn prune(&mut self, now: Instant) -> bool {
        let before = self.live.len();
        self.live.retain(|(_, until)| *until > now);
        self.live.len() != before
    }

    /// Some watch's time is up.
    pub fn due(&self, now: Instant) -> bool {
        self.live.iter().any(|(_, until)| *until <= now)
    }

    /// How long until the next watch's time is up (`None`: no watch).
    pub fn next(&self, now: Instant) -> Option<Duration> {
        self.live
            .iter()
            .map(|(_, until)| until.saturating_duration_since(now))
            .min()
    }

    /// A new watch for `ttl` (at most [`MAX_TTL`]); refused while [`MAX_WATCHES`] are live.
    pub fn add(
        &mut self,
        path: WatchPath,
        ttl: Duration,
        now: Instant,
    ) -> Result<WatchInfo, CoreError> {
        self.prune(now);
        if self.live.len() >= MAX_WATCHES {
            let next = self
                .live
                .iter()
                .map(|(_, until)| until.saturating_duration_since(now).as_secs() + 1)
                .min()
                .unwrap_or(0);
            return Err(CoreError::Conflict(format!(
                "an org has at most {MAX_WATCHES} watches at a time; the next one ends in {next} s"
            )));
        }
        let ttl = ttl.min(MAX_TTL);
        let created_at = Utc::now();
        let info = WatchInfo {
            id: Uuid::new_v4(),
            path,
            created_at,
            expires_at: created_at
                + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::zero()),
        };
        self.live.push((info.clone(), now + ttl));
        Ok(info)
    }

    pub fn list(&self) -> Vec<WatchInfo> {
        self.live.iter().map(|(w, _)| w.clone()).collect()
    }

    /// The counting rules of the live watches, in creation order.
    pub fn rules(&self) -> Vec<String> {
        self.live
            .iter()
            .map(|(w, _)| watch_rule(w.id, &w.path))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Protocol;
    use std::net::Ipv4Addr;

    #[test]
    fn three_at_a_time_each_until_its_deadline() {
        let path = WatchPath {
            src: Ipv4Addr::new(10, 100, 0, 2),
            dst: Ipv4Addr::new(10, 100, 0, 3),
            protocol: Protocol::Icmp,
            port: None,
        };
        let t0 = Instant::now();
        let mut w = Watches::default();
        let a = w.add(path, Duration::from_secs(10), t0).unwrap();
        w.add(path, Duration::from_secs(500), t0).unwrap();
        w.add(path, Duration::from_secs(30), t0).unwrap();
        let refused = w.add(path, Duration::from_secs(30), t0).unwrap_err();
        assert!(
            matches!(&refused, CoreError::Conflict(m) if m.contains("at most 3") && m.contains("in 11 s")),
            "{refused:?}"
        );
        assert_eq!(w.rules().len(), 3);
        assert!(w.rules()[0].contains(&a.id.to_string()), "creation order");
        // The first ends at 10 s; the second was capped at 120 s.
        assert!(!w.due(t0 + Duration::from_secs(9)));
        assert_eq!(
            w.next(t0 + Duration::from_secs(9)),
            Some(Duration::from_secs(1))
        );
        assert!(w.due(t0 + Duration::from_secs(10)));
        assert!(w.prune(t0 + Duration::from_secs(10)));
        assert_eq!(w.list().len(), 2);
        w.add(path, Duration::from_secs(1), t0 + Duration::from_secs(10))
            .unwrap();
        assert!(w.prune(t0 + Duration::from_secs(121)));
        assert!(w.list().is_empty() && w.rules().is_empty());
    }
}
