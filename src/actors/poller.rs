//! The cheap poll, for all tenants at once: what announces no kernel event — the device's
//! peers (changed by hand through UAPI or generic netlink), ipset members, and now and then
//! rule counters — is read for a slice of the tenants at every tick and compared with what
//! each tenant's actor last saw when its kernel was right. Only a difference costs the actor
//! anything: a change of shape (a peer, a key, a port, a set member, the namespace itself) is a
//! kick and a reconcile; moved numbers (bytes, handshakes, counters) are handed over for
//! readers (with the rule counters every counters period, moved or not: the history rings
//! sample each period). An idle tenant whose kernel is as it should be wakes its actor for
//! nothing else.
//!
//! A glance costs a few system calls: one `stat`, three sysctl reads, the daemon's `rchar` (a
//! quiet wireguard-go is not asked, see `kernel::uapi`), and an ipset list over netlink.
//!
//! With kernel events off (`KERNEL_EVENTS=false`, to diagnose) the poll also glances at the
//! namespace (links, sysctls) and the ruleset, which events would otherwise cover.

use super::tenant::TenantMsg;
use crate::kernel::watch::Dirty;
use crate::kernel::{
    DeviceObserved, DeviceState, FirewallObserved, Kernel, NetnsGlance, RuleObserved,
};
use crate::names::TenantNames;
use crate::reconcile::Observed;
use ractor::ActorRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Ticks per poll period: every tick reads 1/SLICES of the tenants, so the work is spread.
const SLICES: u64 = 50;

/// What a tenant's actor saw at its last successful reconcile, in the form the poll compares.
#[derive(Debug, Clone)]
pub struct Expect {
    inode: u64,
    netns: Option<NetnsGlance>,
    device: DeviceObserved,
    /// The ruleset as verified (rule texts, FORWARD, nat), compared without counters.
    firewall: FirewallObserved,
}

impl Expect {
    /// `None` when the observation is not of a complete tenant (nothing to compare with).
    pub fn of(o: &Observed) -> Option<Expect> {
        let netns = o.netns.as_ref()?;
        let DeviceState::Up(device) = &o.device else {
            return None;
        };
        Some(Expect {
            inode: netns.inode,
            netns: Some(netns.glance()),
            device: device.clone(),
            firewall: o.firewall.clone()?,
        })
    }
}

/// A device's shape: what a reconcile enforces (not bytes, handshakes or endpoints).
fn same_shape(a: &DeviceObserved, b: &DeviceObserved) -> bool {
    a.listen_port == b.listen_port
        && a.public_key == b.public_key
        && a.peers
            .iter()
            .map(|(k, p)| (k, &p.allowed_ips))
            .eq(b.peers.iter().map(|(k, p)| (k, &p.allowed_ips)))
}

/// One tenant due at a tick.
struct Due {
    org: Uuid,
    names: TenantNames,
    actor: ActorRef<TenantMsg>,
    expect: Arc<Expect>,
    counters: bool,
}

fn same_rules(a: &FirewallObserved, b: &FirewallObserved) -> bool {
    let texts = |f: &FirewallObserved| -> Option<Vec<String>> {
        f.acl
            .as_ref()
            .map(|r| r.iter().map(|r| r.rule.clone()).collect())
    };
    let watch = |f: &FirewallObserved| -> Option<Vec<String>> {
        f.watch
            .as_ref()
            .map(|r| r.iter().map(|r| r.rule.clone()).collect())
    };
    a.forward_policy == b.forward_policy
        && a.forward == b.forward
        && a.nat == b.nat
        && texts(a) == texts(b)
        && watch(a) == watch(b)
}

struct Entry {
    names: TenantNames,
    actor: ActorRef<TenantMsg>,
    expect: Option<Arc<Expect>>,
    counters_at: Instant,
}

/// Tenants to poll, registered by their actors.
#[derive(Default)]
pub struct PollRegistry {
    tenants: Mutex<HashMap<Uuid, Entry>>,
}

impl PollRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A (new or restarted) tenant actor: polled from its first good observation on.
    pub fn register(&self, org: Uuid, names: TenantNames, actor: ActorRef<TenantMsg>) {
        self.lock().insert(
            org,
            Entry {
                names,
                actor,
                expect: None,
                counters_at: Instant::now(),
            },
        );
    }

    /// The kernel as the tenant's last reconcile left it (`None`: do not poll until next).
    pub fn expect(&self, org: Uuid, expect: Option<Expect>) {
        if let Some(e) = self.lock().get_mut(&org) {
            e.expect = expect.map(Arc::new);
        }
    }

    pub fn remove(&self, org: Uuid, actor: &ActorRef<TenantMsg>) {
        let mut map = self.lock();
        if map
            .get(&org)
            .is_some_and(|e| e.actor.get_id() == actor.get_id())
        {
            map.remove(&org);
        }
    }
}

/// What one poll of one tenant found.
enum Found {
    Same,
    /// Numbers moved (bytes, handshakes, counters): for readers, no repair.
    Numbers(Box<DeviceObserved>, Option<Vec<RuleObserved>>),
    /// Shape differs: the actor must reconcile.
    Drift(u32),
}

async fn poll_one(
    kernel: &Kernel,
    names: &TenantNames,
    expect: &Expect,
    events: bool,
    counters: bool,
) -> Found {
    // One `stat` of the path proves the held handles still name the live namespace, so
    // nothing below needs to look again.
    if kernel.netns.identity(names) != Some(expect.inode) {
        return Found::Drift(Dirty::NETNS);
    }
    let Some(handles) = kernel.namespaces.held(&names.netns, expect.inode) else {
        return Found::Drift(Dirty::NETNS);
    };
    // Namespace-wide switches: a few reads of held files — those that announce no change (with
    // events off, all of them).
    let hold = if events {
        handles.silent_switches_hold()
    } else {
        handles
            .sysctls()
            .map(|s| s.ip_forward && s.ipv6_off && s.redirects_off)
    };
    if !matches!(hold, Ok(true)) {
        return Found::Drift(Dirty::SYSCTL);
    }
    if !events {
        match kernel.netns.glance(names).await {
            Ok(Some(g)) if Some(&g) == expect.netns.as_ref() => {}
            _ => return Found::Drift(Dirty::LINK | Dirty::SYSCTL),
        }
        match kernel.firewall.observe(names, false).await {
            Ok(fw) if same_rules(&fw, &expect.firewall) && fw.sets == expect.firewall.sets => {}
            _ => return Found::Drift(Dirty::FIREWALL),
        }
    } else if !expect.firewall.sets.is_empty() {
        match kernel.firewall.sets(&handles).await {
            Ok(sets) if sets == expect.firewall.sets => {}
            _ => return Found::Drift(Dirty::FIREWALL),
        }
    }
    let device = match kernel.wg.observe_unless(names, &expect.device).await {
        Ok(None) => None,
        Ok(Some(DeviceState::Up(d))) if same_shape(&d, &expect.device) => Some(d),
        // A slow daemon is an error, not a stale device: let the actor judge it.
        _ => return Found::Drift(Dirty::DEVICE),
    };
    let rules = if counters {
        match kernel.firewall.counters(names).await {
            Ok(Some(rules)) => Some(rules),
            // The ruleset moved under us without an event.
            _ => return Found::Drift(Dirty::FIREWALL),
        }
    } else {
        None
    };
    match (device, rules) {
        (None, None) => Found::Same,
        (device, rules) => Found::Numbers(
            Box::new(device.unwrap_or_else(|| expect.device.clone())),
            rules,
        ),
    }
}

/// Polls every registered tenant once per `period`, spread over [`SLICES`] ticks; rule
/// counters at most every `counters`.
pub fn start(
    registry: Arc<PollRegistry>,
    kernel: Kernel,
    period: Duration,
    counters: Duration,
    events: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / SLICES as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slice = 0u64;
        loop {
            tick.tick().await;
            slice = (slice + 1) % SLICES;
            let due: Vec<Due> = {
                let mut map = registry.lock();
                map.iter_mut()
                    .filter(|(_, e)| e.names.kid as u64 % SLICES == slice)
                    .filter_map(|(org, e)| {
                        let expect = e.expect.clone()?;
                        let counters_due = e.counters_at.elapsed() >= counters;
                        if counters_due {
                            e.counters_at = Instant::now();
                        }
                        Some(Due {
                            org: *org,
                            names: e.names.clone(),
                            actor: e.actor.clone(),
                            expect,
                            counters: counters_due,
                        })
                    })
                    .collect()
            };
            // Concurrently: the daemons answer in parallel, and the poll takes fewer wake-ups.
            let polls = due.into_iter().map(|d| {
                let (kernel, registry) = (&kernel, &registry);
                async move {
                    let found = poll_one(kernel, &d.names, &d.expect, events, d.counters).await;
                    let sent = match found {
                        Found::Same => Ok(()),
                        // Also when nothing moved: the status is sampled into the history
                        // rings once per counters period, and their time axis follows it.
                        Found::Numbers(device, rules) => {
                            d.actor.send_message(TenantMsg::Numbers(device, rules))
                        }
                        Found::Drift(bits) => {
                            // Until the actor has looked, there is nothing to compare with.
                            registry.expect(d.org, None);
                            d.actor.send_message(TenantMsg::Kick(bits))
                        }
                    };
                    if sent.is_err() {
                        registry.remove(d.org, &d.actor);
                    }
                }
            });
            futures_util::future::join_all(polls).await;
        }
    })
}

/// Rule counters merged into observed rules (same texts, new numbers).
pub fn with_counters(fw: &FirewallObserved, rules: Vec<RuleObserved>) -> Option<FirewallObserved> {
    let same = fw
        .acl
        .as_ref()?
        .iter()
        .map(|r| &r.rule)
        .eq(rules.iter().map(|r| &r.rule));
    same.then(|| FirewallObserved {
        acl: Some(rules),
        ..fw.clone()
    })
}
