//! Machines and policies for the policy module's unit tests.

use super::render::MachineAddr;
use super::{Policy, Protocol, Selector, Verdict};
use chrono::{TimeZone, Utc};
use std::net::Ipv4Addr;
use uuid::Uuid;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn machine(n: u128, last: u8, tags: &[&str]) -> MachineAddr {
    MachineAddr {
        id: id(n),
        address: Ipv4Addr::new(10, 100, 0, last),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

pub fn policy(n: u128, priority: i32, action: Verdict, src: Selector, dst: Selector) -> Policy {
    Policy {
        id: id(n),
        name: String::new(),
        priority,
        action,
        src,
        dst,
        protocol: Protocol::Any,
        ports: None,
        enabled: true,
        created_at: Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap(),
    }
}
