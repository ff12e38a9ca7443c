//! Pagination of every list: `limit` (default [`DEFAULT_LIMIT`], audit [`AUDIT_DEFAULT_LIMIT`],
//! at most [`MAX_LIMIT`]) and an opaque `cursor`, the `next_cursor` of the page before.
//!
//! A cursor is the position of the last item of a page in the list's stable order (keyset
//! pagination: rows added or removed meanwhile never make a page repeat or skip one that stayed),
//! tagged with the list it belongs to and a format version, base64url without padding. It is
//! opaque to clients; a cursor that is not one of this list's is a 400.

use super::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use std::net::Ipv4Addr;
use uuid::Uuid;

pub const DEFAULT_LIMIT: usize = 500;
pub const AUDIT_DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Version of the cursor format, so a future change can refuse (400) older cursors cleanly.
const FORMAT: u8 = 1;
/// The longest cursor (policies: tag, version, 4 + 8 + 16 bytes) in base64url.
pub const MAX_CURSOR_LEN: usize = 40;

/// What a client asks of a list: how many, and after which item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest<K> {
    pub limit: usize,
    pub after: Option<K>,
}

/// One page and where the next one starts (`None`: this is the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Takes up to `limit` of `items` (fetched with one extra, to know whether more follow);
    /// the next cursor is the key of the last item kept.
    pub fn of<K: Key>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> K) -> Page<T> {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more
            .then(|| items.last().map(|last| key(last).encode()))
            .flatten();
        Page { items, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// The position of an item in its list's order, as a cursor carries it.
pub trait Key: Sized {
    /// Tags the list, so that one list's cursor is refused by another.
    const LIST: u8;
    fn bytes(&self) -> Vec<u8>;
    fn from_bytes(b: &[u8]) -> Option<Self>;

    fn encode(&self) -> String {
        let mut raw = vec![Self::LIST, FORMAT];
        raw.extend(self.bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(cursor: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::invalid(
                "cursor",
                "is not a cursor of this list (pass the next_cursor of the page before)",
            )
        };
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        match raw.as_slice() {
            [list, FORMAT, rest @ ..] if *list == Self::LIST => {
                Self::from_bytes(rest).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }
}

/// Machines are listed by overlay address (unique in an org).
impl Key for Ipv4Addr {
    const LIST: u8 = b'm';
    fn bytes(&self) -> Vec<u8> {
        self.octets().to_vec()
    }
    fn from_bytes(b: &[u8]) -> Option<Self> {
        <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
    }
}

/// Policies are listed in evaluation order: priority, creation, id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyKey {
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Key for PolicyKey {
    const LIST: u8 = b'p';
    fn bytes(&self) -> Vec<u8> {
        let mut b = self.priority.to_be_bytes().to_vec();
        b.extend(self.created_at.timestamp_micros().to_be_bytes());
        b.extend(self.id.as_bytes());
        b
    }
    fn from_bytes(b: &[u8]) -> Option<Self> {
        let (priority, rest) = b.split_first_chunk::<4>()?;
        let (micros, id) = rest.split_first_chunk::<8>()?;
        Some(PolicyKey {
            priority: i32::from_be_bytes(*priority),
            created_at: DateTime::from_timestamp_micros(i64::from_be_bytes(*micros))?,
            id: Uuid::from_bytes(<[u8; 16]>::try_from(id).ok()?),
        })
    }
}

/// Users are listed by creation, then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Key for UserKey {
    const LIST: u8 = b'u';
    fn bytes(&self) -> Vec<u8> {
        let mut b = self.created_at.timestamp_micros().to_be_bytes().to_vec();
        b.extend(self.id.as_bytes());
        b
    }
    fn from_bytes(b: &[u8]) -> Option<Self> {
        let (micros, id) = b.split_first_chunk::<8>()?;
        Some(UserKey {
            created_at: DateTime::from_timestamp_micros(i64::from_be_bytes(*micros))?,
            id: Uuid::from_bytes(<[u8; 16]>::try_from(id).ok()?),
        })
    }
}

/// Audit entries are listed newest first: by id, descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditKey(pub i64);

impl Key for AuditKey {
    const LIST: u8 = b'a';
    fn bytes(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(AuditKey(i64::from_be_bytes(<[u8; 8]>::try_from(b).ok()?)))
    }
}

/// The page a client asked for, from the raw `limit` and `cursor` query values.
pub fn request<K: Key>(
    limit: Option<&str>,
    cursor: Option<&str>,
    default: usize,
) -> Result<PageRequest<K>, ApiError> {
    let limit = match limit {
        None => default,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let after = cursor.map(K::decode).transpose()?;
    Ok(PageRequest { limit, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_key() -> PolicyKey {
        PolicyKey {
            priority: -7,
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        }
    }

    #[test]
    fn cursors_round_trip_and_stay_short_and_url_safe() {
        let a = Ipv4Addr::new(10, 100, 3, 200);
        assert_eq!(Ipv4Addr::decode(&a.encode()).unwrap(), a);
        let p = policy_key();
        assert_eq!(PolicyKey::decode(&p.encode()).unwrap(), p);
        let u = UserKey {
            created_at: p.created_at,
            id: p.id,
        };
        assert_eq!(UserKey::decode(&u.encode()).unwrap(), u);
        assert_eq!(
            AuditKey::decode(&AuditKey(42).encode()).unwrap(),
            AuditKey(42)
        );
        for c in [
            a.encode(),
            p.encode(),
            u.encode(),
            AuditKey(i64::MAX).encode(),
        ] {
            assert!(c.len() <= MAX_CURSOR_LEN, "{c}");
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{c}"
            );
        }
    }

    #[test]
    fn a_cursor_of_another_list_or_garbage_is_a_400() {
        let machine = Ipv4Addr::new(10, 0, 0, 2).encode();
        let policy = policy_key().encode();
        for bad in [
            machine.as_str(),
            "",
            "not base64!",
            "AAAA",
            &"A".repeat(200),
            &policy[..policy.len() - 2],
        ] {
            let e = PolicyKey::decode(bad).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "validation"), "{bad}");
            assert!(e.message.starts_with("cursor: "), "{}", e.message);
        }
        assert!(Ipv4Addr::decode(&policy).is_err());
        assert!(AuditKey::decode(&machine).is_err());
    }

    #[test]
    fn limits_default_and_bound() {
        let r = request::<AuditKey>(None, None, 100).unwrap();
        assert_eq!((r.limit, r.after), (100, None));
        assert_eq!(
            request::<AuditKey>(Some("1000"), None, 5).unwrap().limit,
            1000
        );
        for bad in ["0", "1001", "-1", "", "ten", "1e3", " 5"] {
            let e = request::<AuditKey>(Some(bad), None, 5).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad}");
            assert!(e.message.starts_with("limit: "), "{}", e.message);
        }
    }

    #[test]
    fn a_page_knows_whether_another_follows() {
        let all: Vec<i64> = (1..=5).rev().collect();
        let p = Page::of(all.clone(), 2, |n| AuditKey(*n));
        assert_eq!(p.items, vec![5, 4]);
        assert_eq!(p.next_cursor, Some(AuditKey(4).encode()));
        let last = Page::of(all[..2].to_vec(), 2, |n| AuditKey(*n));
        assert_eq!(last.next_cursor, None, "exactly `limit` left: no next page");
    }
}
