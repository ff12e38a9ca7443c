//! Which of an org's machines a list shows, and in what order: a filter grammar that lives in
//! the URL (`?q=tag:staff is:online -tag:ci seen>7d name:lap addr:10.100.0.5`) and a sort key.
//! Pure: parsed once, matched against the read model's views.

use super::ApiError;
use super::views::{MachineView, Presence};
use chrono::{DateTime, Duration, Utc};

/// One term of a filter; `not` negates it (a leading `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub not: bool,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Has exactly this tag.
    Tag(String),
    /// Is online, idle, stale or never (connected).
    Is(Presence),
    /// The name contains this (case-insensitive).
    Name(String),
    /// The address starts with this.
    Addr(String),
    /// Last handshake longer ago than this (never counts as longer).
    SeenOver(Duration),
    /// Last handshake within this.
    SeenWithin(Duration),
    /// Anything else: in the name, a tag or the address.
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    Name,
    #[default]
    Address,
    Status,
    Handshake,
    Received,
    Sent,
    Created,
}

impl SortKey {
    pub const ALL: [(SortKey, &'static str); 7] = [
        (SortKey::Name, "name"),
        (SortKey::Address, "address"),
        (SortKey::Status, "status"),
        (SortKey::Handshake, "handshake"),
        (SortKey::Received, "rx"),
        (SortKey::Sent, "tx"),
        (SortKey::Created, "created"),
    ];

    pub fn parse(s: &str) -> Result<SortKey, ApiError> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| {
                ApiError::invalid(
                    "sort",
                    "name, address, status, handshake, rx, tx or created",
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("", |(_, n)| n)
    }
}

/// A filter and an order, as a list request gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineQuery {
    pub terms: Vec<Term>,
    pub sort: SortKey,
    pub descending: bool,
}

/// `7d`, `12h`, `30m`, `45s`.
fn duration(s: &str) -> Option<Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok().filter(|n| *n <= 100_000)?;
    match unit {
        "d" => Some(Duration::days(n)),
        "h" => Some(Duration::hours(n)),
        "m" => Some(Duration::minutes(n)),
        "s" => Some(Duration::seconds(n)),
        _ => None,
    }
}

/// Parses the filter grammar; an unknown `is:` or a bad `seen` is a 400 naming it.
pub fn parse(q: &str) -> Result<Vec<Term>, ApiError> {
    if q.len() > 1024 {
        return Err(ApiError::invalid("q", "must be at most 1024 bytes"));
    }
    let mut terms = Vec::new();
    for word in q.split_whitespace() {
        let (not, word) = match word.strip_prefix('-') {
            Some(w) if !w.is_empty() => (true, w),
            _ => (false, word),
        };
        let what = if let Some(t) = word.strip_prefix("tag:") {
            What::Tag(t.to_string())
        } else if let Some(s) = word.strip_prefix("is:") {
            What::Is(match s {
                "online" => Presence::Online,
                "idle" => Presence::Idle,
                "stale" => Presence::Stale,
                "never" => Presence::Never,
                _ => return Err(ApiError::invalid("q", "is: online, idle, stale or never")),
            })
        } else if let Some(n) = word.strip_prefix("name:") {
            What::Name(n.to_lowercase())
        } else if let Some(a) = word.strip_prefix("addr:") {
            What::Addr(a.to_string())
        } else if let Some(d) = word.strip_prefix("seen>") {
            What::SeenOver(duration(d).ok_or_else(|| ApiError::invalid("q", "seen>7d, 12h, 30m"))?)
        } else if let Some(d) = word.strip_prefix("seen<") {
            What::SeenWithin(
                duration(d).ok_or_else(|| ApiError::invalid("q", "seen<7d, 12h, 30m"))?,
            )
        } else {
            What::Text(word.to_lowercase())
        };
        terms.push(Term { not, what });
    }
    Ok(terms)
}

fn last_handshake(m: &MachineView) -> Option<DateTime<Utc>> {
    m.stats.as_ref().and_then(|s| s.last_handshake_at)
}

fn holds(what: &What, m: &MachineView, now: DateTime<Utc>) -> bool {
    let seen = last_handshake(m);
    match what {
        What::Tag(t) => m.tags.iter().any(|x| x == t),
        What::Is(p) => Presence::of(seen, now) == *p,
        What::Name(n) => m.name.to_lowercase().contains(n),
        What::Addr(a) => m.address.to_string().starts_with(a.as_str()),
        What::SeenOver(d) => seen.is_none_or(|t| now - t > *d),
        What::SeenWithin(d) => seen.is_some_and(|t| now - t <= *d),
        What::Text(s) => {
            m.name.to_lowercase().contains(s)
                || m.tags.iter().any(|t| t.to_lowercase().contains(s))
                || m.address.to_string().starts_with(s.as_str())
        }
    }
}

impl MachineQuery {
    pub fn matches(&self, m: &MachineView, now: DateTime<Utc>) -> bool {
        self.terms.iter().all(|t| holds(&t.what, m, now) != t.not)
    }

    /// The matching machines in the asked order (ties by address, so the order is stable).
    pub fn apply<'a>(&self, all: &'a [MachineView], now: DateTime<Utc>) -> Vec<&'a MachineView> {
        let mut out: Vec<&MachineView> = all.iter().filter(|m| self.matches(m, now)).collect();
        let stat = |m: &MachineView, f: fn(&super::views::PeerStats) -> Option<u64>| {
            m.stats.as_ref().and_then(f).unwrap_or(0)
        };
        let rank = |m: &MachineView| match Presence::of(last_handshake(m), now) {
            Presence::Online => 0,
            Presence::Idle => 1,
            Presence::Stale => 2,
            Presence::Never => 3,
        };
        out.sort_by(|a, b| {
            let by = match self.sort {
                SortKey::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
                SortKey::Address => a.address.cmp(&b.address),
                SortKey::Status => rank(a).cmp(&rank(b)),
                SortKey::Handshake => last_handshake(b).cmp(&last_handshake(a)),
                SortKey::Received => stat(a, |s| s.rx_bytes).cmp(&stat(b, |s| s.rx_bytes)),
                SortKey::Sent => stat(a, |s| s.tx_bytes).cmp(&stat(b, |s| s.tx_bytes)),
                SortKey::Created => a.created_at.cmp(&b.created_at),
            };
            let by = if self.descending { by.reverse() } else { by };
            by.then(a.address.cmp(&b.address))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::views::PeerStats;
    use uuid::Uuid;

    fn machine(
        name: &str,
        last: u8,
        tags: &[&str],
        seen_secs: Option<i64>,
        now: DateTime<Utc>,
    ) -> MachineView {
        MachineView {
            id: Uuid::new_v4(),
            name: name.into(),
            address: std::net::Ipv4Addr::new(10, 100, 0, last),
            public_key: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created_at: now - Duration::days(last as i64),
            stats: Some(PeerStats {
                last_handshake_at: seen_secs.map(|s| now - Duration::seconds(s)),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_filter_grammar_selects_and_negates() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let all = vec![
            machine("Laptop", 2, &["staff"], Some(10), now),
            machine("ci-runner", 3, &["ci", "staff"], Some(8 * 86400), now),
            machine("phone", 4, &[], None, now),
        ];
        let names = |q: &str| {
            let query = MachineQuery {
                terms: parse(q).unwrap(),
                ..Default::default()
            };
            query
                .apply(&all, now)
                .iter()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(""), ["Laptop", "ci-runner", "phone"]);
        assert_eq!(names("tag:staff -tag:ci"), ["Laptop"]);
        assert_eq!(names("is:online"), ["Laptop"]);
        assert_eq!(names("is:never"), ["phone"]);
        assert_eq!(names("seen>7d"), ["ci-runner", "phone"]);
        assert_eq!(names("seen<1h"), ["Laptop"]);
        assert_eq!(names("name:LAP"), ["Laptop"]);
        assert_eq!(names("addr:10.100.0.4"), ["phone"]);
        assert_eq!(names("runner"), ["ci-runner"]);
        assert!(parse("is:sleepy").is_err());
        assert!(parse("seen>7y").is_err());
        let sorted = MachineQuery {
            terms: vec![],
            sort: SortKey::Name,
            descending: true,
        };
        let order: Vec<_> = sorted
            .apply(&all, now)
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(order, ["phone", "Laptop", "ci-runner"]);
        assert_eq!(SortKey::parse("rx").unwrap(), SortKey::Received);
        assert!(SortKey::parse("nope").is_err());
    }
}
