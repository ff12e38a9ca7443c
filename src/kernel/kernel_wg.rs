//! The kernel backend: `ip link add … type wireguard` in the controller namespace (so the UDP
//! socket is born there), configured with `wg` in whichever namespace the link is at that moment.
//! Chosen by `WG_BACKEND=auto` when the module is present. CI machines have no WireGuard module,
//! so this path is compiled and probed but not exercised by the test suite.

use super::{
    DeviceObserved, DeviceState, HUB_KEEPALIVE, KResult, KernelError, PeerObserved, PeerSpec,
    WireGuard,
};
use crate::cmd::{Cmd, CmdError};
use crate::keys::{PrivateKey, PublicKey};
use crate::names::{KernelPrefix, TENANT_IFACE, TenantNames};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default, Clone)]
pub struct KernelWg;

/// Where the device is now: inside the tenant namespace as `wg0`, or still in the controller
/// namespace under its birth name.
enum Location {
    Tenant,
    Host,
}

impl KernelWg {
    /// True if this host can create kernel WireGuard links (tries and removes a probe link).
    pub async fn available(prefix: &KernelPrefix) -> bool {
        let probe = format!("{}probe", prefix.as_str());
        let ok = Cmd::new("ip")
            .args(["link", "add", "dev", &probe, "type", "wireguard"])
            .run()
            .await
            .is_ok();
        if ok {
            let _ = Cmd::new("ip")
                .args(["link", "del", "dev", &probe])
                .run()
                .await;
        }
        ok
    }

    /// `wg ARGS…` aimed at the device where it is, with `{iface}` replaced by its current name.
    fn wg(&self, names: &TenantNames, loc: &Location, args: &[&str]) -> Cmd {
        let (iface, cmd) = match loc {
            Location::Tenant => (TENANT_IFACE, Cmd::new("wg").netns(&names.netns)),
            Location::Host => (names.birth.as_str(), Cmd::new("wg")),
        };
        cmd.args(args.iter().map(|a| if *a == "{iface}" { iface } else { a }))
    }

    /// Where the device is, `None` only when both places say plainly that it is not there (or
    /// that the link there is no WireGuard device). Any
    /// other failure of the probe is an error: taking it for "absent" would make the reconciler
    /// destroy and re-create a live device.
    async fn locate(&self, names: &TenantNames) -> KResult<Option<Location>> {
        for loc in [Location::Tenant, Location::Host] {
            match self
                .wg(names, &loc, &["show", "{iface}", "listen-port"])
                .run()
                .await
            {
                Ok(_) => return Ok(Some(loc)),
                Err(e) if not_there(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    async fn located(&self, names: &TenantNames) -> KResult<Location> {
        self.locate(names)
            .await?
            .ok_or_else(|| KernelError::Device {
                device: names.birth.clone(),
                detail: "no kernel WireGuard link found".into(),
            })
    }
}

/// The probe's failure says the device (or its namespace) does not exist.
fn not_there(e: &CmdError) -> bool {
    match e {
        CmdError::NoNetns(_) => true,
        CmdError::Setns { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        // "Operation not supported": a link of another kind under that name, which the
        // reconciler removes as foreign.
        CmdError::Failed { stderr, .. } => {
            stderr.contains("No such device") || stderr.contains("Operation not supported")
        }
        _ => false,
    }
}

/// Parses `wg show <iface> dump`: one interface line, then one line per peer.
fn parse_dump(text: &str) -> KResult<DeviceObserved> {
    let bad = |d: &str| KernelError::parse("wg show dump", d);
    let mut lines = text.lines();
    let first: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad("empty"))?
        .split('\t')
        .collect();
    if first.len() < 3 {
        return Err(bad("interface line"));
    }
    let public_key = PublicKey::from_base64(first[1]).ok();
    let listen_port = first[2].parse().map_err(|_| bad("listen port"))?;
    let mut peers = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 8 {
            return Err(bad("peer line"));
        }
        let key = PublicKey::from_base64(f[0]).map_err(|_| bad("peer key"))?;
        let handshake: i64 = f[4].parse().map_err(|_| bad("handshake"))?;
        peers.insert(
            key,
            PeerObserved {
                endpoint: (f[2] != "(none)").then(|| f[2].to_string()),
                allowed_ips: f[3]
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "(none)")
                    .map(str::to_string)
                    .collect(),
                last_handshake: (handshake > 0).then_some(handshake),
                rx_bytes: f[5].parse().map_err(|_| bad("rx"))?,
                tx_bytes: f[6].parse().map_err(|_| bad("tx"))?,
            },
        );
    }
    Ok(DeviceObserved {
        listen_port,
        public_key,
        peers,
        pid: None,
    })
}

#[async_trait::async_trait]
impl WireGuard for KernelWg {
    fn backend(&self) -> &'static str {
        "kernel"
    }

    async fn observe(&self, names: &TenantNames) -> KResult<DeviceState> {
        let Some(loc) = self.locate(names).await? else {
            return Ok(DeviceState::Absent);
        };
        // `dump` prints the private key first; only its public half is kept.
        let out = self
            .wg(names, &loc, &["show", "{iface}", "dump"])
            .run()
            .await?;
        let out = crate::secret::Secret::new(out);
        Ok(DeviceState::Up(parse_dump(out.expose())?))
    }

    async fn create(&self, names: &TenantNames) -> KResult<()> {
        Cmd::new("ip")
            .args(["link", "add", "dev", &names.birth, "type", "wireguard"])
            .run()
            .await?;
        Ok(())
    }

    async fn configure(&self, names: &TenantNames, key: &PrivateKey, port: u16) -> KResult<()> {
        let loc = self.located(names).await?;
        let port = port.to_string();
        self.wg(
            names,
            &loc,
            &[
                "set",
                "{iface}",
                "listen-port",
                &port,
                "private-key",
                "/dev/stdin",
            ],
        )
        .stdin(key.expose_base64().expose().as_bytes().to_vec())
        .run()
        .await?;
        Ok(())
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
        let loc = self.located(names).await?;
        let mut args: Vec<String> = vec!["set".into(), "{iface}".into()];
        for p in upsert {
            args.extend([
                "peer".into(),
                p.public_key.to_base64(),
                "allowed-ips".into(),
                format!("{}/32", p.address),
                "persistent-keepalive".into(),
                HUB_KEEPALIVE.to_string(),
            ]);
            if let Some(endpoint) = &p.endpoint {
                args.extend(["endpoint".into(), endpoint.clone()]);
            }
        }
        for k in remove {
            args.extend(["peer".into(), k.to_base64(), "remove".into()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.wg(names, &loc, &refs).run().await?;
        Ok(())
    }

    async fn destroy(&self, names: &TenantNames) -> KResult<()> {
        match self.locate(names).await? {
            Some(Location::Tenant) => {
                Cmd::new("ip")
                    .args(["-n", &names.netns, "link", "del", "dev", TENANT_IFACE])
                    .run()
                    .await?;
            }
            Some(Location::Host) => {
                Cmd::new("ip")
                    .args(["link", "del", "dev", &names.birth])
                    .run()
                    .await?;
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

    #[test]
    fn only_a_plain_no_such_device_counts_as_absent() {
        let failed = |stderr: &str| CmdError::Failed {
            cmd: "wg show wg0 listen-port".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        assert!(not_there(&failed(
            "Unable to access interface: No such device"
        )));
        assert!(not_there(&CmdError::Setns {
            netns: "mwg-1".into(),
            source: std::io::ErrorKind::NotFound.into(),
        }));
        assert!(not_there(&failed(
            "Unable to access interface: Operation not supported"
        )));
        assert!(!not_there(&failed(
            "Unable to access interface: Permission denied"
        )));
        assert!(!not_there(&CmdError::Timeout {
            cmd: "wg".into(),
            timeout: std::time::Duration::from_secs(5),
        }));
        assert!(!not_there(&CmdError::Setns {
            netns: "mwg-1".into(),
            source: std::io::ErrorKind::PermissionDenied.into(),
        }));
    }

    #[test]
    fn parses_wg_dump() {
        let private = PrivateKey::generate();
        let peer = PrivateKey::generate().public_key();
        let text = format!(
            "{}\t{}\t51820\toff\n{}\t(none)\t192.0.2.1:5000\t10.100.0.2/32\t1700000000\t10\t20\t25\n",
            private.expose_base64().expose(),
            private.public_key(),
            peer
        );
        let dev = parse_dump(&text).unwrap();
        assert_eq!(dev.listen_port, 51820);
        assert_eq!(dev.public_key, Some(private.public_key()));
        assert_eq!(dev.peers[&peer].rx_bytes, 10);
        assert!(dev.peers[&peer].allowed_ips.contains("10.100.0.2/32"));
    }
}
