//! What operations return: typed views of the domain, serialized as the API's JSON (and read by
//! the dashboard's templates). Built once from rows and observations; nothing here is a secret
//! (a server-made private key appears only in `machines::Created`).

use crate::actors::tenant::TenantStatus;
use crate::db::machines::Machine;
use crate::db::orgs::Org;
use crate::db::users::User;
use crate::kernel::{PeerObserved, RuleObserved};
use crate::keys::PublicKey;
use crate::policy::render::{DEFAULT_COMMENT, ESTABLISHED_COMMENT, policy_comment};
use crate::policy::{Policy, Verdict};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct OrgView {
    pub id: Uuid,
    pub name: String,
    pub cidr: String,
    pub hub_address: String,
    pub listen_port: u16,
    pub hub_public_key: String,
    pub state: &'static str,
    pub default_action: Verdict,
    pub created_at: DateTime<Utc>,
}

impl From<&Org> for OrgView {
    fn from(o: &Org) -> Self {
        OrgView {
            id: o.id,
            name: o.name.clone(),
            cidr: o.cidr.to_string(),
            hub_address: o.cidr.hub_address().to_string(),
            listen_port: o.listen_port,
            hub_public_key: o.hub_public_key.to_base64(),
            state: o.state.as_str(),
            default_action: o.default_action,
            created_at: o.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub role: &'static str,
    pub org_id: Option<Uuid>,
    /// Absent where the API has always left it out (login, me).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

impl UserView {
    /// Without the creation time (login and `me` answer this shape).
    pub fn brief(u: &User) -> Self {
        UserView {
            id: u.id,
            email: u.email.clone(),
            role: u.role.as_str(),
            org_id: u.org_id,
            created_at: None,
        }
    }

    pub fn full(u: &User) -> Self {
        UserView {
            created_at: Some(u.created_at),
            ..Self::brief(u)
        }
    }
}

/// What the hub's kernel knows of a machine's peer (all null before it was ever seen).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    pub last_handshake_at: Option<DateTime<Utc>>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub endpoint: Option<String>,
}

impl PeerStats {
    pub fn of(peer: Option<&PeerObserved>) -> Self {
        PeerStats {
            last_handshake_at: peer
                .and_then(|p| p.last_handshake)
                .and_then(|t| DateTime::from_timestamp(t, 0)),
            rx_bytes: peer.map(|p| p.rx_bytes),
            tx_bytes: peer.map(|p| p.tx_bytes),
            endpoint: peer.and_then(|p| p.endpoint.clone()),
        }
    }
}

/// A machine's connection in words, from its last handshake with the hub. The hub's 25 s
/// keepalive makes a live peer handshake again within about 2 minutes, so 180 s is *online*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Idle,
    Stale,
    Never,
}

impl Presence {
    pub const ONLINE_SECS: i64 = 180;
    pub const STALE_SECS: i64 = 30 * 86400;

    pub fn of(last_handshake: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Presence {
        match last_handshake.map(|t| (now - t).num_seconds()) {
            None => Presence::Never,
            Some(s) if s <= Self::ONLINE_SECS => Presence::Online,
            Some(s) if s <= Self::STALE_SECS => Presence::Idle,
            Some(_) => Presence::Stale,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Idle => "idle",
            Presence::Stale => "stale",
            Presence::Never => "never connected",
        }
    }

    /// The CSS class of its dot.
    pub fn class(self) -> &'static str {
        match self {
            Presence::Online => "st-online",
            Presence::Idle => "st-idle",
            Presence::Stale => "st-stale",
            Presence::Never => "st-never",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineView {
    pub id: Uuid,
    pub name: String,
    pub address: Ipv4Addr,
    pub public_key: String,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// With the kernel's view of the peer (reads), or without (the answer to a change).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub stats: Option<PeerStats>,
}

impl MachineView {
    pub fn of(m: &Machine) -> Self {
        MachineView {
            id: m.id,
            name: m.name.clone(),
            address: m.address,
            public_key: m.public_key.to_base64(),
            tags: m.tags.clone(),
            created_at: m.created_at,
            stats: None,
        }
    }

    pub fn with_stats(m: &Machine, status: Option<&TenantStatus>) -> Self {
        MachineView {
            stats: Some(PeerStats::of(
                status.and_then(|s| s.peers.get(&m.public_key)),
            )),
            ..Self::of(m)
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    #[serde(flatten)]
    pub policy: Policy,
    /// The kernel's counters of the policy's rule (0 when it has none: disabled, or not yet).
    pub packets: u64,
    pub bytes: u64,
}

impl PolicyView {
    pub fn of(p: &Policy, rules: &[RuleObserved]) -> Self {
        let comment = format!("\"{}\"", policy_comment(p.id));
        let counters = rules.iter().find(|r| r.rule.contains(&comment));
        PolicyView {
            policy: p.clone(),
            packets: counters.map_or(0, |r| r.packets),
            bytes: counters.map_or(0, |r| r.bytes),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub hub: HubView,
    #[serde(serialize_with = "peers")]
    pub peers: Arc<StatusPeers>,
    pub rules: Vec<RuleView>,
    pub observed_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

impl StatusView {
    /// The view as the API's JSON (exactly `serde_json::to_vec(self)`, with the peers
    /// serialized once per observation) and its entity tag: the peers' tag and a hash of the
    /// rest.
    pub fn json(&self) -> (Bytes, String) {
        let (hub, rules) = (json_of(&self.hub), json_of(&self.rules));
        let (at, error) = (json_of(&self.observed_at), json_of(&self.last_error));
        let peers = self.peers.json();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&hub, &rules, &at, &error).hash(&mut h);
        let tag = format!("\"{}-{:016x}\"", self.peers.tag, h.finish());
        let mut body = Vec::with_capacity(peers.len() + hub.len() + rules.len() + 128);
        for (key, value) in [
            ("{\"hub\":", &hub[..]),
            (",\"peers\":", &peers[..]),
            (",\"rules\":", &rules[..]),
            (",\"observed_at\":", &at[..]),
            (",\"last_error\":", &error[..]),
        ] {
            body.extend_from_slice(key.as_bytes());
            body.extend_from_slice(value);
        }
        body.push(b'}');
        (Bytes::from(body), tag)
    }
}

/// A part of a view as JSON.
fn json_of(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("views always serialize")
}

/// The peers of a status: built once per observation (and set of rows), serialized once.
#[derive(Debug)]
pub struct StatusPeers {
    pub views: Vec<PeerView>,
    /// Names these peers (and nothing else) in the status's entity tag.
    pub tag: String,
    json: OnceLock<Bytes>,
}

impl StatusPeers {
    pub fn new(views: Vec<PeerView>, tag: String) -> Self {
        StatusPeers {
            views,
            tag,
            json: OnceLock::new(),
        }
    }

    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(json_of(&self.views)))
    }
}

fn peers<S: Serializer>(p: &Arc<StatusPeers>, s: S) -> Result<S::Ok, S::Error> {
    p.views.serialize(s)
}

#[derive(Debug, Clone, Serialize)]
pub struct HubView {
    pub up: bool,
    pub listen_port: u16,
    pub public_key: Option<String>,
    /// From PostgreSQL: null while it cannot be read (the kernel facts are still served).
    pub address: Option<String>,
    pub name: Option<String>,
    pub netns: String,
    pub device: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub machine_id: Option<Uuid>,
    pub name: Option<String>,
    pub public_key: String,
    pub allowed_ips: BTreeSet<String>,
    pub endpoint: Option<String>,
    pub last_handshake_at: Option<DateTime<Utc>>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl PeerView {
    /// A peer of the hub, named after its machine when PostgreSQL has one with its key.
    pub fn of(key: &PublicKey, p: &PeerObserved, machine: Option<&Machine>) -> Self {
        PeerView {
            machine_id: machine.map(|m| m.id),
            name: machine.map(|m| m.name.clone()),
            public_key: key.to_base64(),
            allowed_ips: p.allowed_ips.clone(),
            endpoint: p.endpoint.clone(),
            last_handshake_at: p
                .last_handshake
                .and_then(|t| DateTime::from_timestamp(t, 0)),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub kind: &'static str,
    pub policy_id: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

impl RuleView {
    pub fn of(r: &RuleObserved) -> Self {
        let c = comment(&r.rule).unwrap_or_default();
        let kind = match c {
            DEFAULT_COMMENT => "default",
            ESTABLISHED_COMMENT => "established",
            _ => "policy",
        };
        RuleView {
            kind,
            policy_id: c
                .strip_prefix("mwg:")
                .filter(|_| kind == "policy")
                .map(str::to_string),
            packets: r.packets,
            bytes: r.bytes,
        }
    }
}

/// The comment of a rule as `iptables-save` prints it: `… --comment "mwg:…" …`.
fn comment(rule: &str) -> Option<&str> {
    rule.split("--comment \"").nth(1)?.split('"').next()
}

/// A page of a list as the API shows it: `{"<key>": [...], "next_cursor": "…" | null}`.
pub struct Listed<'a, T> {
    pub key: &'static str,
    pub items: &'a [T],
    pub next_cursor: Option<&'a str>,
}

impl<T: Serialize> Serialize for Listed<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(self.key, self.items)?;
        m.serialize_entry("next_cursor", &self.next_cursor)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_json_is_its_serialization_and_its_tag_follows_every_part() {
        let at = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let peer = PeerView {
            machine_id: Some(Uuid::nil()),
            name: Some("laptop \"1\"".into()),
            public_key: "k".into(),
            allowed_ips: BTreeSet::from(["10.0.0.2/32".to_string()]),
            endpoint: None,
            last_handshake_at: Some(at),
            rx_bytes: 1,
            tx_bytes: 2,
        };
        let view = StatusView {
            hub: HubView {
                up: true,
                listen_port: 51820,
                public_key: None,
                address: Some("10.0.0.1".into()),
                name: Some("org".into()),
                netns: "mwg-1".into(),
                device: "mwg1".into(),
            },
            peers: Arc::new(StatusPeers::new(vec![peer], "p1".into())),
            rules: vec![RuleView {
                kind: "default",
                policy_id: None,
                packets: 5,
                bytes: 6,
            }],
            observed_at: at,
            last_error: None,
        };
        let (body, tag) = view.json();
        assert_eq!(body, serde_json::to_vec(&view).unwrap());
        let mut moved = view.clone();
        moved.rules[0].packets = 6;
        assert_ne!(moved.json().1, tag, "counters move the tag");
        let mut other = view.clone();
        other.peers = Arc::new(StatusPeers::new(view.peers.views.clone(), "p2".into()));
        assert_ne!(other.json().1, tag, "new peers move the tag");
        assert_eq!(view.clone().json().1, tag);
    }

    #[test]
    fn presence_words() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ago = |s| Some(now - chrono::Duration::seconds(s));
        assert_eq!(Presence::of(None, now), Presence::Never);
        assert_eq!(Presence::of(ago(0), now), Presence::Online);
        assert_eq!(Presence::of(ago(180), now), Presence::Online);
        assert_eq!(Presence::of(ago(181), now), Presence::Idle);
        assert_eq!(Presence::of(ago(30 * 86400), now), Presence::Idle);
        assert_eq!(Presence::of(ago(30 * 86400 + 1), now), Presence::Stale);
        assert_eq!(Presence::Never.word(), "never connected");
    }

    #[test]
    fn comments() {
        assert_eq!(
            comment("-A MWG-ACL -s 10.0.0.2/32 -m comment --comment \"mwg:abc\" -j DROP"),
            Some("mwg:abc")
        );
        assert_eq!(comment("-A MWG-ACL -j DROP"), None);
    }
}

/// `GET /orgs/{org}/history`: the last 30 min in 15 s steps (the counters period), oldest
/// first; the last value of every series is the step ending at `newest_at`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    pub step_seconds: u64,
    pub newest_at: Option<DateTime<Utc>>,
    pub machines: Vec<MachineHistory>,
    pub policies: Vec<PolicyHistory>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineHistory {
    pub machine_id: Option<Uuid>,
    pub name: Option<String>,
    pub public_key: String,
    pub since: DateTime<Utc>,
    pub rx_bytes: Vec<u64>,
    pub tx_bytes: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyHistory {
    pub kind: &'static str,
    pub policy_id: Option<String>,
    pub since: DateTime<Utc>,
    pub packets: Vec<u64>,
    pub bytes: Vec<u64>,
    /// The newest step in which the rule counted a packet, in the window.
    pub last_hit_at: Option<DateTime<Utc>>,
    /// No packet in the window: since when (the series' start, or the window's).
    pub never_hit_since: Option<DateTime<Utc>>,
}

impl HistoryView {
    pub fn of(s: &TenantStatus, machine: impl Fn(&PublicKey) -> Option<(Uuid, String)>) -> Self {
        let h = &*s.history;
        let machines = h
            .peers
            .iter()
            .map(|(key, series)| {
                let (rx, tx) = h.values(series);
                let m = machine(key);
                MachineHistory {
                    machine_id: m.as_ref().map(|m| m.0),
                    name: m.map(|m| m.1),
                    public_key: key.to_base64(),
                    since: series.since,
                    rx_bytes: rx,
                    tx_bytes: tx,
                }
            })
            .collect();
        let policies = h
            .rules
            .iter()
            .map(|(key, series)| {
                let (packets, bytes) = h.values(series);
                let (last_hit_at, never_hit_since) = h.hits(series, &packets);
                let kind = match key.as_str() {
                    "default" => "default",
                    "established" => "established",
                    _ => "policy",
                };
                PolicyHistory {
                    kind,
                    policy_id: (kind == "policy").then(|| key.clone()),
                    since: series.since,
                    packets,
                    bytes,
                    last_hit_at,
                    never_hit_since,
                }
            })
            .collect();
        HistoryView {
            step_seconds: h.step.as_secs(),
            newest_at: h.newest.map(|(_, at)| at),
            machines,
            policies,
        }
    }

    /// A policy's row (`policy_id`, or `default` / `established`).
    pub fn policy(&self, key: &str) -> Option<&PolicyHistory> {
        self.policies
            .iter()
            .find(|p| p.policy_id.as_deref() == Some(key) || (p.kind != "policy" && p.kind == key))
    }

    pub fn machine(&self, id: Uuid) -> Option<&MachineHistory> {
        self.machines.iter().find(|m| m.machine_id == Some(id))
    }
}
