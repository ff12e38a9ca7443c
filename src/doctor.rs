//! `meshwg doctor`: what this host offers and what `WG_BACKEND=auto` would pick.

use crate::cmd::Cmd;
use crate::config::{self, Lookup};
use crate::kernel::{decide, find_program, kernel_wg::KernelWg};

async fn first_line(program: &str, args: &[&str]) -> String {
    match Cmd::new(program).args(args).output().await {
        Ok(out) => {
            let text = if out.stdout.trim().is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(e) => format!("not available ({e})"),
    }
}

/// Prints one line per fact; returns false if something the controller needs is missing.
pub async fn run(env: Lookup<'_>) -> bool {
    let mut ok = true;
    let kcfg = match config::kernel(env) {
        Ok(k) => k,
        Err(e) => {
            println!("configuration:      {e}");
            return false;
        }
    };
    match KernelWg::probe(&kcfg.prefix).await {
        Ok(()) => println!("kernel WireGuard:   yes (a probe link was created and removed)"),
        Err(why) => println!("kernel WireGuard:   no ({why})"),
    }
    let go = find_program(&kcfg.wireguard_go);
    match &go {
        Some(p) => println!(
            "wireguard-go:       {} ({})",
            p.display(),
            first_line(&p.to_string_lossy(), &["--version"]).await
        ),
        None => println!("wireguard-go:       not found ({:?})", kcfg.wireguard_go),
    }
    for (label, prog, args) in [
        ("iptables:           ", "iptables", &["--version"][..]),
        ("ipset:              ", "ipset", &["version"][..]),
        ("iproute2:           ", "ip", &["-V"][..]),
        ("wg:                 ", "wg", &["--version"][..]),
    ] {
        let line = first_line(prog, args).await;
        if line.starts_with("not available") {
            ok = false;
        }
        println!("{label}{line}");
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    println!(
        "ip_forward (host):  {} (tenant namespaces set their own)",
        fwd.trim()
    );
    let mut tenants = None;
    let mut db_free = None;
    match config::database_url(env) {
        Err(_) => println!("PostgreSQL:         DATABASE_URL not set"),
        Ok(url) => match crate::db::pool(&url) {
            Ok(pool) => match pool.get().await {
                Ok(conn) => match conn.query_one("SHOW server_version", &[]).await {
                    Ok(row) => {
                        println!(
                            "PostgreSQL:         reachable (server {})",
                            row.get::<_, String>(0)
                        );
                        db_free = conn
                            .query_one(
                                "SELECT current_setting('max_connections')::bigint - \
                                 (SELECT count(*) FROM pg_stat_activity)",
                                &[],
                            )
                            .await
                            .ok()
                            .map(|r| r.get::<_, i64>(0).max(0) as u64);
                        tenants = conn
                            .query_one("SELECT count(*) FROM orgs", &[])
                            .await
                            .ok()
                            .map(|r| r.get::<_, i64>(0) as u64);
                    }
                    Err(e) => println!("PostgreSQL:         connected but query failed: {e}"),
                },
                Err(e) => {
                    ok = false;
                    println!("PostgreSQL:         unreachable: {e}");
                }
            },
            Err(e) => println!("PostgreSQL:         {e}"),
        },
    }
    let choice = config::backend(env).unwrap_or(config::BackendChoice::Auto);
    let label = format!("WG_BACKEND={}", format!("{choice:?}").to_lowercase());
    let decision = decide(choice, &kcfg).await;
    match &decision {
        Ok(d) => println!("{label:<20}picks: {} ({})", d.backend, d.why),
        Err(why) => {
            ok = false;
            println!("{label:<20}picks: none: {why}");
        }
    }
    let ports = config::port_range(env)
        .map(|r| u64::from(*r.end() - *r.start()) + 1)
        .unwrap_or(0);
    let present = tenants.unwrap_or(0);
    let userspace = decision.as_ref().is_ok_and(|d| d.backend == "userspace");
    println!(
        "capacity:           {present} tenants present; limits of this shell (the service has its own):"
    );
    for f in crate::capacity::judge(
        present.max(1),
        crate::capacity::Limits::here(),
        userspace,
        ports,
        db_free,
    ) {
        if !f.ok {
            ok = false;
        }
        println!("  {} {}", if f.ok { "ok  " } else { "WARN" }, f.text);
    }
    ok
}
