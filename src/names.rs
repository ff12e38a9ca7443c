//! Every kernel name MeshWG creates derives from the tenant's numeric kernel id (`kid`) in this
//! one file, never from user text: namespace `<prefix>-<kid>`, birth interface `<prefix><kid>`
//! (which is also the wireguard-go UAPI socket name, forever), interface `wg0` inside the namespace.
//!
//! The prefix is letters only, so `<prefix><digits>` parses back unambiguously and two controllers
//! (or test runs) with different prefixes never claim each other's objects as orphans.

use std::fmt;

/// Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
const IFNAMSIZ_MAX: usize = 15;

/// The interface name inside every tenant namespace.
pub const TENANT_IFACE: &str = "wg0";

/// The tenant's ACL chain in its namespace's filter table (named where it is rendered).
pub use crate::policy::render::ACL_CHAIN;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KernelPrefix(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("must be 1 to 5 lowercase ASCII letters")]
    BadPrefix,
    #[error("tenant kernel id {0} is too large for an interface name")]
    KidTooLarge(i64),
}

/// The kernel names of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNames {
    pub kid: i64,
    /// Network namespace, under `/run/netns/`.
    pub netns: String,
    /// Interface name at birth in the controller namespace; names the UAPI socket for life.
    pub birth: String,
}

impl KernelPrefix {
    pub fn new(prefix: &str) -> Result<Self, NameError> {
        if (1..=5).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(prefix.to_owned()))
        } else {
            Err(NameError::BadPrefix)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn tenant(&self, kid: i64) -> Result<TenantNames, NameError> {
        let birth = format!("{}{}", self.0, kid);
        if kid < 0 || birth.len() > IFNAMSIZ_MAX {
            return Err(NameError::KidTooLarge(kid));
        }
        Ok(TenantNames {
            kid,
            netns: format!("{}-{}", self.0, kid),
            birth,
        })
    }

    /// The kid of a namespace name of ours, e.g. `mwg-12` → 12.
    pub fn parse_netns(&self, name: &str) -> Option<i64> {
        digits(name.strip_prefix(&self.0)?.strip_prefix('-')?)
    }

    /// The kid of a birth interface or socket name of ours, e.g. `mwg12` → 12.
    pub fn parse_birth(&self, name: &str) -> Option<i64> {
        digits(name.strip_prefix(&self.0)?)
    }
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty()
        || s.len() > 12
        || !s.bytes().all(|b| b.is_ascii_digit())
        || s.starts_with('0') && s.len() > 1
    {
        return None;
    }
    s.parse().ok()
}

impl fmt::Debug for KernelPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KernelPrefix({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = KernelPrefix::new("mwg").unwrap();
        let n = p.tenant(42).unwrap();
        assert_eq!(n.netns, "mwg-42");
        assert_eq!(n.birth, "mwg42");
        assert_eq!(p.parse_netns("mwg-42"), Some(42));
        assert_eq!(p.parse_birth("mwg42"), Some(42));
        assert_eq!(p.parse_birth("mwgx42"), None);
        assert_eq!(p.parse_birth("mwg042"), None);
        assert_eq!(p.parse_netns("mwg42"), None);
        assert_eq!(p.parse_netns("mwg-"), None);
        assert_eq!(p.parse_netns("other-1"), None);
        // A second prefix never claims the first one's objects.
        let q = KernelPrefix::new("mwgq").unwrap();
        assert_eq!(q.parse_birth("mwg42"), None);
        assert_eq!(p.parse_birth("mwgq42"), None);
    }

    #[test]
    fn fits_ifnamsiz() {
        let p = KernelPrefix::new("abcde").unwrap();
        assert_eq!(p.tenant(9_999_999_999).unwrap().birth.len(), 15);
        assert_eq!(
            p.tenant(10_000_000_000),
            Err(NameError::KidTooLarge(10_000_000_000))
        );
        assert!(p.tenant(-1).is_err());
    }

    #[test]
    fn prefix_rules() {
        for bad in ["", "MWG", "mwg1", "mwg-", "abcdef", "m w"] {
            assert_eq!(KernelPrefix::new(bad), Err(NameError::BadPrefix), "{bad:?}");
        }
    }
}
