//! Sliding windows of failures, keyed by whoever failed; the building block of the rate limits.
//! The clock is passed in, so the limits are tested without sleeping.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Failures per key within `window`, each tagged with a `T` (what it was about).
pub struct Windows<K, T = ()> {
    window: Duration,
    by_key: HashMap<K, VecDeque<(Instant, T)>>,
}

impl<K: Hash + Eq + Clone, T> Windows<K, T> {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            by_key: HashMap::new(),
        }
    }

    /// The key's failures still inside the window (older ones are dropped).
    pub fn live(&mut self, key: &K, now: Instant) -> Option<&mut VecDeque<(Instant, T)>> {
        let window = self.window;
        let q = self.by_key.get_mut(key)?;
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= window)
        {
            q.pop_front();
        }
        Some(q)
    }

    /// How long until the key has fewer than `limit` failures, if it has `limit` now.
    pub fn blocked(&mut self, key: &K, limit: usize, now: Instant) -> Option<Duration> {
        let window = self.window;
        let q = self.live(key, now)?;
        (q.len() >= limit).then(|| window.saturating_sub(now.duration_since(q[q.len() - limit].0)))
    }

    /// Number of the key's failures inside the window.
    pub fn count(&mut self, key: &K, now: Instant) -> usize {
        self.live(key, now).map_or(0, |q| q.len())
    }

    pub fn push(&mut self, key: K, at: Instant, tag: T) {
        self.by_key.entry(key).or_default().push_back((at, tag));
    }

    /// Removes the newest failure of `key` at `at` whose tag matches.
    pub fn remove(&mut self, key: &K, at: Instant, matches: impl Fn(&T) -> bool) {
        if let Some(q) = self.by_key.get_mut(key)
            && let Some(i) = q.iter().rposition(|(t, tag)| *t == at && matches(tag))
        {
            q.remove(i);
        }
    }

    /// Keeps only the key's failures whose tag passes `keep`.
    pub fn retain(&mut self, key: &K, keep: impl Fn(&T) -> bool) {
        if let Some(q) = self.by_key.get_mut(key) {
            q.retain(|(_, tag)| keep(tag));
        }
    }

    pub fn clear(&mut self, key: &K) {
        self.by_key.remove(key);
    }

    /// Bounds memory: past `max` keys, forgets those whose failures have all expired.
    pub fn prune(&mut self, max: usize, now: Instant) {
        if self.by_key.len() <= max {
            return;
        }
        let window = self.window;
        self.by_key.retain(|_, q| {
            q.back()
                .is_some_and(|(t, _)| now.duration_since(*t) < window)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_and_blocks() {
        let mut w: Windows<&str> = Windows::new(Duration::from_secs(60));
        let t0 = Instant::now();
        w.push("a", t0, ());
        w.push("a", t0 + Duration::from_secs(30), ());
        assert_eq!(
            w.blocked(&"a", 2, t0 + Duration::from_secs(40)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(w.blocked(&"a", 2, t0 + Duration::from_secs(61)), None);
        assert_eq!(w.count(&"a", t0 + Duration::from_secs(61)), 1);
        assert_eq!(w.count(&"b", t0), 0);
    }
}
