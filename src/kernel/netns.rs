//! Tenant namespaces, links, addresses, routes and sysctls, through iproute2 (`ip -j` for reading).

use super::{KResult, KernelError, LinkObserved, Netns, NetnsObserved, RouteObserved};
use crate::cmd::{Cmd, NETNS_DIR, in_netns};
use crate::names::{KernelPrefix, TENANT_IFACE, TenantNames};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const NSFS_MAGIC: i64 = 0x6e73_6673;
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_OFF_ALL: &str = "/proc/sys/net/ipv6/conf/all/disable_ipv6";
const IPV6_OFF_DEFAULT: &str = "/proc/sys/net/ipv6/conf/default/disable_ipv6";

/// [`Netns`] over the `ip` command.
#[derive(Debug, Default, Clone)]
pub struct IpNetns;

fn handle_path(names: &TenantNames) -> PathBuf {
    Path::new(NETNS_DIR).join(&names.netns)
}

/// The inode of a live namespace handle, or `None` if the path is missing or not a namespace
/// (e.g. a leftover file whose mount was removed by hand).
fn namespace_inode(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    (st.f_type as i64 == NSFS_MAGIC).then(|| meta.ino())
}

#[derive(Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    family: String,
    local: Option<String>,
    prefixlen: Option<u8>,
}

#[derive(Deserialize)]
struct IpRoute {
    #[serde(rename = "type")]
    kind: Option<String>,
    dst: String,
    table: Option<String>,
    dev: Option<String>,
    gateway: Option<String>,
    protocol: Option<String>,
    metric: Option<u64>,
}

fn parse_links(value: serde_json::Value) -> KResult<Vec<LinkObserved>> {
    let links: Vec<IpLink> = serde_json::from_value(value)
        .map_err(|e| KernelError::parse("ip -j addr", e.to_string()))?;
    Ok(links
        .into_iter()
        .map(|l| LinkObserved {
            up: l.flags.iter().any(|f| f == "UP"),
            ipv4: l
                .addr_info
                .iter()
                .filter(|a| a.family == "inet")
                .filter_map(|a| Some((a.local.as_deref()?.parse().ok()?, a.prefixlen?)))
                .collect(),
            name: l.ifname,
            mtu: l.mtu,
        })
        .collect())
}

fn parse_routes(value: serde_json::Value) -> KResult<Vec<RouteObserved>> {
    let routes: Vec<IpRoute> = serde_json::from_value(value)
        .map_err(|e| KernelError::parse("ip -j route", e.to_string()))?;
    Ok(routes
        .into_iter()
        .map(|r| RouteObserved {
            kind: r.kind,
            dst: r.dst,
            table: r.table,
            dev: r.dev,
            gateway: r.gateway,
            protocol: r.protocol,
            metric: r.metric,
        })
        .collect())
}

/// Parses the concatenated JSON arrays `ip -j -batch` prints, one per command.
fn json_documents(text: &str, expected: usize) -> KResult<Vec<serde_json::Value>> {
    let docs = serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KernelError::parse("ip -j -batch", e.to_string()))?;
    if docs.len() != expected {
        return Err(KernelError::parse(
            "ip -j -batch",
            format!("{} documents, expected {expected}", docs.len()),
        ));
    }
    Ok(docs)
}

fn ip(netns: &str) -> Cmd {
    Cmd::new("ip").args(["-n", netns])
}

/// Reads `(ip_forward, ipv6 disabled)` from inside the namespace (`/proc/sys/net` is per
/// namespace of the reading thread).
async fn read_sysctls(names: &TenantNames) -> KResult<(bool, bool)> {
    let read = |p: &str| std::fs::read_to_string(p).map(|v| v.trim() == "1");
    in_netns(&names.netns, move || {
        Ok::<_, std::io::Error>((read(IP_FORWARD)?, read(IPV6_OFF_ALL)?))
    })
    .await?
    .map_err(|e| KernelError::io("sysctl", e))
}

async fn host_link_names() -> KResult<Vec<String>> {
    let out = Cmd::new("ip").args(["-j", "link", "show"]).run().await?;
    let links: Vec<IpLink> =
        serde_json::from_str(&out).map_err(|e| KernelError::parse("ip -j link", e.to_string()))?;
    Ok(links.into_iter().map(|l| l.ifname).collect())
}

#[async_trait::async_trait]
impl Netns for IpNetns {
    async fn observe(&self, names: &TenantNames) -> KResult<Option<NetnsObserved>> {
        let Some(inode) = namespace_inode(&handle_path(names)) else {
            return Ok(None);
        };
        let (ip_forward, ipv6_disabled) = match read_sysctls(names).await {
            Ok(v) => v,
            Err(KernelError::Cmd(crate::cmd::CmdError::NoNetns(_))) => return Ok(None),
            Err(e) => return Err(e),
        };
        let out = ip(&names.netns)
            .args(["-j", "-batch", "-"])
            .stdin(b"addr show\nroute show table all\n".to_vec())
            .run()
            .await?;
        let mut docs = json_documents(&out, 2)?.into_iter();
        let links = parse_links(docs.next().unwrap_or_default())?;
        let routes = parse_routes(docs.next().unwrap_or_default())?;
        Ok(Some(NetnsObserved {
            inode,
            links,
            routes,
            ip_forward,
            ipv6_disabled,
        }))
    }

    async fn birth_link_in_host(&self, names: &TenantNames) -> KResult<bool> {
        Ok(host_link_names().await?.contains(&names.birth))
    }

    async fn create(&self, names: &TenantNames) -> KResult<()> {
        let path = handle_path(names);
        if path.exists() && namespace_inode(&path).is_none() {
            // A handle file whose namespace mount is gone would make `ip netns add` fail forever.
            std::fs::remove_file(&path)
                .map_err(|e| KernelError::io(path.display().to_string(), e))?;
        }
        Cmd::new("ip")
            .args(["netns", "add", &names.netns])
            .run()
            .await?;
        Ok(())
    }

    async fn delete(&self, names: &TenantNames) -> KResult<()> {
        if !handle_path(names).exists() {
            return Ok(());
        }
        Cmd::new("ip")
            .args(["netns", "del", &names.netns])
            .run()
            .await?;
        Ok(())
    }

    async fn move_birth_link(&self, names: &TenantNames) -> KResult<()> {
        Cmd::new("ip")
            .args(["link", "set", "dev", &names.birth, "netns", &names.netns])
            .run()
            .await?;
        Ok(())
    }

    async fn rename_to_wg0(&self, names: &TenantNames, from: &str) -> KResult<()> {
        ip(&names.netns)
            .args(["link", "set", "dev", from, "down", "name", TENANT_IFACE])
            .run()
            .await?;
        Ok(())
    }

    async fn configure_wg0(
        &self,
        names: &TenantNames,
        addr: Ipv4Addr,
        prefix: u8,
        mtu: u32,
    ) -> KResult<()> {
        let script = format!(
            "address flush dev {TENANT_IFACE}\naddress add {addr}/{prefix} dev {TENANT_IFACE}\nlink set dev {TENANT_IFACE} mtu {mtu} up\n"
        );
        ip(&names.netns)
            .args(["-batch", "-"])
            .stdin(script.into_bytes())
            .run()
            .await?;
        Ok(())
    }

    async fn delete_link(&self, names: &TenantNames, link: &str) -> KResult<()> {
        ip(&names.netns)
            .args(["link", "del", "dev", link])
            .run()
            .await?;
        Ok(())
    }

    async fn delete_route(&self, names: &TenantNames, route: &RouteObserved) -> KResult<()> {
        let mut cmd = ip(&names.netns);
        if route.dst.contains(':') {
            cmd = cmd.arg("-6");
        }
        cmd = cmd.args(["route", "del"]);
        if let Some(kind) = &route.kind {
            cmd = cmd.arg(kind);
        }
        cmd = cmd.arg(&route.dst);
        if let Some(table) = &route.table {
            cmd = cmd.args(["table", table]);
        }
        if let Some(dev) = &route.dev {
            cmd = cmd.args(["dev", dev]);
        }
        if let Some(gw) = &route.gateway {
            cmd = cmd.args(["via", gw]);
        }
        if let Some(metric) = route.metric {
            cmd = cmd.args(["metric".to_string(), metric.to_string()]);
        }
        cmd.run().await?;
        Ok(())
    }

    async fn set_sysctls(&self, names: &TenantNames) -> KResult<()> {
        in_netns(&names.netns, || {
            [IPV6_OFF_DEFAULT, IPV6_OFF_ALL, IP_FORWARD]
                .into_iter()
                .try_for_each(|p| std::fs::write(p, "1\n"))
        })
        .await?
        .map_err(|e| KernelError::io("sysctl", e))
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
        Ok(host_link_names()
            .await?
            .iter()
            .filter_map(|n| prefix.parse_birth(n))
            .collect())
    }

    async fn delete_host_link(&self, name: &str) -> KResult<()> {
        Cmd::new("ip")
            .args(["link", "del", "dev", name])
            .run()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_batch_output() {
        let text = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"addr_info":[]},{"ifindex":5,"ifname":"wg0","flags":["POINTOPOINT","NOARP","UP","LOWER_UP"],"mtu":1420,"addr_info":[{"family":"inet","local":"10.100.0.1","prefixlen":16}]}]
[{"dst":"default","gateway":"10.1.0.9","dev":"v0","flags":[]},{"dst":"10.100.0.0/16","dev":"wg0","protocol":"kernel","scope":"link","prefsrc":"10.100.0.1","flags":[]},{"type":"local","dst":"10.100.0.1","dev":"wg0","table":"local","protocol":"kernel","flags":[]}]
"#;
        let mut docs = json_documents(text, 2).unwrap().into_iter();
        let links = parse_links(docs.next().unwrap()).unwrap();
        assert_eq!(links.len(), 2);
        assert!(links[1].up && !links[0].up);
        assert_eq!(links[1].mtu, 1420);
        assert_eq!(
            links[1].ipv4,
            BTreeSet::from([(Ipv4Addr::new(10, 100, 0, 1), 16)])
        );
        let routes = parse_routes(docs.next().unwrap()).unwrap();
        let drift: Vec<_> = routes.iter().filter(|r| !r.is_kernel_made()).collect();
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].dst, "default");
        assert_eq!(drift[0].gateway.as_deref(), Some("10.1.0.9"));
        assert!(json_documents(text, 3).is_err());
    }

    /// Any JSON, or any text, is an error or a value: never a panic.
    fn hostile_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("\"UP\"".to_string()),
            Just("\"inet\"".to_string()),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            let keys = prop_oneof![
                Just("ifname"),
                Just("mtu"),
                Just("flags"),
                Just("addr_info"),
                Just("family"),
                Just("local"),
                Just("prefixlen"),
                Just("dst"),
                Just("type"),
                Just("metric"),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((keys, inner), 0..6).prop_map(|kv| {
                    let fields: Vec<String> =
                        kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn ip_json_parsers_take_anything(json in hostile_json(), noise in ".{0,40}") {
            for text in [json.clone(), format!("{json}{noise}"), noise.clone()] {
                if let Ok(docs) = json_documents(&text, 1) {
                    let _ = parse_links(docs[0].clone());
                    let _ = parse_routes(docs[0].clone());
                }
            }
        }

        #[test]
        fn ip_links_read_back(
            links in proptest::collection::vec(
                (
                    "[a-z][a-z0-9@.-]{0,14}",
                    proptest::prelude::any::<u32>(),
                    proptest::prelude::any::<bool>(),
                    proptest::collection::btree_set((proptest::prelude::any::<u32>(), 0u8..=32), 0..4),
                ),
                0..6,
            )
        ) {
            let json: Vec<serde_json::Value> = links
                .iter()
                .map(|(name, mtu, up, addrs)| {
                    let flags = if *up { vec!["BROADCAST", "UP", "LOWER_UP"] } else { vec!["BROADCAST"] };
                    let info: Vec<_> = addrs
                        .iter()
                        .map(|(a, len)| serde_json::json!({"family": "inet", "local": Ipv4Addr::from(*a).to_string(), "prefixlen": len}))
                        .chain([serde_json::json!({"family": "inet6", "local": "fe80::1", "prefixlen": 64})])
                        .collect();
                    serde_json::json!({"ifindex": 3, "ifname": name, "flags": flags, "mtu": mtu, "addr_info": info})
                })
                .collect();
            let parsed = parse_links(serde_json::Value::Array(json)).unwrap();
            proptest::prop_assert_eq!(parsed.len(), links.len());
            for (p, (name, mtu, up, addrs)) in parsed.iter().zip(&links) {
                proptest::prop_assert_eq!(&p.name, name);
                proptest::prop_assert_eq!((p.mtu, p.up), (*mtu, *up));
                let want: BTreeSet<(Ipv4Addr, u8)> = addrs.iter().map(|(a, l)| (Ipv4Addr::from(*a), *l)).collect();
                proptest::prop_assert_eq!(&p.ipv4, &want);
            }
        }
    }
}
