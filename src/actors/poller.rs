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
//! A glance costs a few system calls: the daemon's `rchar` (a quiet wireguard-go is not asked,
//! see `kernel::uapi`) and a netlink list of the tenant's ipsets by name; every counters period
//! (15 s) also three sysctl reads and the rule counters. Whether the namespace is still the one
//! held is the namespace directory's inotify feed's to say.
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

/// Ticks per poll period: every tick reads 1/SLICES of the tenants, so the work is spread. Few
/// enough that waking the runtime costs little beside the glances, which are also cheaper
/// together (warm caches): at 300 idle tenants the controller took 1.92 % of a core with 50
/// ticks per 1.5 s, 1.40 % with 10 and 1.30 % with 5 (`cargo bench --bench scale`).
const SLICES: u64 = 5;

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
    // The held handles must still name the live namespace. With events on, the namespace
    // directory's feed announces a namespace deleted or replaced (and its handles are then
    // forgotten, so the lookup below fails); without, one `stat` of the path proves it.
    if !events && kernel.netns.identity(names) != Some(expect.inode) {
        return Found::Drift(Dirty::NETNS);
    }
    let Some(handles) = kernel.namespaces.held(&names.netns, expect.inode) else {
        return Found::Drift(Dirty::NETNS);
    };
    // Namespace-wide switches: a few reads of held files. With events on, only the three that
    // announce no change (ICMP redirects, IPv6 for new interfaces: hardening, not a way out),
    // and only every counters period; without events, all of them at every glance.
    let hold = if !events {
        handles
            .sysctls()
            .map(|s| s.ip_forward && s.ipv6_off && s.redirects_off)
    } else if counters {
        handles.silent_switches_hold()
    } else {
        Ok(true)
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
        // By name: a foreign set is no drift until a rule uses it (an event), and listing
        // every set costs more than listing a few by name.
        let names: Vec<&str> = expect.firewall.sets.keys().map(String::as_str).collect();
        match kernel.firewall.sets(&handles, &names).await {
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
