//! The tenant's short history: per-peer rx/tx bytes and per-rule packets/bytes, one sample per
//! slot (the counters period, 15 s by default) in [`Ring`]s of 30 min. Owned by the tenant
//! actor, in memory only, dropped with it; a series goes when its peer or rule goes.

use super::TenantStatus;
use super::ring::{Ring, SLOTS};
use crate::keys::PublicKey;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

/// Two counters of one thing (rx/tx bytes of a peer, packets/bytes of a rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// When this series' baseline was sampled.
    pub since: DateTime<Utc>,
    pub a: Ring,
    pub b: Ring,
}

impl Series {
    fn new(slot: u64, at: DateTime<Utc>, (a, b): (u64, u64)) -> Self {
        Series {
            since: at,
            a: Ring::new(slot, a),
            b: Ring::new(slot, b),
        }
    }

    fn record(&mut self, slot: u64, (a, b): (u64, u64)) {
        self.a.record(slot, a);
        self.b.record(slot, b);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// The slot length.
    pub step: Duration,
    /// The newest sample's slot and time.
    pub newest: Option<(u64, DateTime<Utc>)>,
    /// By peer key: rx, tx bytes.
    pub peers: BTreeMap<PublicKey, Series>,
    /// By rule (`default`, `established` or the policy id): packets, bytes.
    pub rules: BTreeMap<String, Series>,
}

/// Which rule a chain line is, by its comment: `default`, `established` or the policy id.
pub fn rule_key(rule: &str) -> Option<String> {
    let c = rule.split("--comment \"").nth(1)?.split('"').next()?;
    match c {
        crate::policy::render::DEFAULT_COMMENT => Some("default".into()),
        crate::policy::render::ESTABLISHED_COMMENT => Some("established".into()),
        c => Some(c.strip_prefix("mwg:")?.to_string()),
    }
}

impl History {
    /// Whether `now` falls in a slot not sampled yet.
    pub fn due(&self, now: DateTime<Utc>, step: Duration) -> bool {
        self.newest
            .is_none_or(|(slot, _)| slot_of(now, step) > slot || step != self.step)
    }

    /// Samples the status's numbers, at most once per slot. Rules are kept as they were when
    /// the observation has none (counters unread), never dropped for that.
    pub fn record(&mut self, now: DateTime<Utc>, step: Duration, s: &TenantStatus) {
        if step != self.step {
            *self = History {
                step,
                ..Default::default()
            };
        }
        if !self.due(now, step) {
            return;
        }
        let slot = slot_of(now, step);
        self.newest = Some((slot, now));
        sample(
            &mut self.peers,
            slot,
            now,
            s.peers.iter().map(|(k, p)| (*k, (p.rx_bytes, p.tx_bytes))),
        );
        if !s.rules.is_empty() {
            sample(
                &mut self.rules,
                slot,
                now,
                s.rules
                    .iter()
                    .filter_map(|r| Some((rule_key(&r.rule)?, (r.packets, r.bytes)))),
            );
        }
    }

    /// A series' two rings as values aligned to the newest sample (oldest first).
    pub fn values(&self, s: &Series) -> (Vec<u64>, Vec<u64>) {
        let until = self.newest.map_or(0, |(slot, _)| slot);
        (s.a.values(until), s.b.values(until))
    }

    /// When a value of `values` (aligned to the newest sample) was sampled.
    pub fn time_of(&self, values: usize, index: usize) -> Option<DateTime<Utc>> {
        let (_, at) = self.newest?;
        let back = values.checked_sub(index + 1)? as u32;
        Some(at - chrono::Duration::from_std(self.step * back).ok()?)
    }

    /// The newest time a series grew (`last_hit_at`), or since when it has not
    /// (`never_hit_since`: its start, or the window's when it is older than the window).
    pub fn hits(
        &self,
        s: &Series,
        values: &[u64],
    ) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        if let Some(i) = values.iter().rposition(|&v| v > 0) {
            return (self.time_of(values.len(), i), None);
        }
        let window = self.newest.and_then(|(_, at)| {
            Some(at - chrono::Duration::from_std(self.step * SLOTS as u32).ok()?)
        });
        (None, Some(window.map_or(s.since, |w| w.max(s.since))))
    }
}

fn slot_of(now: DateTime<Utc>, step: Duration) -> u64 {
    let ms = step.as_millis().max(1) as i64;
    (now.timestamp_millis().max(0) / ms) as u64
}

/// Records each present series and drops the ones no longer present.
fn sample<K: Ord + Clone>(
    map: &mut BTreeMap<K, Series>,
    slot: u64,
    at: DateTime<Utc>,
    now: impl Iterator<Item = (K, (u64, u64))>,
) {
    let mut seen = std::collections::BTreeSet::new();
    for (key, counters) in now {
        match map.get_mut(&key) {
            Some(s) => s.record(slot, counters),
            None => {
                map.insert(key.clone(), Series::new(slot, at, counters));
            }
        }
        seen.insert(key);
    }
    map.retain(|k, _| seen.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{PeerObserved, RuleObserved};

    fn status(peers: &[(u8, u64)], rules: &[(&str, u64)]) -> TenantStatus {
        TenantStatus {
            kid: 1,
            netns: "n".into(),
            device: "d".into(),
            observed_at: Utc::now(),
            up: true,
            listen_port: 1,
            public_key: None,
            daemon_pid: None,
            netns_inode: None,
            peers: peers
                .iter()
                .map(|&(k, rx)| {
                    let p = PeerObserved {
                        allowed_ips: Default::default(),
                        endpoint: None,
                        last_handshake: None,
                        rx_bytes: rx,
                        tx_bytes: rx * 2,
                    };
                    (PublicKey::from_bytes([k; 32]), p)
                })
                .collect(),
            rules: rules
                .iter()
                .map(|&(c, n)| RuleObserved {
                    rule: format!("-A MWG-ACL -m comment --comment \"mwg:{c}\" -j ACCEPT"),
                    packets: n,
                    bytes: n * 100,
                })
                .collect(),
            last_error: None,
            generation: 0,
            checks: vec![],
            failed_at: Default::default(),
            history: Default::default(),
        }
    }

    #[test]
    fn samples_once_per_slot_drops_gone_series_and_keeps_rules_when_unread() {
        let step = Duration::from_secs(15);
        let t0 = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut h = History::default();
        h.record(
            at(0),
            step,
            &status(&[(1, 100), (2, 0)], &[("p1", 5), ("default", 0)]),
        );
        // Within the same slot: not sampled again.
        assert!(!h.due(at(10), step));
        h.record(at(10), step, &status(&[(1, 999), (2, 0)], &[("p1", 999)]));
        h.record(
            at(15),
            step,
            &status(&[(1, 300)], &[("p1", 8), ("default", 0)]),
        );
        assert_eq!(h.peers.len(), 1, "peer 2 is gone");
        let s1 = &h.peers[&PublicKey::from_bytes([1; 32])];
        assert_eq!(h.values(s1), (vec![200], vec![400]));
        // Counters unread (no rules): the rule series stay, with nothing counted.
        h.record(at(30), step, &status(&[(1, 300)], &[]));
        let p1 = &h.rules["p1"];
        let (packets, _) = h.values(p1);
        assert_eq!(packets, vec![3, 0]);
        assert_eq!(h.hits(p1, &packets), (Some(at(15)), None));
        let d = &h.rules["default"];
        let (zeros, _) = h.values(d);
        assert_eq!(h.hits(d, &zeros), (None, Some(at(0))));
        // A rule that goes from the chain goes from the history.
        h.record(at(45), step, &status(&[(1, 300)], &[("default", 1)]));
        assert!(!h.rules.contains_key("p1"));
        assert_eq!(
            rule_key("-A X -m comment --comment \"mwg:established\" -j ACCEPT").as_deref(),
            Some("established")
        );
    }
}
