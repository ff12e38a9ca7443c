//! Controller core timings (needs root; run through bench/run.sh): creating a tenant (namespace,
//! hub device, port, chain), adding a machine (allocation + live peer) and a policy change (the
//! row and the chain edit), each measured end to end through the controller, 20 times. The backend is
//! `MESHWG_TEST_BACKEND` (the guest bench runs it once per backend).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
    (v[0], median, p90, v[v.len() - 1])
}

fn row(what: &str, v: Vec<Duration>) {
    let n = v.len();
    let (min, median, p90, max) = stats(v);
    println!(
        "| {what} | {n} | {:.1} | {:.1} | {:.1} | {:.1} |",
        min.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

fn main() {
    common::run(|h| async move {
        let mut create = Vec::new();
        let mut orgs = Vec::new();
        for i in 0..20 {
            let t = Instant::now();
            orgs.push(h.tenant(&format!("bench {i}"), "10.100.0.0/16").await);
            create.push(t.elapsed());
        }
        let mut add = Vec::new();
        for i in 0..20 {
            let t = Instant::now();
            h.machine(&orgs[0], &format!("m{i}"), &[]).await;
            add.push(t.elapsed());
        }
        let mut change = Vec::new();
        let conn = h.pool.get().await.unwrap();
        for i in 0..20u16 {
            let t = Instant::now();
            conn.execute(
                "INSERT INTO policies (id, org_id, action, src, dst, protocol, ports) VALUES ($1, $2, 'deny', '\"any\"', '\"any\"', 'tcp', $3)",
                &[&uuid::Uuid::new_v4(), &orgs[0].id, &format!("{}", 9000 + i)],
            )
            .await
            .unwrap();
            h.ctl.sync(orgs[0].id).await.unwrap();
            change.push(t.elapsed());
        }
        drop(conn);
        let mut delete = Vec::new();
        for org in orgs.iter().skip(1) {
            let t = Instant::now();
            h.ctl.delete_tenant(org.id).await.unwrap();
            delete.push(t.elapsed());
        }
        println!(
            "## Controller core (one operation at a time, returns once the kernel reflects it)"
        );
        println!();
        println!("| operation | n | min ms | median ms | p90 ms | max ms |");
        println!("|---|---|---|---|---|---|");
        row("create tenant", create);
        row("add machine", add);
        row("policy change", change);
        row("delete tenant", delete);
        println!();
    });
}
