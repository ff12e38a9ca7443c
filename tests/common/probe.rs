//! Real packets between client namespaces, for tests that compare what the controller says with
//! what the kernel does: TCP and UDP from sockets opened inside the namespaces (a listener on
//! the destination, a connect or datagrams from the source), ICMP with `ping`.

use super::{ns_out, slowdown};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn enter(netns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{netns}")).expect("netns");
    // SAFETY: setns on a fresh thread of this test, which exits afterwards.
    assert_eq!(
        unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
        0,
        "setns {netns}"
    );
}

/// One path to probe: source and destination client, protocol and port.
#[derive(Debug, Clone, Copy)]
pub struct Tuple {
    pub src: usize,
    pub dst: usize,
    pub proto: &'static str,
    pub port: Option<u16>,
}

/// How long a probe waits for its packet: a correctness bound, stretched on slow machines.
pub fn wait() -> Duration {
    Duration::from_millis(1500) * slowdown()
}

/// Sends a real packet along the path; true if it got through (its reply too for TCP and
/// ICMP; for UDP, the datagram arrived).
pub fn probe(t: Tuple, netns: &[String], addrs: &[Ipv4Addr]) -> bool {
    let (src_ns, dst_ns) = (netns[t.src].clone(), netns[t.dst].clone());
    let (src_ip, dst_ip) = (addrs[t.src], addrs[t.dst]);
    match t.proto {
        "icmp" => {
            let out = ns_out(
                &src_ns,
                &[
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "2",
                    "-i",
                    "0.2",
                    "-W",
                    &slowdown().to_string(),
                    &dst_ip.to_string(),
                ],
            );
            out.status.success()
        }
        "tcp" => {
            let port = t.port.unwrap();
            let (ready_tx, ready_rx) = mpsc::channel();
            let server = std::thread::spawn(move || {
                enter(&dst_ns);
                let l = TcpListener::bind(("0.0.0.0", port)).expect("listen");
                l.set_nonblocking(true).unwrap();
                ready_tx.send(()).unwrap();
                let until = Instant::now() + wait() + Duration::from_millis(500);
                while Instant::now() < until {
                    if let Ok((_, peer)) = l.accept() {
                        return Some(peer.ip());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                None
            });
            ready_rx.recv().unwrap();
            let client = std::thread::spawn(move || {
                enter(&src_ns);
                TcpStream::connect_timeout(&SocketAddr::from((dst_ip, port)), wait()).is_ok()
            });
            let connected = client.join().unwrap();
            let accepted = server.join().unwrap();
            if connected {
                assert_eq!(accepted, Some(src_ip.into()), "the hub forwards, unchanged");
            }
            connected
        }
        "udp" => {
            let port = t.port.unwrap();
            let (ready_tx, ready_rx) = mpsc::channel();
            let server = std::thread::spawn(move || {
                enter(&dst_ns);
                let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
                s.set_read_timeout(Some(wait())).unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 64];
                let until = Instant::now() + wait();
                while Instant::now() < until {
                    if let Ok((_, from)) = s.recv_from(&mut buf)
                        && from.ip() == std::net::IpAddr::V4(src_ip)
                    {
                        return true;
                    }
                }
                false
            });
            ready_rx.recv().unwrap();
            std::thread::spawn(move || {
                enter(&src_ns);
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..3 {
                    let _ = s.send_to(b"explain", (dst_ip, port));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .join()
            .unwrap();
            server.join().unwrap()
        }
        other => panic!("{other}"),
    }
}

/// Probes many tuples at once, in rounds whose destinations (and sockets) never collide.
pub fn probe_all(tuples: &[Tuple], netns: &[String], addrs: &[Ipv4Addr]) -> Vec<bool> {
    let mut out = vec![None; tuples.len()];
    while out.iter().any(Option::is_none) {
        let mut busy = std::collections::BTreeSet::new();
        let round: Vec<usize> = (0..tuples.len())
            .filter(|i| out[*i].is_none())
            .filter(|i| busy.insert(tuples[*i].dst))
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = round
                .iter()
                .map(|i| (*i, s.spawn(|| probe(tuples[*i], netns, addrs))))
                .collect();
            for (i, h) in handles {
                out[i] = Some(h.join().unwrap());
            }
        });
    }
    out.into_iter().map(Option::unwrap).collect()
}
