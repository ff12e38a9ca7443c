//! "Watch this path": counting-only rules for one path each, in a chain of their own that
//! FORWARD jumps to before the ACL chain. A rule with no target counts the packets it matches
//! and lets them go on (to the end of the chain, back to FORWARD, on to the ACL jump), so a
//! watch never changes a verdict. Pure: the rule text exactly as `iptables-save` prints it.

use super::Protocol;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;
use uuid::Uuid;

/// The chain of the tenant's watches (exists only while there is one).
pub const WATCH_CHAIN: &str = "MWG-WATCH";
/// At most this many watches per org at a time.
pub const MAX_WATCHES: usize = 3;
/// A watch lives this long unless asked otherwise, and at most [`MAX_TTL`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(120);

/// One path to count: from `src` to `dst`, a protocol and (TCP, UDP) a destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchPath {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: Protocol,
    pub port: Option<u16>,
}

/// The comment that maps a watch rule's counters back to its watch.
pub fn watch_comment(id: Uuid) -> String {
    format!("mwg-watch:{id}")
}

/// The counting rule of a watch (no `-j`: it decides nothing).
pub fn watch_rule(id: Uuid, p: &WatchPath) -> String {
    let mut r = format!("-A {WATCH_CHAIN} -s {}/32 -d {}/32", p.src, p.dst);
    match p.protocol {
        Protocol::Any => {}
        proto => {
            let name = proto.as_str();
            let _ = write!(r, " -p {name}");
            if let (Protocol::Tcp | Protocol::Udp, Some(port)) = (proto, p.port) {
                let _ = write!(r, " -m {name} --dport {port}");
            }
        }
    }
    let _ = write!(r, " -m comment --comment \"{}\"", watch_comment(id));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_rule_counts_and_decides_nothing() {
        let id = Uuid::from_u128(7);
        let path = WatchPath {
            src: Ipv4Addr::new(10, 100, 0, 2),
            dst: Ipv4Addr::new(10, 100, 0, 3),
            protocol: Protocol::Tcp,
            port: Some(22),
        };
        assert_eq!(
            watch_rule(id, &path),
            format!(
                "-A MWG-WATCH -s 10.100.0.2/32 -d 10.100.0.3/32 -p tcp -m tcp --dport 22 -m comment --comment \"mwg-watch:{id}\""
            )
        );
        let ping = WatchPath {
            protocol: Protocol::Icmp,
            port: None,
            ..path
        };
        let r = watch_rule(id, &ping);
        assert!(
            r.contains(" -p icmp -m comment") && !r.contains(" -j "),
            "{r}"
        );
    }
}
