//! Metrics. Controller-wide series (HTTP, logins, rate limiting) go through the `metrics` crate
//! and its Prometheus exporter. Per-tenant series are the kernel's own numbers, copied here by
//! each tenant actor right where its reconcile reads the kernel, so a scrape costs no kernel
//! call; they live in our own registry so that a deleted tenant's or machine's series vanish.

use crate::policy::Verdict;
use crate::reconcile::Action;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// Histogram buckets (seconds) for reconcile and request durations.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One peer as the hub's device reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSeries {
    pub machine: Option<Uuid>,
    pub machine_name: Option<String>,
    pub public_key: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Unix seconds; 0 if never.
    pub last_handshake: i64,
}

/// One rule of the tenant chain with its counters.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSeries {
    /// The policy id, or `default` / `established`.
    pub policy: String,
    pub action: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS.len()];
        }
        for (i, le) in BUCKETS.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Default)]
struct TenantSeries {
    name: String,
    up: bool,
    peers: Vec<PeerSeries>,
    rules: Vec<RuleSeries>,
    runs: BTreeMap<&'static str, u64>,
    repairs: BTreeMap<&'static str, u64>,
    duration: Histogram,
    restarts: u64,
}

/// The kernel facts of one successful reconcile.
#[derive(Debug, Clone)]
pub struct KernelFacts {
    pub name: String,
    pub up: bool,
    pub peers: Vec<PeerSeries>,
    pub rules: Vec<RuleSeries>,
}

/// Every result a reconcile is counted under.
pub const RESULTS: [&str; 3] = ["ok", "error", "db_unavailable"];

#[derive(Default)]
pub struct Telemetry {
    tenants: Mutex<BTreeMap<Uuid, TenantSeries>>,
    egress_tripped: AtomicBool,
}

impl Telemetry {
    fn with<R>(&self, org: Uuid, f: impl FnOnce(&mut TenantSeries) -> R) -> R {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(org).or_default())
    }

    /// Records one reconcile: its result, duration, repairs and (if it succeeded) kernel facts.
    pub fn reconciled(
        &self,
        org: Uuid,
        result: &'static str,
        took: Duration,
        repairs: &[&'static str],
        facts: Option<KernelFacts>,
    ) {
        self.with(org, |t| {
            *t.runs.entry(result).or_default() += 1;
            t.duration.observe(took.as_secs_f64());
            for k in repairs {
                *t.repairs.entry(k).or_default() += 1;
            }
            if let Some(f) = facts {
                t.name = f.name;
                t.up = f.up;
                t.peers = f.peers;
                t.rules = f.rules;
            }
        });
    }

    /// Repairs and actor restarts of a tenant since this controller started.
    pub fn repairs_and_restarts(&self, org: Uuid) -> (u64, u64) {
        let map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&org)
            .map_or((0, 0), |t| (t.repairs.values().sum(), t.restarts))
    }

    /// Kernel numbers read by a poll (no reconcile ran).
    pub fn kernel_facts(&self, org: Uuid, f: KernelFacts) {
        self.with(org, |t| {
            t.name = f.name;
            t.up = f.up;
            t.peers = f.peers;
            t.rules = f.rules;
        });
    }

    /// A tenant namespace was found with a way out it must not have (and it was removed).
    pub fn egress_repaired(&self) {
        self.egress_tripped.store(true, Ordering::Relaxed);
    }

    /// The hub could not be observed (reconcile failed): it is not known to be up.
    pub fn down(&self, org: Uuid) {
        self.with(org, |t| t.up = false);
    }

    pub fn restarted(&self, org: Uuid) {
        self.with(org, |t| t.restarts += 1);
    }

    /// Forgets a deleted tenant: its series vanish from the next scrape.
    pub fn remove(&self, org: Uuid) {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&org);
    }

    pub fn egress_tripped(&self) -> bool {
        self.egress_tripped.load(Ordering::Relaxed)
    }

    /// The per-tenant series in Prometheus text format.
    pub fn render(&self) -> String {
        let map = self
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, lines: &mut dyn FnMut(&mut String)| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                lines(&mut out);
            };
        family(
            "meshwg_tenant_up",
            "gauge",
            "1 if the tenant's namespace and hub device were up at the last reconcile.",
            &mut |o| {
                for (id, t) in &map {
                    let _ = writeln!(
                        o,
                        "meshwg_tenant_up{{tenant=\"{id}\",tenant_name=\"{}\"}} {}",
                        esc(&t.name),
                        u8::from(t.up)
                    );
                }
            },
        );
        family(
            "meshwg_tenant_peers",
            "gauge",
            "Peers configured in the tenant's hub.",
            &mut |o| {
                for (id, t) in &map {
                    let _ = writeln!(
                        o,
                        "meshwg_tenant_peers{{tenant=\"{id}\"}} {}",
                        t.peers.len()
                    );
                }
            },
        );
        let peer_labels = |id: &Uuid, p: &PeerSeries| {
            format!(
                "tenant=\"{id}\",machine=\"{}\",machine_name=\"{}\",public_key=\"{}\"",
                p.machine.map(|m| m.to_string()).unwrap_or_default(),
                esc(p.machine_name.as_deref().unwrap_or("")),
                p.public_key
            )
        };
        type PeerValue = fn(&PeerSeries) -> i64;
        let peer_families: [(&str, &str, &str, PeerValue); 3] = [
            (
                "meshwg_peer_rx_bytes_total",
                "counter",
                "Bytes the hub received from the peer (wg show transfer).",
                |p| p.rx_bytes as i64,
            ),
            (
                "meshwg_peer_tx_bytes_total",
                "counter",
                "Bytes the hub sent to the peer (wg show transfer).",
                |p| p.tx_bytes as i64,
            ),
            (
                "meshwg_peer_last_handshake_seconds",
                "gauge",
                "Unix time of the peer's last handshake with the hub (0: never).",
                |p| p.last_handshake,
            ),
        ];
        for (name, kind, help, value) in peer_families {
            family(name, kind, help, &mut |o| {
                for (id, t) in &map {
                    for p in &t.peers {
                        let _ = writeln!(o, "{name}{{{}}} {}", peer_labels(id, p), value(p));
                    }
                }
            });
        }
        for (name, help, pick) in [
            (
                "meshwg_policy_packets_total",
                "Packets matched by the policy's rule (iptables counters).",
                true,
            ),
            (
                "meshwg_policy_bytes_total",
                "Bytes matched by the policy's rule (iptables counters).",
                false,
            ),
        ] {
            family(name, "counter", help, &mut |o| {
                for (id, t) in &map {
                    for r in &t.rules {
                        let v = if pick { r.packets } else { r.bytes };
                        let _ = writeln!(
                            o,
                            "{name}{{tenant=\"{id}\",policy=\"{}\",action=\"{}\"}} {v}",
                            r.policy,
                            r.action.as_str()
                        );
                    }
                }
            });
        }
        // Every known label value from zero, so `increase()` sees the first event too.
        family(
            "meshwg_reconcile_runs_total",
            "counter",
            "Reconciles of the tenant by result.",
            &mut |o| {
                for (id, t) in &map {
                    for result in RESULTS {
                        let n = t.runs.get(result).copied().unwrap_or(0);
                        let _ = writeln!(
                            o,
                            "meshwg_reconcile_runs_total{{tenant=\"{id}\",result=\"{result}\"}} {n}"
                        );
                    }
                }
            },
        );
        family(
            "meshwg_reconcile_repairs_total",
            "counter",
            "Kernel drift repaired, by kind of repair.",
            &mut |o| {
                for (id, t) in &map {
                    for kind in Action::KINDS {
                        let n = t.repairs.get(kind).copied().unwrap_or(0);
                        let _ = writeln!(
                            o,
                            "meshwg_reconcile_repairs_total{{tenant=\"{id}\",kind=\"{kind}\"}} {n}"
                        );
                    }
                }
            },
        );
        family(
            "meshwg_reconcile_duration_seconds",
            "histogram",
            "Duration of one reconcile (read, plan, apply).",
            &mut |o| {
                for (id, t) in &map {
                    if t.duration.count == 0 {
                        continue;
                    }
                    for (i, le) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(
                            o,
                            "meshwg_reconcile_duration_seconds_bucket{{tenant=\"{id}\",le=\"{le}\"}} {}",
                            t.duration.buckets[i]
                        );
                    }
                    let _ = writeln!(
                        o,
                        "meshwg_reconcile_duration_seconds_bucket{{tenant=\"{id}\",le=\"+Inf\"}} {}",
                        t.duration.count
                    );
                    let _ = writeln!(
                        o,
                        "meshwg_reconcile_duration_seconds_sum{{tenant=\"{id}\"}} {}",
                        t.duration.sum
                    );
                    let _ = writeln!(
                        o,
                        "meshwg_reconcile_duration_seconds_count{{tenant=\"{id}\"}} {}",
                        t.duration.count
                    );
                }
            },
        );
        family(
            "meshwg_tenant_actor_restarts_total",
            "counter",
            "Restarts of the tenant's actor by the supervisor.",
            &mut |o| {
                for (id, t) in &map {
                    let _ = writeln!(
                        o,
                        "meshwg_tenant_actor_restarts_total{{tenant=\"{id}\"}} {}",
                        t.restarts
                    );
                }
            },
        );
        family(
            "meshwg_egress_guard",
            "gauge",
            "0 unless a tenant namespace was ever found with a route, NAT rule or link it must not have (since start).",
            &mut |o| {
                let _ = writeln!(o, "meshwg_egress_guard {}", u8::from(self.egress_tripped()));
            },
        );
        out
    }
}

/// Escapes a Prometheus label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder for controller-wide series (once; later calls reuse it).
pub fn recorder() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        "meshwg_http_requests_total",
        "API requests by route, method and status."
    );
    metrics::describe_histogram!(
        "meshwg_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "API request duration by route and method."
    );
    metrics::describe_counter!(
        "meshwg_login_failures_total",
        "Failed logins (wrong email or password)."
    );
    metrics::describe_counter!(
        "meshwg_rate_limited_total",
        "Login attempts refused by the rate limit."
    );
    // Present (at zero) from the first scrape, not only after the first event.
    metrics::counter!("meshwg_login_failures_total").absolute(0);
    metrics::counter!("meshwg_rate_limited_total").absolute(0);
}

/// Everything `/metrics` serves.
pub fn scrape(telemetry: &Telemetry) -> String {
    let mut out = recorder().render();
    out.push_str(&telemetry.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_forgets() {
        let t = Telemetry::default();
        let org = Uuid::new_v4();
        t.reconciled(
            org,
            "ok",
            Duration::from_millis(30),
            &["set_peers", "delete_route"],
            Some(KernelFacts {
                name: "Acme \"q\"\nx".into(),
                up: true,
                peers: vec![PeerSeries {
                    machine: None,
                    machine_name: Some("m".into()),
                    public_key: "k=".into(),
                    rx_bytes: 10,
                    tx_bytes: 20,
                    last_handshake: 5,
                }],
                rules: vec![RuleSeries {
                    policy: "default".into(),
                    action: Verdict::Allow,
                    packets: 3,
                    bytes: 300,
                }],
            }),
        );
        t.restarted(org);
        assert!(t.render().contains("meshwg_egress_guard 0"));
        t.egress_repaired();
        let text = t.render();
        assert!(
            text.contains(&format!(
                "meshwg_tenant_up{{tenant=\"{org}\",tenant_name=\"Acme \\\"q\\\"\\nx\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains("public_key=\"k=\"} 10\n"));
        assert!(text.contains(&format!(
            "meshwg_policy_packets_total{{tenant=\"{org}\",policy=\"default\",action=\"allow\"}} 3"
        )));
        assert!(text.contains(&format!(
            "meshwg_reconcile_duration_seconds_bucket{{tenant=\"{org}\",le=\"0.05\"}} 1"
        )));
        assert!(text.contains(&format!(
            "meshwg_reconcile_duration_seconds_bucket{{tenant=\"{org}\",le=\"0.025\"}} 0"
        )));
        assert!(text.contains(&format!(
            "meshwg_reconcile_repairs_total{{tenant=\"{org}\",kind=\"delete_route\"}} 1"
        )));
        assert!(text.contains("meshwg_egress_guard 1"));
        t.remove(org);
        assert!(!t.render().contains(&org.to_string()));
        assert!(
            t.render().contains("meshwg_egress_guard 1"),
            "sticky since start"
        );
    }
}
