//! Tenant namespaces, links, addresses, routes and sysctls, natively: netlink requests on the
//! handles held for each namespace ([`super::ns`]) and on the controller's own socket. No `ip`
//! process, no thread per observation.

use super::nl::{NlError, is_no_netns, route};
use super::ns::{HostHandles, Namespaces, NsHandles, namespace_inode, path_inode};
use super::{
    KResult, KernelError, LinkObserved, Netns, NetnsGlance, NetnsObserved, RawRoute, RouteObserved,
};
use crate::cmd::NETNS_DIR;
use crate::names::{KernelPrefix, TENANT_IFACE, TenantNames};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteProtocol, RouteType};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// [`Netns`] over netlink.
pub struct NativeNetns {
    namespaces: Arc<Namespaces>,
    host: Arc<HostHandles>,
}

impl NativeNetns {
    pub fn new(namespaces: Arc<Namespaces>, host: Arc<HostHandles>) -> Self {
        Self { namespaces, host }
    }

    async fn handles(&self, names: &TenantNames) -> KResult<Arc<NsHandles>> {
        self.namespaces
            .get(&names.netns)
            .await
            .map_err(|e| nl(&names.netns, e))
    }

    /// The index of `name` inside the tenant namespace.
    async fn index(&self, h: &NsHandles, name: &str) -> KResult<u32> {
        route::link(&h.route, name)
            .await
            .map_err(|e| nl(&h.netns, e))?
            .map(|l| l.index)
            .ok_or_else(|| KernelError::Device {
                device: name.to_string(),
                detail: format!("no link {name} in {}", h.netns),
            })
    }
}

/// A netlink failure, as a kernel error naming where it happened.
pub fn nl(what: &str, e: NlError) -> KernelError {
    match e {
        NlError::Cmd(c) => KernelError::Cmd(c),
        e => KernelError::Device {
            device: what.to_string(),
            detail: e.to_string(),
        },
    }
}

fn route_observed(
    r: netlink_packet_route::route::RouteMessage,
    dev: Option<String>,
) -> RouteObserved {
    RouteObserved {
        dst: route::route_dst(&r),
        ipv6: r.header.address_family == AddressFamily::Inet6,
        table: route::route_table(&r),
        dev,
        kernel_made: r.header.protocol == RouteProtocol::Kernel,
        unicast: r.header.kind == RouteType::Unicast,
        raw: Some(RawRoute(r)),
    }
}

/// Reads a namespace through its handles.
async fn observe_with(h: &NsHandles) -> Result<NetnsObserved, NlError> {
    let links = route::links(&h.route).await?;
    let addrs = route::addresses(&h.route).await?;
    let routes = route::routes(&h.route).await?;
    let sw = h.sysctls()?;
    let by_index: BTreeMap<u32, &str> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
    let observed_links = links
        .iter()
        .map(|l| LinkObserved {
            name: l.name.clone(),
            mtu: l.mtu,
            up: l.up,
            ipv4: addrs
                .iter()
                .filter(|a| a.index == l.index)
                .filter_map(|a| match a.addr {
                    IpAddr::V4(v4) => Some((v4, a.prefix)),
                    IpAddr::V6(_) => None,
                })
                .collect::<BTreeSet<(Ipv4Addr, u8)>>(),
        })
        .collect();
    Ok(NetnsObserved {
        inode: h.inode,
        links: observed_links,
        routes: routes
            .into_iter()
            .map(|r| {
                let dev = route::route_oif(&r)
                    .and_then(|i| by_index.get(&i))
                    .map(|n| n.to_string());
                route_observed(r, dev)
            })
            .collect(),
        ip_forward: sw.ip_forward,
        // Each link's own switches count too: a link's `send_redirects` is ORed with `all`,
        // and `all/disable_ipv6` is only what new writes propagate.
        ipv6_disabled: sw.ipv6_off && links.iter().all(|l| l.ipv6_disabled != Some(false)),
        redirects_off: sw.redirects_off && links.iter().all(|l| l.send_redirects != Some(true)),
    })
}

#[async_trait::async_trait]
impl Netns for NativeNetns {
    async fn observe(&self, names: &TenantNames) -> KResult<Option<NetnsObserved>> {
        let h = match self.namespaces.get(&names.netns).await {
            Ok(h) => h,
            Err(e) if is_no_netns(&e) => return Ok(None),
            Err(e) => return Err(nl(&names.netns, e)),
        };
        match observe_with(&h).await {
            Ok(o) => Ok(Some(o)),
            Err(e) => {
                // Deleted while we read it: absent, and its handles must go.
                if namespace_inode(&names.netns) != Some(h.inode) {
                    self.namespaces.forget(&names.netns);
                    return Ok(None);
                }
                Err(nl(&names.netns, e))
            }
        }
    }

    async fn glance(&self, names: &TenantNames) -> KResult<Option<NetnsGlance>> {
        let Some(h) = self.namespaces.cached(&names.netns) else {
            // Not open (or gone): a full observation decides.
            return Ok(self.observe(names).await?.map(|o| o.glance()));
        };
        let read = async {
            let links = route::links(&h.route).await?;
            let sw = h.sysctls()?;
            Ok::<_, NlError>(NetnsGlance {
                inode: h.inode,
                ip_forward: sw.ip_forward,
                ipv6_disabled: sw.ipv6_off && links.iter().all(|l| l.ipv6_disabled != Some(false)),
                redirects_off: sw.redirects_off
                    && links.iter().all(|l| l.send_redirects != Some(true)),
                links: links.into_iter().map(|l| (l.name, l.mtu, l.up)).collect(),
            })
        };
        match read.await {
            Ok(g) => Ok(Some(g)),
            Err(_) if namespace_inode(&names.netns) != Some(h.inode) => {
                self.namespaces.forget(&names.netns);
                Ok(None)
            }
            Err(e) => Err(nl(&names.netns, e)),
        }
    }

    fn identity(&self, names: &TenantNames) -> Option<u64> {
        path_inode(&names.netns)
    }

    async fn birth_link_in_host(&self, names: &TenantNames) -> KResult<bool> {
        let sock = self.host.route().await.map_err(|e| nl("host", e))?;
        Ok(route::link(sock, &names.birth)
            .await
            .map_err(|e| nl("host", e))?
            .is_some())
    }

    async fn create(&self, names: &TenantNames) -> KResult<()> {
        self.namespaces
            .create(&names.netns)
            .await
            .map_err(|e| nl(&names.netns, e))
    }

    async fn delete(&self, names: &TenantNames) -> KResult<()> {
        self.namespaces
            .delete(&names.netns)
            .await
            .map_err(|e| nl(&names.netns, e))
    }

    async fn move_birth_link(&self, names: &TenantNames) -> KResult<()> {
        let h = self.handles(names).await?;
        let sock = self.host.route().await.map_err(|e| nl("host", e))?;
        let link = route::link(sock, &names.birth)
            .await
            .map_err(|e| nl("host", e))?
            .ok_or_else(|| KernelError::Device {
                device: names.birth.clone(),
                detail: "birth link not in the controller namespace".into(),
            })?;
        use std::os::fd::AsRawFd;
        route::set_link(
            sock,
            link.index,
            route::LinkChange::Netns(h.nsfd.as_raw_fd()),
        )
        .await
        .map_err(|e| nl(&names.birth, e))
    }

    async fn rename_to_wg0(&self, names: &TenantNames, from: &str) -> KResult<()> {
        let h = self.handles(names).await?;
        let index = self.index(&h, from).await?;
        for change in [
            route::LinkChange::Up(false),
            route::LinkChange::Name(TENANT_IFACE.to_string()),
        ] {
            route::set_link(&h.route, index, change)
                .await
                .map_err(|e| nl(from, e))?;
        }
        Ok(())
    }

    async fn configure_wg0(
        &self,
        names: &TenantNames,
        addr: Ipv4Addr,
        prefix: u8,
        mtu: u32,
    ) -> KResult<()> {
        let h = self.handles(names).await?;
        let index = self.index(&h, TENANT_IFACE).await?;
        let fail = |e| nl(TENANT_IFACE, e);
        for a in route::addresses(&h.route).await.map_err(fail)? {
            if a.index == index && (a.addr, a.prefix) != (IpAddr::V4(addr), prefix) {
                route::del_address(&h.route, &a).await.map_err(fail)?;
            }
        }
        route::add_address(&h.route, index, addr, prefix)
            .await
            .map_err(fail)?;
        route::set_link(&h.route, index, route::LinkChange::Mtu(mtu))
            .await
            .map_err(fail)?;
        route::set_link(&h.route, index, route::LinkChange::Up(true))
            .await
            .map_err(fail)
    }

    async fn delete_link(&self, names: &TenantNames, link: &str) -> KResult<()> {
        let h = self.handles(names).await?;
        route::del_link(&h.route, link)
            .await
            .map(|_| ())
            .map_err(|e| nl(link, e))
    }

    async fn delete_route(&self, names: &TenantNames, r: &RouteObserved) -> KResult<()> {
        let Some(raw) = &r.raw else {
            return Ok(());
        };
        let h = self.handles(names).await?;
        route::del_route(&h.route, &raw.0)
            .await
            .map_err(|e| nl(&names.netns, e))
    }

    async fn set_sysctls(&self, names: &TenantNames) -> KResult<()> {
        let h = self.handles(names).await?;
        h.set_sysctls().map_err(|e| KernelError::io("sysctl", e))?;
        // Each existing link's own redirect switch (ORed with `all`), from inside the namespace.
        super::ns::in_netns(&names.netns, || {
            for entry in std::fs::read_dir("/proc/sys/net/ipv4/conf")?.flatten() {
                let name = entry.file_name();
                if name != "all" && name != "default" {
                    std::fs::write(entry.path().join("send_redirects"), "0\n")?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| nl(&names.netns, e))
    }

    async fn list(&self, prefix: &KernelPrefix) -> KResult<BTreeSet<i64>> {
        let entries = match std::fs::read_dir(NETNS_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(KernelError::io(NETNS_DIR, e)),
        };
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| prefix.parse_netns(&e.file_name().to_string_lossy()))
            .collect())
    }

    async fn list_host_links(&self, prefix: &KernelPrefix) -> KResult<BTreeSet<i64>> {
        let sock = self.host.route().await.map_err(|e| nl("host", e))?;
        Ok(route::links(sock)
            .await
            .map_err(|e| nl("host", e))?
            .iter()
            .filter_map(|l| prefix.parse_birth(&l.name))
            .collect())
    }

    async fn delete_host_link(&self, name: &str) -> KResult<()> {
        let sock = self.host.route().await.map_err(|e| nl("host", e))?;
        route::del_link(sock, name)
            .await
            .map(|_| ())
            .map_err(|e| nl(name, e))
    }
}
