//! The kernel backend: a link of kind `wireguard` created in the controller namespace (so its UDP
//! socket is born there and stays there when the link moves), read and configured over the
//! WireGuard generic-netlink family in whichever namespace the link is at that moment. No `wg`
//! or `ip` process is involved; keys are passed in memory only.
//!
//! The sockets are the namespace handles held by [`Namespaces`] (generic netlink inside the
//! tenant namespace) and [`HostHandles`] (the controller's own).

use super::nl::{NlError, NlSocket, genl, is_no_netns, route};
use super::ns::{HostHandles, Namespaces, NsHandles};
use super::{DeviceState, KResult, KernelError, PeerSpec, WireGuard};
use crate::keys::{PrivateKey, PublicKey};
use crate::names::{KernelPrefix, TENANT_IFACE, TenantNames};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::OnceCell;

pub struct KernelWg {
    family: OnceCell<u16>,
    namespaces: Arc<Namespaces>,
    host: Arc<HostHandles>,
}

/// Where the device is now: inside the tenant namespace as `wg0`, or still in the controller
/// namespace under its birth name.
enum Location {
    Tenant(Arc<NsHandles>),
    Host,
}

fn nl_error(device: &str, e: NlError) -> KernelError {
    KernelError::Device {
        device: device.to_string(),
        detail: e.to_string(),
    }
}

/// The probe's answer says plainly that there is no WireGuard device under that name: no such
/// link, or a link of another kind (which the reconciler removes as foreign).
fn not_there(e: &NlError) -> bool {
    matches!(e.errno(), Some(libc::ENODEV) | Some(libc::EOPNOTSUPP)) || is_no_netns(e)
}

impl KernelWg {
    pub fn new(namespaces: Arc<Namespaces>, host: Arc<HostHandles>) -> Self {
        Self {
            family: OnceCell::new(),
            namespaces,
            host,
        }
    }

    async fn family(&self) -> Result<u16, NlError> {
        let sock = self.host.genl().await?;
        self.family
            .get_or_try_init(|| genl::family_id(sock))
            .await
            .copied()
    }

    /// Whether this host can run kernel WireGuard: creates a probe link of kind `wireguard` and
    /// removes it again (also when the probe failed half-way, and a probe left by an earlier
    /// run), and resolves the generic-netlink family. `Err` says why not.
    pub async fn probe(prefix: &KernelPrefix) -> Result<(), String> {
        let wg = Self::new(Namespaces::new(), Arc::new(HostHandles::default()));
        let name = format!("{}probe", prefix.as_str());
        let sock = wg
            .host
            .route()
            .await
            .map_err(|e| format!("no netlink socket: {e}"))?;
        let _ = route::del_link(sock, &name).await;
        let added = route::add_wireguard(sock, &name).await;
        let removed = route::del_link(sock, &name).await;
        match added {
            Ok(()) => {}
            Err(e) if matches!(e.errno(), Some(libc::EOPNOTSUPP) | Some(libc::ENOENT)) => {
                return Err(format!(
                    "the kernel cannot create a link of kind wireguard ({e}): no wireguard module"
                ));
            }
            Err(e) => return Err(format!("creating a probe link failed: {e}")),
        }
        if let Err(e) = removed {
            return Err(format!("the probe link {name} could not be removed: {e}"));
        }
        wg.family()
            .await
            .map(|_| ())
            .map_err(|e| format!("the wireguard generic-netlink family is missing: {e}"))
    }

    /// Where the device is and what it reports; `None` only when both places say plainly that
    /// it is not there. Any other failure is an error: taking it for "absent" would make the
    /// reconciler destroy and re-create a live device.
    async fn locate(
        &self,
        names: &TenantNames,
    ) -> KResult<Option<(Location, crate::kernel::DeviceObserved)>> {
        let family = self.family().await.map_err(|e| nl_error(&names.birth, e))?;
        match self.namespaces.get(&names.netns).await {
            Ok(h) => match genl::get_device(&h.genl, family, TENANT_IFACE).await {
                Ok(dev) => return Ok(Some((Location::Tenant(h), dev))),
                Err(e) if not_there(&e) => {}
                Err(e) => return Err(nl_error(&names.birth, e)),
            },
            Err(e) if is_no_netns(&e) => {}
            Err(e) => return Err(nl_error(&names.birth, e)),
        }
        let host = self
            .host
            .genl()
            .await
            .map_err(|e| nl_error(&names.birth, e))?;
        match genl::get_device(host, family, &names.birth).await {
            Ok(dev) => Ok(Some((Location::Host, dev))),
            Err(e) if not_there(&e) => Ok(None),
            Err(e) => Err(nl_error(&names.birth, e)),
        }
    }

    /// Where the device is, or an error if it is nowhere; with the family id.
    async fn located(&self, names: &TenantNames) -> KResult<(Location, u16)> {
        let family = self.family().await.map_err(|e| nl_error(&names.birth, e))?;
        match self.locate(names).await? {
            Some((loc, _)) => Ok((loc, family)),
            None => Err(KernelError::Device {
                device: names.birth.clone(),
                detail: "no kernel WireGuard link found".into(),
            }),
        }
    }

    /// The generic-netlink socket that reaches the device at `loc`.
    async fn genl_at<'a>(&'a self, loc: &'a Location) -> Result<&'a NlSocket, NlError> {
        match loc {
            Location::Tenant(h) => Ok(&h.genl),
            Location::Host => self.host.genl().await,
        }
    }
}

/// The device's name at `loc`.
fn iface<'a>(loc: &Location, names: &'a TenantNames) -> &'a str {
    match loc {
        Location::Tenant(_) => TENANT_IFACE,
        Location::Host => &names.birth,
    }
}

#[async_trait::async_trait]
impl WireGuard for KernelWg {
    fn backend(&self) -> &'static str {
        "kernel"
    }

    async fn observe(&self, names: &TenantNames) -> KResult<DeviceState> {
        Ok(match self.locate(names).await? {
            Some((_, dev)) => DeviceState::Up(dev),
            None => DeviceState::Absent,
        })
    }

    async fn create(&self, names: &TenantNames) -> KResult<()> {
        let sock = self
            .host
            .route()
            .await
            .map_err(|e| nl_error(&names.birth, e))?;
        route::add_wireguard(sock, &names.birth)
            .await
            .map_err(|e| nl_error(&names.birth, e))
    }

    async fn configure(&self, names: &TenantNames, key: &PrivateKey, port: u16) -> KResult<()> {
        let (loc, family) = self.located(names).await?;
        let fail = |e| nl_error(&names.birth, e);
        let sock = self.genl_at(&loc).await.map_err(fail)?;
        genl::set_key_and_port(sock, family, iface(&loc, names), key, port)
            .await
            .map_err(fail)
    }

    async fn set_peers(
        &self,
        names: &TenantNames,
        upsert: &[PeerSpec],
        remove: &[PublicKey],
    ) -> KResult<()> {
        if upsert.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let (loc, family) = self.located(names).await?;
        let fail = |e| nl_error(&names.birth, e);
        let sock = self.genl_at(&loc).await.map_err(fail)?;
        genl::set_peers(sock, family, iface(&loc, names), upsert, remove)
            .await
            .map_err(fail)
    }

    async fn destroy(&self, names: &TenantNames) -> KResult<()> {
        match self.locate(names).await? {
            Some((Location::Tenant(h), _)) => {
                route::del_link(&h.route, TENANT_IFACE)
                    .await
                    .map_err(|e| nl_error(&names.birth, e))?;
            }
            Some((Location::Host, _)) => {
                let sock = self
                    .host
                    .route()
                    .await
                    .map_err(|e| nl_error(&names.birth, e))?;
                route::del_link(sock, &names.birth)
                    .await
                    .map_err(|e| nl_error(&names.birth, e))?;
            }
            None => {}
        }
        Ok(())
    }

    async fn list(&self, _prefix: &KernelPrefix) -> KResult<BTreeSet<i64>> {
        // Kernel devices live in tenant namespaces (listed by `Netns::list`) or, half-created,
        // as birth links in the controller namespace (`Netns::list_host_links`).
        Ok(BTreeSet::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::CmdError;

    #[test]
    fn only_a_plain_no_such_device_counts_as_absent() {
        assert!(not_there(&NlError::Kernel(libc::ENODEV)));
        assert!(not_there(&NlError::Kernel(libc::EOPNOTSUPP)));
        assert!(not_there(&NlError::Cmd(CmdError::NoNetns("mwg-1".into()))));
        assert!(!not_there(&NlError::Kernel(libc::EPERM)));
        assert!(!not_there(&NlError::Kernel(libc::ENOBUFS)));
        assert!(!not_there(&NlError::Timeout));
        assert!(!not_there(&NlError::Interrupted));
        assert!(!not_there(&NlError::Cmd(CmdError::Setns {
            netns: "mwg-1".into(),
            source: std::io::ErrorKind::PermissionDenied.into(),
        })));
    }
}
