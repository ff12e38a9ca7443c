//! Tenant policies: the model the API stores and the renderer turns into kernel rules.

pub mod analysis;
pub mod evaluate;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod impact;
pub mod matrix;
pub mod render;
pub mod watch;

use crate::overlay::Ipv4Cidr;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Verdict::Allow),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }
}

/// Which machines a rule applies to: `"any"`, `{"machine": id}`, `{"tag": t}`, `{"cidr": c}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Selector {
    Any,
    Machine(Uuid),
    Tag(String),
    Cidr(Ipv4Cidr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "any" => Some(Protocol::Any),
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            _ => None,
        }
    }
}

/// A destination port or inclusive range: `"443"` or `"8000-8100"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ports must be a port (1-65535) or a range FIRST-LAST with FIRST <= LAST")]
pub struct PortRangeError;

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| -> Result<u16, PortRangeError> {
            if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PortRangeError);
            }
            match t.parse::<u32>() {
                Ok(n @ 1..=65535) => Ok(n as u16),
                _ => Err(PortRangeError),
            }
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(s)?, num(s)?),
        };
        if first > last {
            return Err(PortRangeError);
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One tenant policy as stored (and, serialized, as the API shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub id: Uuid,
    pub name: String,
    pub priority: i32,
    pub action: Verdict,
    pub src: Selector,
    pub dst: Selector,
    pub protocol: Protocol,
    pub ports: Option<PortRange>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// Rules for tags: 1–64 characters, letters, digits and `-_.:`.
pub fn valid_tag(tag: &str) -> bool {
    let n = tag.chars().count();
    (1..=64).contains(&n)
        && tag
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_json_forms() {
        let any: Selector = serde_json::from_str(r#""any""#).unwrap();
        assert_eq!(any, Selector::Any);
        let id = Uuid::new_v4();
        let m: Selector = serde_json::from_str(&format!(r#"{{"machine":"{id}"}}"#)).unwrap();
        assert_eq!(m, Selector::Machine(id));
        let c: Selector = serde_json::from_str(r#"{"cidr":"10.100.1.0/24"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"cidr":"10.100.1.0/24"}"#
        );
        for bad in [
            r#""all""#,
            r#"{"machine":"nope"}"#,
            r#"{"cidr":"10.0.0.1/8"}"#,
            r#"{"tag":"a","cidr":"10.0.0.0/8"}"#,
            r#"{}"#,
            r#"{"host":"x"}"#,
            "3",
        ] {
            assert!(serde_json::from_str::<Selector>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            "443".parse(),
            Ok(PortRange {
                first: 443,
                last: 443
            })
        );
        assert_eq!(
            "8000-8100".parse(),
            Ok(PortRange {
                first: 8000,
                last: 8100
            })
        );
        for bad in [
            "",
            "0",
            "65536",
            "-1",
            "10-",
            "-10",
            "9-8",
            "1-2-3",
            "+5",
            "80 ",
            "99999999999",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
        assert_eq!("7-7".parse::<PortRange>().unwrap().to_string(), "7");
    }

    #[test]
    fn tags() {
        assert!(valid_tag("web"));
        assert!(valid_tag("env:prod"));
        assert!(valid_tag("büro"));
        assert!(!valid_tag(""));
        assert!(!valid_tag("a b"));
        assert!(!valid_tag("a\nb"));
        assert!(!valid_tag(&"x".repeat(65)));
    }
}
