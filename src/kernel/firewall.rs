//! The tenant firewall through iptables (whatever flavour `iptables` is on the host) and ipset.
//!
//! Reading: the nf_tables generation over netlink says whether anything was committed since the
//! last verified read; only then `iptables-save -c` runs (at adoption, after our own changes, and
//! when somebody else changed the ruleset). Counters and ipset members are read over netlink.
//! Writing: one `iptables-restore --noflush -c` transaction that sets FORWARD's policy to DROP,
//! leaves exactly one rule in FORWARD (the jump to the ACL chain) and rewrites the ACL chain,
//! carrying the counters of rules that stay. Tag sets are replaced by building a new set and
//! swapping it in.
//!
//! A small change of the chain alone (a policy created, edited, switched off or deleted) is an
//! in-place edit instead, at a cost that follows the change, not the chain: `iptables-restore`
//! positioning a rule by number loads the whole chain first (20–40 ms at 2,000 rules), so the
//! new rules are appended to an empty staging chain (what `iptables` writes, at a few ms), and
//! one nf_tables batch, refused if anything else committed meanwhile, deletes the old rules by
//! handle, copies the staged ones into place and drops the staging chain. Should any step fail,
//! the chain is rewritten through `iptables-restore` (which needs no positions).

use super::netns::nl;
use super::nl::{conntrack, nft};
use super::ns::{Namespaces, NsHandles};
use super::{Firewall, FirewallObserved, FirewallRules, FlowKey, KResult, RuleObserved};
use crate::cmd::Cmd;
use crate::names::{ACL_CHAIN, TENANT_IFACE, TenantNames};
use crate::policy::watch::WATCH_CHAIN;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// The one rule FORWARD must hold.
pub fn forward_jump() -> String {
    format!("-A FORWARD -i {TENANT_IFACE} -o {TENANT_IFACE} -j {ACL_CHAIN}")
}

/// The jump to the watch chain, before [`forward_jump`] while the tenant has watches.
pub fn watch_jump() -> String {
    format!("-A FORWARD -i {TENANT_IFACE} -o {TENANT_IFACE} -j {WATCH_CHAIN}")
}

/// What FORWARD must hold for `rules`: the single jump to the ACL chain, preceded by the jump
/// to the watch chain while there are watches (counting only: it changes no verdict).
pub fn forward_rules(rules: &FirewallRules) -> Vec<String> {
    let mut f = Vec::with_capacity(2);
    if !rules.watch.is_empty() {
        f.push(watch_jump());
    }
    f.push(forward_jump());
    f
}

/// Splits an `iptables-save -c` rule line into counters and rule text.
fn split_counters(line: &str) -> (u64, u64, &str) {
    if let Some(rest) = line.strip_prefix('[')
        && let Some((counts, rule)) = rest.split_once("] ")
        && let Some((p, b)) = counts.split_once(':')
    {
        return (p.parse().unwrap_or(0), b.parse().unwrap_or(0), rule);
    }
    (0, 0, line)
}

/// Parses `iptables-save -c` output into what the planner compares.
pub fn parse_save(text: &str) -> FirewallObserved {
    let mut obs = FirewallObserved::default();
    let mut table = "";
    let acl_decl = format!(":{ACL_CHAIN} ");
    let acl_rule = format!("-A {ACL_CHAIN} ");
    let watch_decl = format!(":{WATCH_CHAIN} ");
    let watch_rule = format!("-A {WATCH_CHAIN} ");
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = if t == "filter" {
                "filter"
            } else if t == "nat" {
                "nat"
            } else {
                "other"
            };
            continue;
        }
        match table {
            "filter" => {
                if let Some(rest) = line.strip_prefix(":FORWARD ") {
                    obs.forward_policy = rest.split_whitespace().next().map(str::to_string);
                } else if line.starts_with(&acl_decl) {
                    obs.acl.get_or_insert_with(Vec::new);
                } else if line.starts_with(&watch_decl) {
                    obs.watch.get_or_insert_with(Vec::new);
                } else {
                    let (packets, bytes, rule) = split_counters(line);
                    if rule.starts_with("-A FORWARD ") {
                        obs.forward.push(rule.to_string());
                    } else if rule.starts_with(&acl_rule) {
                        obs.acl.get_or_insert_with(Vec::new).push(RuleObserved {
                            rule: rule.to_string(),
                            packets,
                            bytes,
                        });
                    } else if rule.starts_with(&watch_rule) {
                        obs.watch.get_or_insert_with(Vec::new).push(RuleObserved {
                            rule: rule.to_string(),
                            packets,
                            bytes,
                        });
                    }
                }
            }
            "nat" => {
                let (_, _, rule) = split_counters(line);
                if rule.starts_with("-A ") {
                    obs.nat.push(rule.to_string());
                }
            }
            _ => {}
        }
    }
    obs
}

/// Parses `ipset save`: `create NAME hash:ip …` and `add NAME 10.0.0.2` lines.
pub fn parse_ipset(text: &str) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut sets: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next(), f.next()) {
            (Some("create"), Some(name), _) => {
                sets.entry(name.to_string()).or_default();
            }
            (Some("add"), Some(name), Some(member)) => {
                if let Ok(ip) = member.trim_end_matches("/32").parse() {
                    sets.entry(name.to_string()).or_default().insert(ip);
                }
            }
            _ => {}
        }
    }
    sets
}

/// The `iptables-restore --noflush -c` transaction for a tenant.
pub fn restore_script(rules: &FirewallRules, carry: &BTreeMap<String, (u64, u64)>) -> String {
    restore_script_watching(rules, carry, false)
}

/// [`restore_script`] that also removes a watch chain the tenant no longer needs (`drop_watch`:
/// one may exist). The watch chain is declared (made or flushed) only when needed.
pub fn restore_script_watching(
    rules: &FirewallRules,
    carry: &BTreeMap<String, (u64, u64)>,
    drop_watch: bool,
) -> String {
    let watching = !rules.watch.is_empty();
    let mut s = String::from("*filter\n:FORWARD DROP [0:0]\n");
    let _ = writeln!(s, ":{ACL_CHAIN} - [0:0]");
    if watching || drop_watch {
        let _ = writeln!(s, ":{WATCH_CHAIN} - [0:0]");
    }
    s.push_str("-F FORWARD\n");
    for jump in forward_rules(rules) {
        let _ = writeln!(s, "[0:0] {jump}");
    }
    for rule in rules.acl.iter().chain(&rules.watch) {
        let (p, b) = carry.get(rule).copied().unwrap_or((0, 0));
        let _ = writeln!(s, "[{p}:{b}] {rule}");
    }
    if !watching && drop_watch {
        // Unreferenced (FORWARD was flushed above) and empty (declared above): it can go.
        let _ = writeln!(s, "-X {WATCH_CHAIN}");
    }
    s.push_str("COMMIT\n");
    s
}

/// Most rules an in-place edit of the chain may touch; past that the chain is rewritten.
pub const INCREMENTAL_MAX: usize = 32;

/// Where new rules wait to be copied into the ACL chain (see the module's head); gone at the end
/// of every edit, and emptied by the next one if a crash left it.
pub const STAGE_CHAIN: &str = "MWG-STAGE";
/// How often the ruleset generation is read while `iptables-restore` stages rules.
const STAGE_PEEK: std::time::Duration = std::time::Duration::from_millis(1);

/// The in-place edit that turns the chain `have` into `want`: the rules after the common head
/// and before the common tail go, the new ones take their place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit<'a> {
    /// How many rules at the top stay.
    pub head: usize,
    /// How many rules after those go.
    pub gone: usize,
    /// The rules that come in their place, in order.
    pub new: &'a [String],
}

impl<'a> Edit<'a> {
    /// `None` when more than [`INCREMENTAL_MAX`] rules would be touched.
    pub fn between(have: &[String], want: &'a [String]) -> Option<Self> {
        let head = have.iter().zip(want).take_while(|(h, w)| h == w).count();
        let tail = have[head..]
            .iter()
            .rev()
            .zip(want[head..].iter().rev())
            .take_while(|(h, w)| h == w)
            .count();
        let (gone, new) = (have.len() - tail - head, &want[head..want.len() - tail]);
        (gone + new.len() <= INCREMENTAL_MAX).then_some(Edit { head, gone, new })
    }

    /// The new rules appended to an emptied staging chain.
    pub fn stage_script(&self) -> Option<String> {
        let mut s = format!("*filter\n:{STAGE_CHAIN} - [0:0]\n");
        for rule in self.new {
            let _ = writeln!(s, "-A {STAGE_CHAIN} {}", acl_rest(rule)?);
        }
        s.push_str("COMMIT\n");
        Some(s)
    }
}

/// An ACL rule's text after `-A MWG-ACL `.
fn acl_rest(rule: &str) -> Option<&str> {
    rule.strip_prefix("-A ")?
        .strip_prefix(ACL_CHAIN)?
        .strip_prefix(' ')
}

/// The protocol number of a rule's `-p` (what x_tables matches such as `-m tcp` are checked
/// against when a rule is made).
pub fn rule_protocol(rule: &str) -> Option<u8> {
    let mut words = rule.split_whitespace();
    words.find(|w| *w == "-p")?;
    match words.next()? {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        other => other.parse().ok(),
    }
}

/// Drops the staging chain, if a failed edit left it (best effort: the next edit empties it).
async fn drop_stage(h: &NsHandles) {
    let mut batch = nft::Batch::new(0);
    batch.delete_chain("filter", STAGE_CHAIN);
    if let Err(e) = batch.commit(&h.nfnl).await {
        tracing::debug!(netns = %h.netns, error = %e, "staging chain not dropped");
    }
}

/// The generation after one more commit (the kernel skips 0).
fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// The `ipset restore` script that replaces each desired set atomically (build, then swap).
/// Sets start with the fewest hash buckets (they grow as members come): the cheap poll lists
/// every set every 1.5 s, and the kernel walks all buckets of a set to list it, 1,024 of them
/// by default for a tag of five machines. (`-exist` takes a set that differs only in its hash
/// size for the same set, so sets made with the default are kept until they next change.)
pub fn ipset_script(sets: &BTreeMap<String, BTreeSet<Ipv4Addr>>) -> String {
    let mut s = String::new();
    for (name, members) in sets {
        let tmp = format!("{name}-n");
        let _ = writeln!(s, "create {name} hash:ip family inet hashsize 64");
        let _ = writeln!(s, "create {tmp} hash:ip family inet hashsize 64");
        let _ = writeln!(s, "flush {tmp}");
        for ip in members {
            let _ = writeln!(s, "add {tmp} {ip}");
        }
        let _ = writeln!(s, "swap {tmp} {name}");
        let _ = writeln!(s, "destroy {tmp}");
    }
    s
}

/// What `iptables-save` showed at a generation, so an unchanged ruleset is not read again.
struct Verified {
    inode: u64,
    generation: u32,
    observed: FirewallObserved,
    /// The ACL chain's rule handles at `generation`, in order, once a dump showed them.
    handles: Option<Vec<u64>>,
}

/// [`Firewall`] over iptables (whatever flavour `iptables` is) and ipset. Reading is native
/// where the kernel allows it: the nf_tables generation tells whether anything changed since
/// the last verified read (only then is `iptables-save` run), rule counters come from a
/// netlink dump of the chain, ipset members from a netlink list.
pub struct Iptables {
    namespaces: Arc<Namespaces>,
    verified: Mutex<HashMap<String, Verified>>,
}

impl Iptables {
    pub fn new(namespaces: Arc<Namespaces>) -> Self {
        Self {
            namespaces,
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `iptables-save -c`, parsed and remembered with the generation it was read at (only if
    /// nothing committed while it ran).
    async fn save(
        &self,
        names: &TenantNames,
        h: &NsHandles,
        before: u32,
    ) -> KResult<FirewallObserved> {
        let text = Cmd::new("iptables-save")
            .arg("-c")
            .netns(&names.netns)
            .run()
            .await?;
        let observed = parse_save(&text);
        let after = nft::generation(&h.nfnl)
            .await
            .map_err(|e| nl(&names.netns, e))?;
        if after == before {
            self.lock().insert(
                names.netns.clone(),
                Verified {
                    inode: h.inode,
                    generation: before,
                    observed: observed.clone(),
                    handles: None,
                },
            );
        }
        Ok(observed)
    }

    /// Remembers the tables as `have` with the chain as rendered, verified at `generation`.
    fn remember_edit(
        &self,
        names: &TenantNames,
        h: &NsHandles,
        have: &FirewallObserved,
        rules: &FirewallRules,
        generation: u32,
        handles: Option<Vec<u64>>,
    ) {
        let acl = rules
            .acl
            .iter()
            .map(|rule| RuleObserved {
                rule: rule.clone(),
                packets: 0,
                bytes: 0,
            })
            .collect();
        self.lock().insert(
            names.netns.clone(),
            Verified {
                inode: h.inode,
                generation,
                observed: FirewallObserved {
                    forward_policy: have.forward_policy.clone(),
                    forward: have.forward.clone(),
                    acl: Some(acl),
                    // An edit leaves the watch chain as it was.
                    watch: have.watch.clone(),
                    nat: have.nat.clone(),
                    sets: rules.sets.clone(),
                    generation: Some(generation),
                },
                handles,
            },
        );
    }

    /// Remembers the ACL chain's handles, dumped at `generation`, if that is still the
    /// generation verified (a batch naming the generation is refused otherwise anyway).
    fn remember_handles(&self, netns: &str, generation: u32, counted: &[nft::Counted]) {
        if let Some(v) = self.lock().get_mut(netns)
            && v.generation == generation
            && v.observed
                .acl
                .as_ref()
                .is_some_and(|a| a.len() == counted.len())
        {
            v.handles = Some(counted.iter().map(|c| c.handle).collect());
        }
    }

    /// The edit of the ACL chain from `have` to `rules` in one nf_tables batch (see the
    /// module's head), with the chain's handles at `have`'s generation if `known` (else they
    /// are dumped). On success the result is remembered as verified.
    async fn edit_natively(
        &self,
        names: &TenantNames,
        h: &NsHandles,
        have: &FirewallObserved,
        rules: &FirewallRules,
        edit: &Edit<'_>,
        known: Option<Vec<u64>>,
    ) -> Result<(), String> {
        let read_at = have.generation.ok_or("the chain's generation is unknown")?;
        let len = have.acl.as_ref().map_or(0, Vec::len);
        let handles = match known.filter(|k| k.len() == len) {
            Some(k) => k,
            None => {
                let now = nft::generation(&h.nfnl).await.map_err(|e| e.to_string())?;
                let dumped = nft::chain_counters(&h.nfnl, "filter", ACL_CHAIN)
                    .await
                    .map_err(|e| e.to_string())?;
                if now != read_at || dumped.len() != len {
                    return Err("the chain changed since it was read".into());
                }
                dumped.iter().map(|c| c.handle).collect()
            }
        };
        // The chain is already as rendered (only a set's members moved): nothing to commit, and
        // the generation stays the one read.
        if edit.gone == 0 && edit.new.is_empty() {
            self.remember_edit(names, h, have, rules, read_at, Some(handles));
            return Ok(());
        }
        let mut generation = read_at;
        let mut staged = Vec::new();
        if !edit.new.is_empty() {
            let script = edit.stage_script().ok_or("a rule outside the chain")?;
            let mut staging = Box::pin(
                Cmd::new("iptables-restore")
                    .arg("--noflush")
                    .netns(&names.netns)
                    .stdin(script.into_bytes())
                    .run(),
            );
            // The staging commit is in the kernel well before `iptables-restore` exits: closing
            // its netlink socket waits for nf_tables' deferred release of the commit (an RCU
            // grace period, 10–30 ms here, longer on a busy host). So the ruleset generation is
            // peeked at meanwhile; once it moved by one, the staged rules are read at once.
            let exited = loop {
                tokio::select! {
                    done = &mut staging => {
                        done.map_err(|e| e.to_string())?;
                        break true;
                    }
                    () = tokio::time::sleep(STAGE_PEEK) => {
                        if nft::generation(&h.nfnl).await.ok() == Some(next_generation(read_at)) {
                            break false;
                        }
                    }
                }
            };
            let read = async {
                let g = nft::generation(&h.nfnl).await?;
                Ok::<_, super::nl::NlError>((
                    g,
                    nft::chain_rules(&h.nfnl, "filter", STAGE_CHAIN).await?,
                ))
            };
            match read.await {
                Ok((g, rules))
                    if g == next_generation(read_at) && rules.len() == edit.new.len() =>
                {
                    (generation, staged) = (g, rules);
                    if !exited {
                        let netns = names.netns.clone();
                        tokio::spawn(async move {
                            if let Err(e) = staging.await {
                                tracing::warn!(netns, error = %e, "staging rules ended badly after committing them");
                            }
                        });
                    }
                }
                other => {
                    // Whatever committed was not (all) ours: let ours end before the staging
                    // chain goes, so that it cannot come back after.
                    if !exited {
                        let _ = staging.await;
                    }
                    drop_stage(h).await;
                    return Err(match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "the ruleset changed while the rules were staged".into(),
                    });
                }
            }
        }
        let mut batch = nft::Batch::new(generation);
        for &handle in &handles[edit.head..edit.head + edit.gone] {
            batch.delete("filter", ACL_CHAIN, handle);
        }
        let place = handles
            .get(edit.head + edit.gone)
            .map_or(nft::Place::End, |&h| nft::Place::Before(h));
        for (rule, raw) in edit.new.iter().zip(&staged) {
            batch.insert("filter", ACL_CHAIN, place, raw, rule_protocol(rule));
        }
        if !staged.is_empty() {
            batch.delete_chain("filter", STAGE_CHAIN);
        }
        let inserted = match batch.commit(&h.nfnl).await {
            Ok(inserted) => inserted,
            Err(e) => {
                if !staged.is_empty() {
                    drop_stage(h).await;
                }
                return Err(e.to_string());
            }
        };
        // Committed; the new rules' handles are known if the kernel echoed each of them.
        let handles = inserted.map(|inserted| {
            handles[..edit.head]
                .iter()
                .chain(&inserted)
                .chain(&handles[edit.head + edit.gone..])
                .copied()
                .collect()
        });
        self.remember_edit(names, h, have, rules, next_generation(generation), handles);
        Ok(())
    }

    /// Destroys the sets no rule needs any more. The kernel lets go of a deleted rule's
    /// references after its commit, from a deferred work item (after an RCU grace period), so
    /// a set the commit just freed may still be "in use" for a few milliseconds: tried again
    /// with backoff for up to ~0.3 s before the error is reported.
    async fn drop_stale_sets(
        &self,
        names: &TenantNames,
        before: &BTreeMap<String, BTreeSet<Ipv4Addr>>,
        rules: &FirewallRules,
    ) -> KResult<()> {
        let stale: String = before
            .keys()
            .filter(|n| !rules.sets.contains_key(*n))
            .map(|n| format!("destroy {n}\n"))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut wait = std::time::Duration::from_millis(5);
        loop {
            let done = Cmd::new("ipset")
                .args(["-exist", "restore"])
                .netns(&names.netns)
                .stdin(stale.clone().into_bytes())
                .run()
                .await;
            match done {
                Err(e) if wait < std::time::Duration::from_millis(200) => {
                    tracing::debug!(netns = %names.netns, error = %e, "stale sets not destroyed yet");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                done => return Ok(done.map(|_| ())?),
            }
        }
    }

    async fn handles(&self, names: &TenantNames) -> KResult<Arc<NsHandles>> {
        self.namespaces
            .get(&names.netns)
            .await
            .map_err(|e| nl(&names.netns, e))
    }
}

#[async_trait::async_trait]
impl Firewall for Iptables {
    async fn observe(&self, names: &TenantNames, with_counters: bool) -> KResult<FirewallObserved> {
        let h = self.handles(names).await?;
        let generation = nft::generation(&h.nfnl)
            .await
            .map_err(|e| nl(&names.netns, e))?;
        let cached = self.lock().get(&names.netns).and_then(|v| {
            (v.inode == h.inode && v.generation == generation).then(|| v.observed.clone())
        });
        let mut observed = match cached {
            Some(o) if !with_counters => o,
            Some(mut o) => {
                // Same ruleset as verified: only the counters moved.
                let counters = nft::chain_counters(&h.nfnl, "filter", ACL_CHAIN)
                    .await
                    .map_err(|e| nl(&names.netns, e))?;
                self.remember_handles(&names.netns, generation, &counters);
                if let Some(acl) = o.acl.as_mut()
                    && acl.len() == counters.len()
                {
                    for (rule, c) in acl.iter_mut().zip(counters) {
                        rule.packets = c.packets;
                        rule.bytes = c.bytes;
                    }
                }
                o
            }
            None => self.save(names, &h, generation).await?,
        };
        observed.generation = Some(generation);
        observed.sets = nft::ipsets(&h.nfnl)
            .await
            .map_err(|e| nl(&names.netns, e))?;
        Ok(observed)
    }

    async fn apply(
        &self,
        names: &TenantNames,
        rules: &FirewallRules,
        have: Option<&FirewallObserved>,
    ) -> KResult<()> {
        let h = self.handles(names).await?;
        // Whatever happens next, the next read verifies the result. The chain's handles, if
        // known at the generation `have` was read at, serve an in-place edit.
        let known = self.lock().remove(&names.netns).and_then(|v| {
            let at = have.and_then(|fw| fw.generation);
            (v.inode == h.inode && Some(v.generation) == at).then_some(v.handles)?
        });
        // The sets as just observed, or read now.
        let before = match have {
            Some(fw) => fw.sets.clone(),
            None => nft::ipsets(&h.nfnl)
                .await
                .map_err(|e| nl(&names.netns, e))?,
        };
        // Sets already as wanted (a policy change that moves no tag) need no process.
        if !rules.sets.is_empty() && before != rules.sets {
            Cmd::new("ipset")
                .args(["-exist", "restore"])
                .netns(&names.netns)
                .stdin(ipset_script(&rules.sets).into_bytes())
                .run()
                .await?;
        }
        // Only the chain differs, and little of it: edit it in place. Otherwise rewrite FORWARD
        // and the chain, carrying the counters of rules that stay.
        let edit = have.and_then(|fw| {
            let acl: Vec<String> = fw.acl.as_ref()?.iter().map(|r| r.rule.clone()).collect();
            let watch: Vec<&String> = fw.watch.iter().flatten().map(|r| &r.rule).collect();
            let table_ok = fw.forward_policy.as_deref() == Some("DROP")
                && fw.forward == forward_rules(rules)
                && fw.watch.is_some() != rules.watch.is_empty()
                && watch.into_iter().eq(rules.watch.iter());
            table_ok.then(|| Edit::between(&acl, &rules.acl)).flatten()
        });
        if let (Some(e), Some(have)) = (&edit, have) {
            match self.edit_natively(names, &h, have, rules, e, known).await {
                Ok(()) => return self.drop_stale_sets(names, &before, rules).await,
                // Whether the chain is still `have` is no longer known (somebody else may have
                // committed, or the batch's answer was lost): rewrite it, which needs no
                // positions.
                Err(why) => {
                    tracing::warn!(netns = %names.netns, error = %why, "in-place chain edit not made; the chain is rewritten")
                }
            }
        }
        // Otherwise: FORWARD and the chain rewritten, carrying the counters of rules that stay.
        let mut carry: BTreeMap<String, (u64, u64)> = have
            .iter()
            .flat_map(|fw| fw.acl.iter().flatten().chain(fw.watch.iter().flatten()))
            .map(|r| (r.rule.clone(), (r.packets, r.bytes)))
            .collect();
        // A change looks at the chain without its counters: carry the chain's own.
        if let Some(acl) = have.and_then(|fw| fw.acl.as_ref())
            && let Ok(now) = nft::chain_counters(&h.nfnl, "filter", ACL_CHAIN).await
            && now.len() == acl.len()
        {
            for (rule, c) in acl.iter().zip(now) {
                carry.insert(rule.rule.clone(), (c.packets, c.bytes));
            }
        }
        // Not known to be absent: make sure a watch chain nobody needs is gone.
        let drop_watch = have.is_none_or(|fw| fw.watch.is_some());
        let script = restore_script_watching(rules, &carry, drop_watch);
        Cmd::new("iptables-restore")
            .args(["--noflush", "--counters"])
            .netns(&names.netns)
            .stdin(script.into_bytes())
            .run()
            .await?;
        self.drop_stale_sets(names, &before, rules).await
    }

    async fn sets(
        &self,
        h: &NsHandles,
        names: &[&str],
    ) -> KResult<BTreeMap<String, BTreeSet<Ipv4Addr>>> {
        nft::ipsets_named(&h.nfnl, names)
            .await
            .map_err(|e| nl(&h.netns, e))
    }

    async fn revoke(
        &self,
        names: &TenantNames,
        keep: &(dyn Fn(FlowKey) -> bool + Send + Sync),
    ) -> KResult<usize> {
        let h = self.handles(names).await?;
        let flows = conntrack::flows(&h.nfnl)
            .await
            .map_err(|e| nl(&names.netns, e))?;
        let mut cut = 0;
        for f in flows {
            let key = FlowKey {
                src: f.src,
                dst: f.dst,
                proto: f.proto,
                dport: f.dport,
            };
            if !keep(key) {
                conntrack::delete(&h.nfnl, &f)
                    .await
                    .map_err(|e| nl(&names.netns, e))?;
                cut += 1;
            }
        }
        Ok(cut)
    }

    async fn counters(&self, names: &TenantNames) -> KResult<Option<Vec<RuleObserved>>> {
        let Some(h) = self.namespaces.cached(&names.netns) else {
            return Ok(None);
        };
        let Some((generation, mut rules)) = self.lock().get(&names.netns).and_then(|v| {
            (v.inode == h.inode).then(|| (v.generation, v.observed.acl.clone().unwrap_or_default()))
        }) else {
            return Ok(None);
        };
        let now = nft::generation(&h.nfnl)
            .await
            .map_err(|e| nl(&names.netns, e))?;
        let counters = nft::chain_counters(&h.nfnl, "filter", ACL_CHAIN)
            .await
            .map_err(|e| nl(&names.netns, e))?;
        if now != generation || counters.len() != rules.len() {
            return Ok(None);
        }
        self.remember_handles(&names.netns, generation, &counters);
        for (rule, c) in rules.iter_mut().zip(counters) {
            rule.packets = c.packets;
            rule.bytes = c.bytes;
        }
        Ok(Some(rules))
    }

    async fn watch_counters(&self, names: &TenantNames) -> KResult<Vec<RuleObserved>> {
        // Always read: a watch lives for a minute or two, and a reader wants its numbers now.
        let text = Cmd::new("iptables-save")
            .args(["-c", "-t", "filter"])
            .netns(&names.netns)
            .run()
            .await?;
        Ok(parse_save(&text).watch.unwrap_or_default())
    }

    async fn flush_nat(&self, names: &TenantNames) -> KResult<()> {
        self.lock().remove(&names.netns);
        // A restore without --noflush empties every chain of the tables it names and removes
        // their user chains: one transaction, one process.
        Cmd::new("iptables-restore")
            .netns(&names.netns)
            .stdin(b"*nat\nCOMMIT\n".to_vec())
            .run()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [12:1000]
:OUTPUT ACCEPT [0:0]
:MWG-ACL - [0:0]
[3:180] -A FORWARD -j ACCEPT
[40:3360] -A FORWARD -i wg0 -o wg0 -j MWG-ACL
[5:420] -A MWG-ACL -s 10.100.0.2/32 -d 10.100.0.3/32 -p icmp -m comment --comment \"mwg:p1\" -j DROP
[35:2940] -A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
[0:0] -A POSTROUTING -j MASQUERADE
COMMIT
";

    #[test]
    fn parses_filter_and_nat() {
        let o = parse_save(SAVE);
        assert_eq!(o.forward_policy.as_deref(), Some("DROP"));
        assert_eq!(
            o.forward,
            vec!["-A FORWARD -j ACCEPT".to_string(), forward_jump()]
        );
        let acl = o.acl.unwrap();
        assert_eq!(acl.len(), 2);
        assert_eq!((acl[0].packets, acl[0].bytes), (5, 420));
        assert!(acl[0].rule.starts_with("-A MWG-ACL -s 10.100.0.2/32"));
        assert_eq!(o.nat, vec!["-A POSTROUTING -j MASQUERADE".to_string()]);
    }

    #[test]
    fn missing_chain_is_none() {
        let o = parse_save("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(o.acl, None);
        assert_eq!(o.forward_policy.as_deref(), Some("ACCEPT"));
        assert!(o.forward.is_empty());
    }

    #[test]
    fn small_changes_edit_the_chain_in_place() {
        let rule = |n: u8| format!("-A MWG-ACL -s 10.0.0.{n}/32 -j ACCEPT");
        let have: Vec<String> = (1..=5).map(rule).collect();
        // One rule added in the middle.
        let mut want = have.clone();
        want.insert(2, rule(9));
        let e = Edit::between(&have, &want).unwrap();
        assert_eq!((e.head, e.gone, e.new), (2, 0, &want[2..3]));
        assert_eq!(
            e.stage_script().unwrap(),
            "*filter\n:MWG-STAGE - [0:0]\n-A MWG-STAGE -s 10.0.0.9/32 -j ACCEPT\nCOMMIT\n"
        );
        // One removed, one changed: two go, one comes in their place.
        let want = vec![rule(1), rule(7), rule(4), rule(5)];
        let e = Edit::between(&have, &want).unwrap();
        assert_eq!((e.head, e.gone, e.new), (1, 2, &want[1..2]));
        // The last rule gone: nothing after the edit to insert before.
        let e = Edit::between(&have, &have[..4]).unwrap();
        assert_eq!((e.head, e.gone, e.new.len()), (4, 1, 0));
        let none = Edit::between(&have, &have).unwrap();
        assert_eq!((none.head, none.gone, none.new.len()), (5, 0, 0));
        // Too much at once: rewrite instead.
        let many: Vec<String> = (100..140).map(rule).collect();
        assert!(Edit::between(&have, &many).is_none());
    }

    #[test]
    fn rule_protocols_and_generations() {
        assert_eq!(
            rule_protocol("-A MWG-ACL -p tcp -m tcp --dport 22 -j DROP"),
            Some(6)
        );
        assert_eq!(
            rule_protocol("-A MWG-ACL -s 10.0.0.1/32 -p udp -j DROP"),
            Some(17)
        );
        assert_eq!(rule_protocol("-A MWG-ACL -p icmp -j DROP"), Some(1));
        assert_eq!(
            rule_protocol("-A MWG-ACL -m comment --comment \"-p tcp\" -j DROP"),
            None
        );
        assert_eq!(next_generation(u32::MAX), 1);
        assert_eq!(next_generation(7), 8);
    }

    #[test]
    fn restore_script_carries_counters() {
        let rules = FirewallRules {
            acl: vec!["-A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT".into()],
            sets: Default::default(),
            watch: vec![],
        };
        let carry = BTreeMap::from([(rules.acl[0].clone(), (7, 700))]);
        let s = restore_script(&rules, &carry);
        assert_eq!(
            s,
            "*filter\n:FORWARD DROP [0:0]\n:MWG-ACL - [0:0]\n-F FORWARD\n[0:0] -A FORWARD -i wg0 -o wg0 -j MWG-ACL\n[7:700] -A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn the_watch_chain_is_read_and_written_only_while_there_are_watches() {
        let watch = "-A MWG-WATCH -s 10.100.0.2/32 -d 10.100.0.3/32 -p icmp -m comment --comment \"mwg-watch:w\"";
        let rules = FirewallRules {
            acl: vec!["-A MWG-ACL -m comment --comment \"mwg:default\" -j ACCEPT".into()],
            sets: Default::default(),
            watch: vec![watch.into()],
        };
        let carry = BTreeMap::from([(watch.to_string(), (5, 420))]);
        let s = restore_script_watching(&rules, &carry, false);
        assert_eq!(
            s,
            format!(
                "*filter\n:FORWARD DROP [0:0]\n:MWG-ACL - [0:0]\n:MWG-WATCH - [0:0]\n-F FORWARD\n[0:0] {}\n[0:0] {}\n[0:0] {}\n[5:420] {watch}\nCOMMIT\n",
                watch_jump(),
                forward_jump(),
                rules.acl[0]
            )
        );
        let o = parse_save(&s);
        assert_eq!(o.forward, forward_rules(&rules));
        let w = o.watch.unwrap();
        assert_eq!((w[0].rule.as_str(), w[0].packets), (watch, 5));
        // No watches left: the chain is emptied and removed in the same transaction.
        let none = FirewallRules {
            watch: vec![],
            ..rules
        };
        let s = restore_script_watching(&none, &carry, true);
        assert!(s.contains(":MWG-WATCH - [0:0]\n") && s.ends_with("-X MWG-WATCH\nCOMMIT\n"));
        assert!(!s.contains(&watch_jump()));
        assert_eq!(parse_save(&restore_script(&none, &carry)).watch, None);
    }

    #[test]
    fn ipset_parse_and_script() {
        let sets = parse_ipset(
            "create mwgtabc hash:ip family inet hashsize 1024 maxelem 65536\nadd mwgtabc 10.1.0.2\nadd mwgtabc 10.1.0.3\ncreate other hash:ip family inet\n",
        );
        assert_eq!(sets["mwgtabc"].len(), 2);
        assert!(sets["other"].is_empty());
        let script = ipset_script(&sets);
        assert!(script.contains("swap mwgtabc-n mwgtabc\n"));
        assert!(script.contains("add mwgtabc-n 10.1.0.2\n"));
    }
}
