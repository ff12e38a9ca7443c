//! The scale ladder (needs root and a PostgreSQL: `. scripts/pg-throwaway.sh; cargo bench
//! --bench scale`): 100 → 250 → 500
//! → 1,000 idle tenants, each with 10 machines and 5 tag policies and a real wireguard-go daemon,
//! under the production detection settings (events, a 1.5 s cheap poll, a 60 s full check).
//! Per rung, over an idle window: controller CPU (its threads and the commands it waited for;
//! the daemons apart), RSS, descriptors and threads, and the daemons' summed PSS. At the top:
//! drift injected into random tenants, kind by kind, with the time until the kernel is
//! repaired; machine additions over the API; policy changes in a 2,000-rule tenant (API answer,
//! and until the kernel announced a rule added to or deleted from the tenant's ACL chain).
//!
//! `MESHWG_BENCH_TENANTS` caps the ladder (default 1000), `MESHWG_BENCH_WINDOW` sets the idle
//! window in seconds (default 120: two full-check rounds), `MESHWG_BENCH_SOAK` the idle soak at
//! the top rung in seconds (default 1800; 0 skips it): descriptors, threads, RSS and CPU sampled
//! every minute, to show nothing grows; `MESHWG_BENCH_DRIFT` the injections per drift kind
//! (default 10; 0 skips them).

#[path = "../tests/common/mod.rs"]
mod common;

use common::api::Api;
use common::*;
use meshwg::actors::Observer;
use meshwg::db::orgs::Org;
use meshwg::keys::PrivateKey;
use meshwg::names::TenantNames;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds used so far by this process and the children it waited for.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11..15].iter().map(|v| v.parse::<f64>().unwrap()).sum();
    ticks / 100.0
}

fn status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Summed PSS (KiB) and count of this run's wireguard-go daemons.
fn daemons(prefix: &str) -> (u64, usize) {
    let mut pss = 0;
    let mut n = 0;
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.len() >= 3
            && args[0].ends_with(b"wireguard-go")
            && args[1] == b"-f"
            && args[2].starts_with(prefix.as_bytes())
        {
            pss += pss_kb(&pid);
            n += 1;
        }
    }
    (pss, n)
}

fn mem_available_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

/// A tenant with 10 machines (5 tagged `web`) and 5 tag policies, made in bulk and applied once.
async fn tenant(h: &Harness, i: usize) -> Org {
    let org = h.tenant(&format!("tenant {i}"), "10.100.0.0/16").await;
    let conn = h.pool.get().await.unwrap();
    for j in 0..10u8 {
        let addr: std::net::IpAddr = format!("10.100.0.{}", j + 2).parse().unwrap();
        let tags: Vec<String> = if j % 2 == 0 {
            vec!["web".into()]
        } else {
            vec![]
        };
        conn.execute(
            "INSERT INTO machines (id, org_id, name, address, public_key, tags) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&Uuid::new_v4(), &org.id, &format!("m{j}"), &addr, &PrivateKey::generate().public_key().to_base64(), &tags],
        )
        .await
        .unwrap();
    }
    for p in 0..5u16 {
        conn.execute(
            "INSERT INTO policies (id, org_id, priority, action, src, dst, protocol, ports) VALUES ($1, $2, $3, $4, $5, '\"any\"', 'tcp', $6)",
            &[&Uuid::new_v4(), &org.id, &i32::from(p), &if p % 2 == 0 { "deny" } else { "allow" }, &json!({"tag": "web"}), &format!("{}", 8000 + p)],
        )
        .await
        .unwrap();
    }
    h.ctl.sync(org.id).await.unwrap();
    org
}

fn run_cmd(argv: &[&str]) -> bool {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn cmd_out(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One drift kind: how to inflict it, and when it is gone.
struct Kind {
    name: &'static str,
    inflict: fn(&TenantNames, u32),
    repaired: fn(&TenantNames, u32) -> bool,
}

fn exec<'a>(n: &'a TenantNames, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ip", "netns", "exec", n.netns.as_str()];
    v.extend_from_slice(args);
    v
}

fn kinds() -> Vec<Kind> {
    let mut kinds = vec![
        Kind {
            name: "default route",
            inflict: |n, _| {
                run_cmd(&exec(n, &["ip", "route", "add", "default", "dev", "wg0"]));
            },
            repaired: |n, _| {
                !cmd_out(&exec(n, &["ip", "route", "show", "default"])).contains("default")
            },
        },
        Kind {
            name: "FORWARD rule",
            inflict: |n, _| {
                run_cmd(&exec(
                    n,
                    &["iptables", "-I", "FORWARD", "1", "-j", "ACCEPT"],
                ));
            },
            repaired: |n, _| {
                cmd_out(&exec(n, &["iptables", "-S", "FORWARD"]))
                    .lines()
                    .count()
                    == 2
            },
        },
        Kind {
            name: "chain flushed",
            inflict: |n, _| {
                run_cmd(&exec(n, &["iptables", "-F", "MWG-ACL"]));
            },
            repaired: |n, _| {
                cmd_out(&exec(n, &["iptables", "-S", "MWG-ACL"]))
                    .lines()
                    .count()
                    == 7
            },
        },
        Kind {
            name: "NAT rule",
            inflict: |n, _| {
                run_cmd(&exec(
                    n,
                    &[
                        "iptables",
                        "-t",
                        "nat",
                        "-A",
                        "POSTROUTING",
                        "-j",
                        "MASQUERADE",
                    ],
                ));
            },
            repaired: |n, _| !cmd_out(&exec(n, &["iptables", "-t", "nat", "-S"])).contains("-A "),
        },
        Kind {
            name: "ip_forward off",
            inflict: |n, _| {
                run_cmd(&exec(n, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]));
            },
            repaired: |n, _| {
                cmd_out(&exec(n, &["sysctl", "-n", "net.ipv4.ip_forward"])).trim() == "1"
            },
        },
        Kind {
            name: "IPv6 on",
            inflict: |n, _| {
                run_cmd(&exec(
                    n,
                    &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"],
                ));
            },
            repaired: |n, _| {
                cmd_out(&exec(
                    n,
                    &["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"],
                ))
                .trim()
                    == "1"
            },
        },
        Kind {
            name: "foreign link",
            inflict: |n, _| {
                run_cmd(&exec(
                    n,
                    &[
                        "ip", "link", "add", "rogue0", "type", "veth", "peer", "name", "rogue1",
                    ],
                ));
            },
            repaired: |n, _| {
                cmd_out(&exec(n, &["ip", "-o", "link", "show"]))
                    .lines()
                    .count()
                    == 2
            },
        },
        Kind {
            name: "ipset member",
            inflict: |n, _| {
                let sets = cmd_out(&exec(n, &["ipset", "list", "-n"]));
                if let Some(set) = sets.lines().next() {
                    run_cmd(&exec(n, &["ipset", "add", set, "10.100.99.99"]));
                }
            },
            repaired: |n, _| {
                let sets = cmd_out(&exec(n, &["ipset", "list", "-n"]));
                sets.lines()
                    .next()
                    .is_some_and(|set| !run_cmd(&exec(n, &["ipset", "test", set, "10.100.99.99"])))
            },
        },
        Kind {
            name: "peer removed",
            inflict: |n, _| {
                let peers = cmd_out(
                    &wg_argv(n, "show", &["peers"])
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                );
                if let Some(p) = peers.lines().next() {
                    let argv = wg_argv(n, "set", &["peer", p, "remove"]);
                    run_cmd(&argv.iter().map(String::as_str).collect::<Vec<_>>());
                }
            },
            repaired: |n, _| {
                let argv = wg_argv(n, "show", &["peers"]);
                cmd_out(&argv.iter().map(String::as_str).collect::<Vec<_>>())
                    .lines()
                    .count()
                    == 10
            },
        },
        Kind {
            name: "namespace deleted",
            inflict: |n, _| {
                run_cmd(&["ip", "netns", "del", &n.netns]);
            },
            repaired: |n, _| {
                let argv = wg_argv(n, "show", &["peers"]);
                run_cmd(&exec(n, &["ip", "link", "show", "wg0", "up"]))
                    && cmd_out(&argv.iter().map(String::as_str).collect::<Vec<_>>())
                        .lines()
                        .count()
                        == 10
            },
        },
    ];
    if backend() == Backend::Userspace {
        kinds.push(Kind {
            name: "daemon kill -9",
            inflict: |_, pid| {
                run_cmd(&["kill", "-9", &pid.to_string()]);
            },
            repaired: |n, pid| {
                let argv = wg_argv(n, "show", &["peers"]);
                let now = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err();
                now && cmd_out(&argv.iter().map(String::as_str).collect::<Vec<_>>())
                    .lines()
                    .count()
                    == 10
            },
        });
    }
    kinds
}

fn main() {
    let top = env_num("MESHWG_BENCH_TENANTS", 1000) as usize;
    let window = Duration::from_secs(env_num("MESHWG_BENCH_WINDOW", 120));
    meshwg::capacity::raise_nofile();
    meshwg::capacity::raise_inotify_instances();
    // `MESHWG_BENCH_LADDER=1000` (comma-separated) measures chosen rungs only.
    let ladder: Vec<usize> = match std::env::var("MESHWG_BENCH_LADDER") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) => [100, 250, 500, 1000]
            .into_iter()
            .filter(|n| *n <= top)
            .collect(),
    };
    let observer = Observer::polling(Duration::from_millis(1500));
    common::run_observed(observer, move |h| async move {
        let prefix = h.world.prefix.clone();
        println!(
            "## Scale ladder: idle tenants (10 machines, 5 tag policies, a wireguard-go each)"
        );
        println!();
        println!(
            "Production detection settings: kernel events, cheap poll every 1.5 s, full check every 60 s. \
             Window {} s per rung. Controller CPU counts its threads and the commands it waited for; \
             daemons are reported apart.",
            window.as_secs()
        );
        println!();
        println!(
            "| tenants | controller CPU (% of a core) | controller RSS MB | fds | threads | daemons | daemons' PSS MB | MemAvailable MB |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let mut orgs: Vec<Org> = Vec::new();
        for rung in &ladder {
            let t = Instant::now();
            while orgs.len() < *rung {
                orgs.push(tenant(&h, orgs.len()).await);
            }
            eprintln!("{rung} tenants made in {:?}", t.elapsed());
            tokio::time::sleep(Duration::from_secs(10)).await;
            let (c0, t0) = (cpu_seconds(), Instant::now());
            tokio::time::sleep(window).await;
            let cpu = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
            let me = std::process::id().to_string();
            let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
            let (pss, n) = daemons(&prefix);
            println!(
                "| {rung} | {cpu:.2} | {} | {fds} | {} | {n} | {} | {} |",
                status_kb(&me, "VmRSS:") / 1024,
                status_kb(&me, "Threads:"),
                pss / 1024,
                mem_available_mb()
            );
        }
        println!();

        // The soak: the top rung left idle, sampled every minute.
        let soak = Duration::from_secs(env_num("MESHWG_BENCH_SOAK", 1800));
        if !soak.is_zero() {
            println!("## Idle soak with {} tenants", orgs.len());
            println!();
            println!("Sampled every minute; CPU is the controller's over that minute.");
            println!();
            println!("| minute | fds | threads | RSS MB | CPU (% of a core) |");
            println!("|---|---|---|---|---|");
            let me = std::process::id().to_string();
            let start = Instant::now();
            let mut minute = 0;
            let (mut c0, mut t0) = (cpu_seconds(), Instant::now());
            let (mut first, mut worst) = (None, (0usize, 0u64, 0u64));
            while start.elapsed() < soak {
                tokio::time::sleep(Duration::from_secs(60).min(soak)).await;
                minute += 1;
                let cpu = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
                (c0, t0) = (cpu_seconds(), Instant::now());
                let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
                let threads = status_kb(&me, "Threads:");
                let rss = status_kb(&me, "VmRSS:") / 1024;
                first.get_or_insert((fds, threads, rss));
                worst = (worst.0.max(fds), worst.1.max(threads), worst.2.max(rss));
                // Every minute to stderr; the table keeps the first, every tenth and the last.
                eprintln!(
                    "soak minute {minute}: fds {fds}, threads {threads}, RSS {rss} MB, CPU {cpu:.2}%"
                );
                if minute == 1 || minute % 10 == 0 || start.elapsed() >= soak {
                    println!("| {minute} | {fds} | {threads} | {rss} | {cpu:.2} |");
                }
            }
            let (f, t, r) = first.unwrap_or_default();
            println!("| highest | {} | {} | {} | |", worst.0, worst.1, worst.2);
            println!();
            println!(
                "Growth from the first minute to the highest: fds +{}, threads +{}, RSS +{} MB.",
                worst.0 - f,
                worst.1 - t,
                worst.2 - r
            );
            println!();
        }

        // Drift at the top rung: ten random tenants per kind.
        println!("## Drift repaired with {} tenants present", orgs.len());
        println!();
        println!(
            "t0: the injecting command returned; t1: a 10 ms poll of the kernel sees it repaired."
        );
        println!();
        println!("| kind | n | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|");
        let mut seed = 0x9e37_79b9_u64;
        let mut pick = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % orgs.len() as u64) as usize
        };
        // `MESHWG_BENCH_DRIFT=0` skips the injections (to measure what follows alone).
        let per_kind = env_num("MESHWG_BENCH_DRIFT", 10);
        for kind in kinds().into_iter().filter(|_| per_kind > 0) {
            let mut took = Vec::new();
            for _ in 0..per_kind {
                let org = &orgs[pick()];
                let names = h.names(org);
                let pid = if backend() == Backend::Userspace {
                    daemon_pid(&h, &names)
                } else {
                    0
                };
                let n2 = names.clone();
                let t0 = tokio::task::spawn_blocking(move || {
                    (kind.inflict)(&n2, pid);
                    Instant::now()
                })
                .await
                .unwrap();
                let n2 = names.clone();
                let repaired = kind.repaired;
                let t1 = tokio::task::spawn_blocking(move || {
                    loop {
                        if repaired(&n2, pid) || t0.elapsed() > Duration::from_secs(30) {
                            return Instant::now();
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .await
                .unwrap();
                took.push(t1 - t0);
                // Let it settle (device recreation, re-handshakes) before the next injection.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let n = took.len();
            println!(
                "| {} | {n} | {:.0} | {:.0} | {:.0} |",
                kind.name,
                pct(&mut took, 0.5),
                pct(&mut took, 0.99),
                pct(&mut took, 1.0)
            );
        }
        println!();

        // Machine additions over the API, into random tenants.
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let mut adds = Vec::new();
        for i in 0..100 {
            let org = &orgs[pick()];
            let t = Instant::now();
            let r = api
                .call(
                    "POST",
                    &format!("/api/v1/orgs/{}/machines", org.id),
                    Some(&op),
                    Some(json!({"name": format!("added {i}")})),
                )
                .await;
            adds.push(t.elapsed());
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        println!(
            "## Machine additions over the API with {} tenants present",
            orgs.len()
        );
        println!();
        println!("| n | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|");
        let n = adds.len();
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} |",
            pct(&mut adds, 0.5),
            pct(&mut adds, 0.99),
            pct(&mut adds, 1.0)
        );
        println!();

        policy_changes(&h, &api, &op, &orgs[orgs.len() / 2]).await;
    });
}

/// When the kernel announces a rule added to or deleted from the ACL chain of `netns` (a commit
/// of anything else, e.g. a staging chain, does not count: the chain is what enforces).
async fn acl_commits(netns: &str) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    const NFNLGRP_NFTABLES: u32 = 7;
    const NEWRULE: u16 = (10 << 8) | 6;
    const DELRULE: u16 = (10 << 8) | 8;
    let socket = meshwg::kernel::ns::in_netns(netns, || {
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        s.bind_auto()?;
        s.add_membership(NFNLGRP_NFTABLES)?;
        Ok(s)
    })
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let Ok(n) = socket.recv(&mut &mut buf[..], 0) else {
                return;
            };
            let at = Instant::now();
            let mut msg = &buf[..n];
            let mut acl = false;
            while msg.len() >= 16 {
                let len = (u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize).max(16);
                let kind = u16::from_ne_bytes([msg[4], msg[5]]);
                let body = &msg[16.min(msg.len())..len.min(msg.len())];
                if (kind == NEWRULE || kind == DELRULE) && body.len() > 4 {
                    let mut attrs = &body[4..];
                    while attrs.len() >= 4 {
                        let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
                        let akind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                        if alen < 4 || alen > attrs.len() {
                            break;
                        }
                        acl |= akind == 2 && attrs[4..alen].starts_with(b"MWG-ACL\0");
                        attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
                    }
                }
                msg = &msg[len.next_multiple_of(4).min(msg.len())..];
            }
            if acl && tx.send(at).is_err() {
                return;
            }
        }
    });
    rx
}

/// 300 mixed policy changes in a tenant holding 2,000 rules: how long the API takes to answer,
/// and how long until nf_tables committed the change in the tenant's namespace.
async fn policy_changes(h: &Harness, api: &Api, op: &common::api::Client, org: &Org) {
    let names = h.names(org);
    let conn = h.pool.get().await.unwrap();
    for i in 0..1995u32 {
        let cidr = format!("10.100.{}.{}/32", 1 + i / 250, 1 + i % 250);
        conn.execute(
            "INSERT INTO policies (id, org_id, priority, action, src, dst, protocol, ports) VALUES ($1, $2, 200, 'allow', $3, '\"any\"', 'tcp', '443')",
            &[&Uuid::new_v4(), &org.id, &json!({"cidr": cidr})],
        )
        .await
        .unwrap();
    }
    h.ctl.sync(org.id).await.unwrap();
    let mut rx = acl_commits(&names.netns).await;
    let base = format!("/api/v1/orgs/{}/policies", org.id);
    let mut answer = Vec::new();
    let mut kernel = Vec::new();
    let mut made: Vec<String> = Vec::new();
    for i in 0..300 {
        while rx.try_recv().is_ok() {}
        let t = Instant::now();
        let (method, path, body) = match i % 4 {
            0 => (
                "POST",
                base.clone(),
                Some(
                    json!({"action": "deny", "src": {"cidr": format!("10.100.250.{}/32", 1 + i % 250)}, "dst": "any", "protocol": "tcp", "ports": "22", "priority": 50}),
                ),
            ),
            1 => (
                "PATCH",
                format!("{base}/{}", made.last().unwrap()),
                Some(json!({"ports": "2222"})),
            ),
            2 => (
                "PATCH",
                format!("{base}/{}", made.last().unwrap()),
                Some(json!({"enabled": false})),
            ),
            _ => ("DELETE", format!("{base}/{}", made.pop().unwrap()), None),
        };
        let r = api.call(method, &path, Some(op), body).await;
        answer.push(t.elapsed());
        assert!(r.status.is_success(), "{method} {path}: {:?}", r.body);
        if method == "POST" {
            made.push(r.body["id"].as_str().unwrap().to_string());
        }
        // Deleting the policy disabled just before changes nothing in the kernel.
        if method == "DELETE" {
            continue;
        }
        let committed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(Instant::now);
        kernel.push(committed.saturating_duration_since(t));
    }
    println!("## Policy changes in a 2,000-rule tenant");
    println!();
    println!(
        "300 changes (create, patch, disable, delete in turn) over the API; kernel: until the \
         tenant namespace's nf_tables announced a rule added to or deleted from its ACL chain (not for the deletions: the policy \
         deleted was disabled, so the kernel has nothing to change)."
    );
    println!();
    println!("| measured | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (what, v) in [("API answer", &mut answer), ("kernel commit", &mut kernel)] {
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} |",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    println!();
}
