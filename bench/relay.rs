//! Throughput through a tenant's hub against a direct tunnel between the same two kinds of
//! endpoint (needs root; the guest bench runs it with kernel WireGuard): two machines of one org
//! send iperf3 through the hub (two WireGuard hops and the tenant chain), then two namespaces
//! with one WireGuard tunnel straight between them. Under emulation only the ratio means
//! anything.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// iperf3 from `client_ns` to `server` (in `server_ns`) for 5 s; bits per second received.
fn iperf(client_ns: &str, server_ns: &str, server: &str) -> f64 {
    let mut srv = Command::new("ip")
        .args([
            "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", "5301",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = ns_out(
        client_ns,
        &["iperf3", "-c", server, "-p", "5301", "-t", "5", "-J"],
    );
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
}

fn main() {
    common::run(|h| async move {
        let org = h.tenant("relay", "10.100.0.0/16").await;
        let pair = h.pair(&org, [&[], &[]]).await;
        let relayed = iperf(&pair.vm1.netns, &pair.vm2.netns, &pair.dst());

        // The same two kinds of endpoint with one tunnel straight between them.
        let p = &h.world.prefix;
        let (a, b) = (format!("{p}-da"), format!("{p}-db"));
        for n in [&a, &b] {
            sh(&["ip", "netns", "add", n]);
            ns(n, &["ip", "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &b,
        ]);
        for (n, ip) in [(&a, "192.0.2.1/24"), (&b, "192.0.2.2/24")] {
            ns(n, &["ip", "addr", "add", ip, "dev", "eth0"]);
            ns(n, &["ip", "link", "set", "eth0", "up"]);
        }
        let ka = meshwg::keys::PrivateKey::generate();
        let kb = meshwg::keys::PrivateKey::generate();
        let conf = |key: &meshwg::keys::PrivateKey,
                    addr: &str,
                    port: u16,
                    peer: &meshwg::keys::PrivateKey,
                    peer_ep: &str,
                    peer_ip: &str| {
            format!(
                "[Interface]\nPrivateKey = {}\nAddress = {addr}/24\nListenPort = {port}\n\n[Peer]\nPublicKey = {}\nEndpoint = {peer_ep}\nAllowedIPs = {peer_ip}/32\n",
                key.expose_base64().expose(),
                peer.public_key()
            )
        };
        let dir = &h.world.tmp;
        let (ca, cb) = (
            dir.join(format!("{p}da.conf")),
            dir.join(format!("{p}db.conf")),
        );
        std::fs::write(
            &ca,
            conf(
                &ka,
                "10.200.0.1",
                51001,
                &kb,
                "192.0.2.2:51002",
                "10.200.0.2",
            ),
        )
        .unwrap();
        std::fs::write(
            &cb,
            conf(
                &kb,
                "10.200.0.2",
                51002,
                &ka,
                "192.0.2.1:51001",
                "10.200.0.1",
            ),
        )
        .unwrap();
        ns(&a, &["wg-quick", "up", ca.to_str().unwrap()]);
        ns(&b, &["wg-quick", "up", cb.to_str().unwrap()]);
        let direct = iperf(&a, &b, "10.200.0.2");
        for (n, c) in [(&a, &ca), (&b, &cb)] {
            let _ = ns_out(n, &["wg-quick", "down", c.to_str().unwrap()]);
            let _ = sh_out(&["ip", "netns", "del", n]);
        }

        println!(
            "## Hub-relayed against direct WireGuard ({} backend)",
            backend().name()
        );
        println!();
        println!(
            "iperf3, 5 s, one TCP stream; relayed: machine → hub (wg0, tenant chain) → machine."
        );
        println!();
        println!("| path | Mbit/s | relayed ÷ direct |");
        println!("|---|---|---|");
        println!("| direct tunnel | {:.1} | |", direct / 1e6);
        println!(
            "| through the hub | {:.1} | {:.2} |",
            relayed / 1e6,
            if direct > 0.0 { relayed / direct } else { 0.0 }
        );
        println!();
    });
}
