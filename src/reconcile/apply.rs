//! Observing, applying and converging: the effectful half of reconciliation, through the
//! [`Kernel`] traits only.

use super::{Action, Desired, HUB_MTU, Observed, plan};
use crate::cmd::CmdError;
use crate::kernel::{DeviceState, KResult, Kernel, KernelError};
use crate::names::{TENANT_IFACE, TenantNames};

/// How many observe → plan → apply rounds a reconcile may take before it reports failure.
const MAX_ROUNDS: usize = 4;

/// Reads everything the planner compares, concurrently; the rule counters only if `counters`
/// (the plan needs none; what is published does).
pub async fn observe(kernel: &Kernel, names: &TenantNames, counters: bool) -> KResult<Observed> {
    let (netns, device, firewall) = tokio::join!(
        kernel.netns.observe(names),
        kernel.wg.observe(names),
        kernel.firewall.observe(names, counters),
    );
    let netns = netns?;
    let device = device?;
    let firewall = match firewall {
        Ok(fw) if netns.is_some() => Some(fw),
        Ok(_) | Err(KernelError::Cmd(CmdError::NoNetns(_))) => None,
        Err(e) => return Err(e),
    };
    // Only a device that is not in its namespace can have a birth link left in ours.
    let in_netns = netns.as_ref().is_some_and(|n| {
        n.links
            .iter()
            .any(|l| l.name == TENANT_IFACE || l.name == names.birth)
    });
    let host_link = !in_netns && kernel.netns.birth_link_in_host(names).await?;
    Ok(Observed {
        netns,
        host_link,
        device,
        firewall,
    })
}

async fn apply_one(kernel: &Kernel, d: &Desired, o: &Observed, action: &Action) -> KResult<()> {
    let names = &d.names;
    match action {
        Action::CreateNetns => kernel.netns.create(names).await,
        Action::ApplyFirewall => {
            kernel
                .firewall
                .apply(names, &d.firewall, o.firewall.as_ref())
                .await
        }
        Action::FlushNat => kernel.firewall.flush_nat(names).await,
        Action::DeleteLink(link) => kernel.netns.delete_link(names, link).await,
        Action::DeleteRoute(route) => kernel.netns.delete_route(names, route).await,
        Action::DestroyDevice => {
            kernel.wg.destroy(names).await?;
            if kernel.netns.birth_link_in_host(names).await? {
                kernel.netns.delete_host_link(&names.birth).await?;
            }
            Ok(())
        }
        Action::CreateDevice => kernel.wg.create(names).await,
        Action::ConfigureDevice => {
            kernel
                .wg
                .configure(names, &d.private_key, d.listen_port)
                .await
        }
        Action::MoveDevice => kernel.netns.move_birth_link(names).await,
        Action::RenameDevice { from } => kernel.netns.rename_to_wg0(names, from).await,
        Action::ConfigureWg0 => {
            kernel
                .netns
                .configure_wg0(names, d.hub_address, d.prefix, HUB_MTU)
                .await
        }
        Action::SetSysctls => kernel.netns.set_sysctls(names).await,
        Action::SetPeers { upsert, remove } => kernel.wg.set_peers(names, upsert, remove).await,
    }
}

/// The result of a successful reconcile.
#[derive(Debug)]
pub struct Converged {
    /// The kernel as it was left (equal to desired).
    pub observed: Observed,
    /// Every action applied, in order (empty if nothing had drifted).
    pub applied: Vec<Action>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action} failed: {source}")]
    Action {
        action: &'static str,
        source: KernelError,
    },
    #[error("observing the kernel failed: {0}")]
    Observe(#[source] KernelError),
    #[error("kernel state did not converge after {MAX_ROUNDS} rounds; still needed: {0:?}")]
    NoConvergence(Vec<&'static str>),
}

/// What differs between the firewall the kernel has and the one it should have, in a line.
fn firewall_drift(d: &Desired, o: &Observed) -> String {
    let Some(fw) = &o.firewall else {
        return "no namespace".into();
    };
    let Some(acl) = &fw.acl else {
        return "no ACL chain".into();
    };
    if fw.forward_policy.as_deref() != Some("DROP") {
        return format!("FORWARD policy {:?}", fw.forward_policy);
    }
    if fw.forward != crate::kernel::firewall::forward_rules(&d.firewall) {
        return format!("FORWARD holds {:?}", fw.forward);
    }
    let watch: Vec<&String> = fw.watch.iter().flatten().map(|r| &r.rule).collect();
    if fw.watch.is_some() == d.firewall.watch.is_empty()
        || !watch.iter().copied().eq(&d.firewall.watch)
    {
        return format!(
            "watch chain holds {watch:?}, should hold {:?}",
            d.firewall.watch
        );
    }
    if let Some((i, (have, want))) = acl
        .iter()
        .map(|r| r.rule.as_str())
        .zip(d.firewall.acl.iter().map(String::as_str))
        .enumerate()
        .find(|(_, (h, w))| h != w)
    {
        return format!("rule {i} is {have:?}, should be {want:?}");
    }
    if acl.len() != d.firewall.acl.len() {
        return format!("{} rules, should be {}", acl.len(), d.firewall.acl.len());
    }
    format!(
        "ipsets {:?}, should be {:?}",
        fw.sets.keys().collect::<Vec<_>>(),
        d.firewall.sets.keys().collect::<Vec<_>>()
    )
}

/// Observe, plan and apply until the plan is empty; returns only when the kernel equals `d`.
/// With `eager`, the first look skips the rule counters (a change reaches the kernel a
/// 2,000-rule counter dump sooner); what is returned always carries them.
pub async fn converge(
    kernel: &Kernel,
    d: &Desired,
    eager: bool,
) -> Result<Converged, ReconcileError> {
    let mut applied = Vec::new();
    let mut counters = !eager;
    for _ in 0..MAX_ROUNDS {
        let observed = observe(kernel, &d.names, counters)
            .await
            .map_err(ReconcileError::Observe)?;
        let actions = plan(d, &observed);
        if actions.is_empty() && counters {
            return Ok(Converged { observed, applied });
        }
        counters = true;
        for action in actions {
            if action == Action::ApplyFirewall {
                tracing::info!(tenant_kid = d.names.kid, differs = %firewall_drift(d, &observed), "firewall");
            }
            tracing::info!(tenant_kid = d.names.kid, action = action.kind(), "applying");
            apply_one(kernel, d, &observed, &action)
                .await
                .map_err(|source| ReconcileError::Action {
                    action: action.kind(),
                    source,
                })?;
            applied.push(action);
        }
    }
    let observed = observe(kernel, &d.names, true)
        .await
        .map_err(ReconcileError::Observe)?;
    let left = plan(d, &observed);
    if left.is_empty() {
        Ok(Converged { observed, applied })
    } else {
        Err(ReconcileError::NoConvergence(
            left.iter().map(Action::kind).collect(),
        ))
    }
}

/// Removes every kernel object of a tenant: daemon or device, socket, birth link, namespace.
/// Idempotent; safe on a tenant that was only half made.
pub async fn teardown(kernel: &Kernel, names: &TenantNames) -> KResult<()> {
    kernel.wg.destroy(names).await?;
    if kernel.netns.birth_link_in_host(names).await? {
        kernel.netns.delete_host_link(&names.birth).await?;
    }
    kernel.netns.delete(names).await?;
    if !matches!(kernel.wg.observe(names).await?, DeviceState::Absent) {
        return Err(KernelError::Device {
            device: names.birth.clone(),
            detail: "still present after teardown".into(),
        });
    }
    Ok(())
}
