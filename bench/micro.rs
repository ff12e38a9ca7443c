//! Micro-costs of the observation paths (needs root; `cargo bench --bench micro`): one tenant
//! with 10 machines and 5 tag policies, each read repeated many times, CPU per call measured
//! with getrusage (this process's threads and the commands it waited for). These are the
//! per-tenant costs the scale ladder multiplies (SCALE.md's B0 list).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

fn cpu() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let mut c: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage with valid out-pointers.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut c);
    }
    let t = |r: &libc::rusage| {
        Duration::from_micros(
            (r.ru_utime.tv_sec as u64 + r.ru_stime.tv_sec as u64) * 1_000_000
                + r.ru_utime.tv_usec as u64
                + r.ru_stime.tv_usec as u64,
        )
    };
    t(&u) + t(&c)
}

fn main() {
    common::run_observed(
        meshwg::actors::Observer {
            poll: None,
            full: Duration::from_secs(3600),
            counters: Duration::from_secs(3600),
            events: false,
        },
        |h| async move {
            let org = h.tenant("micro", "10.100.0.0/16").await;
            for j in 0..10 {
                h.machine(
                    &org,
                    &format!("m{j}"),
                    if j % 2 == 0 { &["web"] } else { &[] },
                )
                .await;
            }
            for p in 0..5u16 {
                h.policy(
                    &org,
                    if p % 2 == 0 { "deny" } else { "allow" },
                    serde_json::json!({"tag": "web"}),
                    serde_json::json!("any"),
                )
                .await;
            }
            let names = h.names(&org);
            let k = h.deps.kernel.clone();
            println!("## Micro-costs of one tenant's observation (CPU per call)");
            println!();
            println!("| read | calls | µs CPU per call | µs wall per call |");
            println!("|---|---|---|---|");
            macro_rules! measure {
                ($what:expr, $n:expr, $body:expr) => {{
                    for _ in 0..50 {
                        let _ = $body;
                    }
                    let (c0, t0) = (cpu(), Instant::now());
                    for _ in 0..$n {
                        let _ = $body;
                    }
                    let n = $n as f64;
                    println!(
                        "| {} | {} | {:.1} | {:.1} |",
                        $what,
                        $n,
                        (cpu() - c0).as_secs_f64() * 1e6 / n,
                        t0.elapsed().as_secs_f64() * 1e6 / n
                    );
                }};
            }
            measure!(
                "namespace glance (identity, links, sysctls)",
                5000,
                k.netns.glance(&names).await
            );
            measure!(
                "namespace observe (links, addresses, routes, sysctls)",
                5000,
                k.netns.observe(&names).await
            );
            measure!(
                "device (UAPI get or genetlink)",
                5000,
                k.wg.observe(&names).await
            );
            measure!(
                "firewall, generation unchanged, no counters",
                5000,
                k.firewall.observe(&names, false).await
            );
            measure!(
                "firewall, generation unchanged, with counters",
                5000,
                k.firewall.observe(&names, true).await
            );
            measure!(
                "rule counters for a status read",
                5000,
                k.firewall.counters(&names).await
            );
            // The cheap poll's parts, as it runs them for an idle tenant every 1.5 s.
            let inode = k.netns.identity(&names).expect("a namespace");
            let held = k.namespaces.held(&names.netns, inode).expect("handles");
            let dev = match k.wg.observe(&names).await {
                Ok(meshwg::kernel::DeviceState::Up(d)) => d,
                other => panic!("no device: {other:?}"),
            };
            measure!(
                "poll: namespace identity (one stat)",
                20000,
                k.netns.identity(&names)
            );
            measure!(
                "poll: silent sysctls (three held files)",
                20000,
                held.silent_switches_hold()
            );
            let sets = meshwg::kernel::nl::nft::ipsets(&held.nfnl)
                .await
                .expect("ipsets");
            let set_names: Vec<&str> = sets.keys().map(String::as_str).collect();
            measure!(
                "ipset members, every set (one netlink dump)",
                20000,
                meshwg::kernel::nl::nft::ipsets(&held.nfnl).await
            );
            measure!(
                "poll: ipset members (the tenant's sets listed by name)",
                20000,
                k.firewall.sets(&held, &set_names).await
            );
            measure!(
                "poll: device unless unchanged (a quiet daemon is not asked)",
                20000,
                k.wg.observe_unless(&names, &dev).await
            );
            // What a full check costs (a `Sync` is one too: the rows read, the kernel read
            // with counters, nothing to apply, the status published).
            measure!(
                "a reconcile with nothing to do (database and kernel read)",
                2000,
                h.ctl.sync(org.id).await
            );
            measure!(
                "namespace identity (stat + statfs)",
                20000,
                meshwg::kernel::ns::namespace_inode(&names.netns)
            );
            measure!(
                "iptables-save (what a moved generation costs)",
                200,
                meshwg::cmd::Cmd::new("iptables-save")
                    .arg("-c")
                    .netns(&names.netns)
                    .run()
                    .await
            );
            println!();
        },
    );
}
