//! The API's read path at scale (issue 11; needs root and wrk, run through bench/run.sh): one
//! org with 1,000 machines among 100 idle tenants, the real server on a socket, wrk on the same
//! machine. Measures the machine list (full body, `If-None-Match` → 304, a 100-machine page),
//! the status route, the list while another account's logins flood in, machine additions one
//! at a time, and where the CPU went: controller, PostgreSQL, wrk, the rest of the machine.

#[path = "../tests/common/mod.rs"]
mod common;

use common::api::Api;
use std::time::{Duration, Instant};

const TENANTS: usize = 100;
const MACHINES: usize = 1000;
const ADDS: usize = 200;
const SECONDS: u32 = 15;

/// Clock ticks per second of `/proc` times.
fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime+stime (own) and cutime+cstime (waited-for children) of a process, in ticks.
fn ticks(pid: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f[11] + f[12], f[13] + f[14])
}

/// The throw-away PostgreSQL's postmaster and its backends.
fn postgres_pids() -> Vec<String> {
    let url = common::admin_database_url();
    let dir = url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("host="))
        .unwrap()
        .to_string();
    let pid_file = std::fs::read_to_string(format!("{dir}/data/postmaster.pid")).unwrap();
    let master = pid_file.lines().next().unwrap().trim().to_string();
    let mut pids = vec![master.clone()];
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = p.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(1)
            .unwrap_or("");
        if ppid == master {
            pids.push(pid);
        }
    }
    pids
}

/// Busy ticks of the whole machine (all cores).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    f.iter().take(8).sum::<f64>() - f[3] - f[4]
}

#[derive(Clone, Copy)]
struct Cpu {
    controller: f64,
    children: f64,
    postgres: f64,
    machine: f64,
    at: Instant,
}

impl Cpu {
    fn now() -> Cpu {
        let (own, children) = ticks("self");
        Cpu {
            controller: own,
            children,
            postgres: postgres_pids().iter().map(|p| ticks(p).0).sum(),
            machine: machine_busy(),
            at: Instant::now(),
        }
    }

    /// Percent of one core over the window: controller, PostgreSQL, wrk, everything else.
    fn since(&self, before: &Cpu) -> [f64; 4] {
        let secs = self.at.duration_since(before.at).as_secs_f64() * hz() / 100.0;
        let c = (self.controller - before.controller) / secs;
        let p = (self.postgres - before.postgres) / secs;
        let w = (self.children - before.children) / secs;
        let all = (self.machine - before.machine) / secs;
        [c, p, w, (all - c - p - w).max(0.0)]
    }
}

struct Wrk {
    rps: String,
    p50: String,
    p90: String,
    p99: String,
    errors: String,
}

/// Runs wrk in the controller's namespace; `script` is a Lua file, `headers` extra headers.
fn wrk(host: &str, url: &str, conns: u32, script: Option<&str>, headers: &[String]) -> Wrk {
    let threads = conns.min(2).to_string();
    let (conns, secs) = (conns.to_string(), format!("{SECONDS}s"));
    let mut argv = vec![
        "wrk",
        "-t",
        &threads,
        "-c",
        &conns,
        "-d",
        &secs,
        "--latency",
    ];
    for h in headers {
        argv.extend(["-H", h.as_str()]);
    }
    if let Some(s) = script {
        argv.extend(["-s", s]);
    }
    argv.push(url);
    let out = common::ns_out(host, &argv);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
            .unwrap_or_else(|| "?".into())
    };
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(|l| l.split_whitespace().last().unwrap_or("0").to_string())
        .unwrap_or_else(|| "0".into());
    Wrk {
        rps: field("Requests/sec:"),
        p50: field("50%"),
        p90: field("90%"),
        p99: field("99%"),
        errors,
    }
}

fn row(what: &str, w: &Wrk, cpu: [f64; 4]) {
    println!(
        "| {what} | {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {:.0}% | {:.0}% |",
        w.rps, w.p50, w.p90, w.p99, w.errors, cpu[0], cpu[1], cpu[2], cpu[3]
    );
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    common::run_with(Duration::from_millis(1500), |h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        for i in 0..TENANTS {
            h.tenant(&format!("idle {i}"), "10.100.0.0/16").await;
        }
        let org = api.org(&op, "bench", "10.100.0.0/16").await;
        let id = org["id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/orgs/{id}/machines");
        for chunk in (0..MACHINES).collect::<Vec<_>>().chunks(8) {
            let calls: Vec<_> = chunk
                .iter()
                .map(|i| {
                    let (api, op, path) = (api.clone(), op.clone(), path.clone());
                    let body = serde_json::json!({"name": format!("m{i}")});
                    tokio::spawn(
                        async move { api.call("POST", &path, Some(&op), Some(body)).await },
                    )
                })
                .collect();
            for c in calls {
                assert_eq!(c.await.unwrap().status, 201);
            }
        }

        // Machine additions one at a time, in another org, over the in-process router.
        let adds = api.org(&op, "adds", "10.101.0.0/16").await;
        let adds = format!("/api/v1/orgs/{}/machines", adds["id"].as_str().unwrap());
        let mut times = Vec::new();
        for i in 0..ADDS {
            let body = serde_json::json!({"name": format!("a{i}")});
            let t = Instant::now();
            let r = api.call("POST", &adds, Some(&op), Some(body)).await;
            times.push(t.elapsed());
            assert_eq!(r.status, 201);
        }
        times.sort();

        // The account whose logins flood in: another org's member.
        let flood = api.org(&op, "flood", "10.102.0.0/24").await;
        api.user(
            &op,
            flood["id"].as_str().unwrap(),
            "flood@bench.test",
            "member",
        )
        .await;

        let addr = h.serve_api(api.app.clone()).await;
        let base = format!("http://{addr}/api/v1/orgs/{id}");
        let full = format!("{base}/machines?limit={MACHINES}");
        let one = api
            .call("GET", &format!("{path}?limit={MACHINES}"), Some(&op), None)
            .await;
        assert_eq!(one.body["machines"].as_array().unwrap().len(), MACHINES);
        // (Without entity tags, as before issue 11, the conditional row sends a tag nobody made.)
        let etag = one
            .headers
            .get("etag")
            .map_or("\"none\"", |v| v.to_str().unwrap())
            .to_string();
        let cookie = format!("Cookie: {}", op.cookie);
        let script = h.world.tmp.join("login.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
                 wrk.body = '{{\"email\":\"flood@bench.test\",\"password\":\"{}\"}}'\n",
                common::api::PASSWORD
            ),
        )
        .unwrap();
        let script = script.display().to_string();
        let host = h.world.host_ns.clone();

        println!("## API: the read path with {TENANTS} idle tenants present");
        println!();
        println!(
            "wrk, 16 connections (2 threads), {SECONDS} s per row, over loopback in the controller's"
        );
        println!(
            "namespace, on the same {}-core machine; one org with {MACHINES} machines among {TENANTS} idle",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "tenants (hubs up, polled every 1.5 s). The full list is {} bytes. CPU in % of one core;",
            one.raw.len()
        );
        println!(
            "\"rest\" is everything else on the machine in that window (daemons, other work)."
        );
        println!();
        println!(
            "| request | requests/s | p50 | p90 | p99 | non-2xx/3xx | controller | PostgreSQL | wrk | rest |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let cases: Vec<(&str, String, Vec<String>)> = vec![
            (
                "GET machines?limit=1000 (full body)",
                full.clone(),
                vec![cookie.clone()],
            ),
            (
                "same, If-None-Match → 304",
                full.clone(),
                vec![cookie.clone(), format!("If-None-Match: {etag}")],
            ),
            (
                "GET machines?limit=100",
                format!("{base}/machines?limit=100"),
                vec![cookie.clone()],
            ),
            ("GET status", format!("{base}/status"), vec![cookie.clone()]),
        ];
        for (what, url, headers) in cases {
            let host = host.clone();
            let before = Cpu::now();
            let w = tokio::task::spawn_blocking(move || wrk(&host, &url, 16, None, &headers))
                .await
                .unwrap();
            row(what, &w, Cpu::now().since(&before));
        }
        // The 304 row means something only if the tag stayed current through it.
        let still = api
            .send(
                "GET",
                &format!("{path}?limit={MACHINES}"),
                Some(&op),
                None,
                "192.0.2.10:40000".parse().unwrap(),
                &[("if-none-match", &etag)],
            )
            .await;
        if still.status != 304 {
            println!(
                "| (the list's tag was not current after the runs: {}) | | | | | | | | | |",
                still.status
            );
        }
        // The list again while another account's logins (right password: each costs a hash)
        // arrive on 4 more connections.
        let (h1, h2, url, login) = (
            host.clone(),
            host.clone(),
            full.clone(),
            format!("http://{addr}/api/v1/auth/login"),
        );
        let before = Cpu::now();
        let flood = tokio::task::spawn_blocking(move || wrk(&h2, &login, 4, Some(&script), &[]));
        let list = tokio::task::spawn_blocking(move || wrk(&h1, &url, 16, None, &[cookie]));
        let (list, flood) = (list.await.unwrap(), flood.await.unwrap());
        let cpu = Cpu::now().since(&before);
        row("full list during a login flood", &list, cpu);
        row("… the flood: POST auth/login", &flood, cpu);
        println!();
        println!(
            "Machine additions one at a time ({ADDS}, in an org of its own, with the others present;"
        );
        println!("through the router in-process, answered once the peer is live in the hub):");
        println!();
        println!("| n | p50 ms | p90 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|");
        println!(
            "| {ADDS} | {:.1} | {:.1} | {:.1} | {:.1} |",
            pct(&times, 0.5),
            pct(&times, 0.9),
            pct(&times, 0.99),
            pct(&times, 1.0)
        );
        println!();
    });
}
