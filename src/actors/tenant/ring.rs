//! A short history of one cumulative counter: the growth per sampling slot (15 s by default)
//! over the last [`SLOTS`] slots, in a fixed array (under 1 KiB per series, whatever happens).
//!
//! Pure: slots are plain numbers (`time / period`), the caller decides when a slot begins.

/// Slots kept per series: 120 × 15 s = 30 min.
pub const SLOTS: usize = 120;

/// The growth of one counter per slot, newest last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    deltas: [u64; SLOTS],
    /// Where the next delta goes.
    head: u8,
    /// How many slots hold a delta (≤ `SLOTS`).
    len: u8,
    /// The slot of the newest sample (the baseline's until a delta is recorded).
    newest: u64,
    /// The counter at the newest sample.
    last: u64,
}

impl Ring {
    /// Starts a series: this sample is the baseline, no delta yet.
    pub fn new(slot: u64, counter: u64) -> Self {
        Ring {
            deltas: [0; SLOTS],
            head: 0,
            len: 0,
            newest: slot,
            last: counter,
        }
    }

    /// Records the counter as sampled in `slot`. Slots without a sample count as zero growth;
    /// a counter that went down was reset (a restarted daemon, a re-created chain) and counts
    /// from zero again. A sample in the same or an older slot is ignored (at most one per slot).
    pub fn record(&mut self, slot: u64, counter: u64) {
        if slot <= self.newest {
            return;
        }
        let missed = (slot - self.newest - 1).min(SLOTS as u64);
        for _ in 0..missed {
            self.push(0);
        }
        let delta = if counter >= self.last {
            counter - self.last
        } else {
            counter
        };
        self.push(delta);
        self.newest = slot;
        self.last = counter;
    }

    fn push(&mut self, v: u64) {
        self.deltas[self.head as usize] = v;
        self.head = ((self.head as usize + 1) % SLOTS) as u8;
        self.len = (self.len as usize + 1).min(SLOTS) as u8;
    }

    /// The deltas, oldest first, aligned so that the last one is `until`'s slot (slots after
    /// the newest sample count as zero); at most [`SLOTS`] of them.
    pub fn values(&self, until: u64) -> Vec<u64> {
        let len = self.len as usize;
        let start = (self.head as usize + SLOTS - len) % SLOTS;
        let mut out: Vec<u64> = (0..len).map(|i| self.deltas[(start + i) % SLOTS]).collect();
        let pad = until.saturating_sub(self.newest).min(SLOTS as u64) as usize;
        out.extend(std::iter::repeat_n(0, pad));
        if out.len() > SLOTS {
            out.drain(..out.len() - SLOTS);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_is_a_baseline_then_deltas() {
        let mut r = Ring::new(10, 1000);
        assert!(r.values(10).is_empty());
        r.record(11, 1500);
        r.record(12, 1500);
        r.record(13, 1600);
        assert_eq!(r.values(13), vec![500, 0, 100]);
    }

    #[test]
    fn wraps_around_keeping_the_newest_120() {
        let mut r = Ring::new(0, 0);
        for slot in 1..=300u64 {
            r.record(slot, slot * (slot + 1) / 2); // growth of `slot` in slot `slot`
        }
        let v = r.values(300);
        assert_eq!(v.len(), SLOTS);
        assert_eq!(v[0], 181);
        assert_eq!(*v.last().unwrap(), 300);
        assert!(v.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn memory_is_bounded() {
        assert!(std::mem::size_of::<Ring>() <= 1024);
        let mut r = Ring::new(0, 0);
        for slot in 1..10_000u64 {
            r.record(slot, slot);
        }
        assert_eq!(r.values(10_000).len(), SLOTS);
    }

    #[test]
    fn a_counter_reset_is_a_restart_not_negative() {
        let mut r = Ring::new(0, 5000);
        r.record(1, 6000);
        r.record(2, 40); // the counter restarted from zero and counted 40
        r.record(3, 100);
        assert_eq!(r.values(3), vec![1000, 40, 60]);
    }

    #[test]
    fn missed_slots_and_late_reads_are_zero_and_duplicates_ignored() {
        let mut r = Ring::new(0, 0);
        r.record(1, 10);
        r.record(1, 99); // same slot: ignored
        r.record(4, 20);
        assert_eq!(r.values(4), vec![10, 0, 0, 10]);
        assert_eq!(r.values(6), vec![10, 0, 0, 10, 0, 0]);
        // A gap longer than the ring leaves only zeros before the newest delta.
        r.record(1000, 25);
        let v = r.values(1000);
        assert_eq!(v.len(), SLOTS);
        assert!(v[..SLOTS - 1].iter().all(|&d| d == 0));
        assert_eq!(v[SLOTS - 1], 5);
    }
}
