//! `/metrics` with 100 tenants (10 peers and 5 policies each): scrape time and size, and the
//! controller's CPU use while those tenants are reconciled every 2 s (needs root; bench/run.sh).

#[path = "../tests/common/mod.rs"]
mod common;

use meshwg::db::policies::{self, PolicyFields};
use meshwg::policy::{Protocol, Selector, Verdict};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// CPU seconds used so far by this process and its finished children.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, and the same for waited-for children (the ip/iptables/ipset commands).
    let ticks: f64 = f[11..15].iter().map(|v| v.parse::<f64>().unwrap()).sum();
    ticks / 100.0
}

fn main() {
    common::run_with(Duration::from_secs(2), |h| async move {
        let mut orgs = Vec::new();
        for i in 0..100 {
            let org = h.tenant(&format!("tenant {i}"), "10.100.0.0/16").await;
            for j in 0..10 {
                h.machine(&org, &format!("m{j}"), &["web"]).await;
            }
            for p in 0..5u16 {
                let f = PolicyFields {
                    name: format!("p{p}"),
                    priority: i32::from(p),
                    action: if p % 2 == 0 {
                        Verdict::Deny
                    } else {
                        Verdict::Allow
                    },
                    src: Selector::Tag("web".into()),
                    dst: Selector::Any,
                    protocol: Protocol::Tcp,
                    ports: Some(format!("{}", 8000 + p).parse().unwrap()),
                    enabled: true,
                };
                policies::insert(&h.pool, org.id, Uuid::new_v4(), &f)
                    .await
                    .unwrap();
            }
            h.ctl.sync(org.id).await.unwrap();
            orgs.push(org);
        }
        // Let every tenant reconcile at least once more, then measure.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let route = meshwg::http::metrics_route(h.deps.telemetry.clone());
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let resp = warp::test::request().path("/metrics").reply(&route).await;
            times.push(t.elapsed());
            size = resp.body().len();
        }
        times.sort();
        let lines = String::from_utf8(
            warp::test::request()
                .path("/metrics")
                .reply(&route)
                .await
                .body()
                .to_vec(),
        )
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
        let (c0, t0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let cpu = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
        println!("## Metrics: scrape with 100 tenants (1,000 peers, 500 policies)");
        println!();
        println!("| scrapes | median ms | p99 ms | size | series |");
        println!("|---|---|---|---|---|");
        println!(
            "| {} | {:.2} | {:.2} | {} KiB | {lines} |",
            times.len(),
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() * 99 / 100].as_secs_f64() * 1e3,
            size / 1024
        );
        println!();
        println!(
            "No kernel call happens on a scrape: the numbers are those of each tenant's last reconcile."
        );
        println!();
        println!("## Controller CPU with 100 idle tenants reconciled every 2 s");
        println!();
        println!(
            "Controller process plus the commands it runs; the wireguard-go daemons are not counted."
        );
        println!();
        println!("| tenants | interval | CPU (one core = 100%) |");
        println!("|---|---|---|");
        println!("| {} | 2 s | {cpu:.0}% |", orgs.len());
        println!();
    });
}
