//! Overlay addressing: a tenant's IPv4 CIDR, its hub address and the lowest-free allocation rule.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in canonical form (host bits zero), e.g. `10.100.0.0/16`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("expected an IPv4 network such as 10.100.0.0/16")]
    Syntax,
    #[error("prefix length must be between 0 and 32")]
    Prefix,
    #[error("host bits are set; did you mean {0}?")]
    HostBits(Ipv4Cidr),
    #[error("a tenant network must be a private (RFC 1918) range")]
    NotPrivate,
    #[error("a tenant network must have a prefix between /8 and /28")]
    TenantPrefix,
    #[error("network must lie inside the tenant network {0}")]
    OutsideTenant(Ipv4Cidr),
}

impl Ipv4Cidr {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::Prefix);
        }
        let canonical = Self {
            network: Ipv4Addr::from(u32::from(network) & mask(prefix)),
            prefix,
        };
        if canonical.network != network {
            return Err(CidrError::HostBits(canonical));
        }
        Ok(canonical)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn contains_cidr(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// The hub's address: the first host (`.1` of a /16).
    pub fn hub_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Rules for a tenant network: private IPv4 (RFC 1918), prefix /8 to /28.
    pub fn validate_tenant(&self) -> Result<(), CidrError> {
        if !(8..=28).contains(&self.prefix) {
            return Err(CidrError::TenantPrefix);
        }
        let private = [
            Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8),
            Ipv4Cidr::new(Ipv4Addr::new(172, 16, 0, 0), 12),
            Ipv4Cidr::new(Ipv4Addr::new(192, 168, 0, 0), 16),
        ];
        if private.into_iter().flatten().any(|p| p.contains_cidr(self)) {
            Ok(())
        } else {
            Err(CidrError::NotPrivate)
        }
    }

    /// The lowest address that is neither network, hub, broadcast nor in `used`.
    pub fn lowest_free(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let first = u32::from(self.hub_address()) + 1;
        let last = u32::from(self.broadcast()).checked_sub(1)?;
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s.split_once('/').ok_or(CidrError::Syntax)?;
        // Strict dotted quad: Ipv4Addr's parser already rejects octal and shorthand forms.
        let ip: Ipv4Addr = ip.parse().map_err(|_| CidrError::Syntax)?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::Syntax);
        }
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Syntax)?;
        Ipv4Cidr::new(ip, prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_canonical() {
        assert_eq!(c("10.100.0.0/16").to_string(), "10.100.0.0/16");
        assert_eq!(
            "10.100.0.1/16".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits(c("10.100.0.0/16")))
        );
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0/8",
            "010.0.0.0/8",
            "10.0.0.0/+8",
            "10.0.0.0/08x",
            " 10.0.0.0/8",
            "::1/128",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn tenant_rules() {
        assert!(c("10.100.0.0/16").validate_tenant().is_ok());
        assert!(c("172.16.0.0/12").validate_tenant().is_ok());
        assert!(c("192.168.7.0/28").validate_tenant().is_ok());
        assert_eq!(
            c("8.8.8.0/24").validate_tenant(),
            Err(CidrError::NotPrivate)
        );
        assert_eq!(
            c("172.0.0.0/8").validate_tenant(),
            Err(CidrError::NotPrivate)
        );
        assert_eq!(
            c("10.0.0.0/29").validate_tenant(),
            Err(CidrError::TenantPrefix)
        );
        assert_eq!(
            c("10.0.0.0/7").validate_tenant(),
            Err(CidrError::TenantPrefix)
        );
        assert_eq!(
            c("0.0.0.0/0").validate_tenant(),
            Err(CidrError::TenantPrefix)
        );
    }

    #[test]
    fn allocation_is_lowest_free_and_skips_reserved() {
        let net = c("10.9.0.0/28");
        assert_eq!(net.hub_address(), Ipv4Addr::new(10, 9, 0, 1));
        let mut used = BTreeSet::new();
        assert_eq!(net.lowest_free(&used), Some(Ipv4Addr::new(10, 9, 0, 2)));
        used.insert(Ipv4Addr::new(10, 9, 0, 2));
        used.insert(Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(net.lowest_free(&used), Some(Ipv4Addr::new(10, 9, 0, 3)));
        // .2 ..= .14 are usable: 13 machines fill a /28.
        for i in 2..=14 {
            used.insert(Ipv4Addr::new(10, 9, 0, i));
        }
        assert_eq!(
            net.lowest_free(&used),
            None,
            "broadcast .15 is never handed out"
        );
    }

    #[test]
    fn containment() {
        let net = c("10.100.0.0/16");
        assert!(net.contains(Ipv4Addr::new(10, 100, 255, 1)));
        assert!(!net.contains(Ipv4Addr::new(10, 101, 0, 1)));
        assert!(net.contains_cidr(&c("10.100.3.0/24")));
        assert!(!net.contains_cidr(&c("10.0.0.0/8")));
    }
}
