//! Shared harness for the kernel integration tests (they need root, a throw-away PostgreSQL
//! reachable at `MESHWG_TEST_DATABASE_URL` over a Unix socket, iproute2, iptables, ipset,
//! wireguard-go and wg-quick — `scripts/test.sh` provides all of it).
//!
//! Topology of one test (every name carries the test's random prefix `<p>`, letters only):
//!
//! ```text
//!  <p>-host  "controller host": the test's tokio runtime threads live here, so the controller
//!  │          under test, its wireguard-go daemons and their UDP ports are here too.
//!  │   br0 172.30.0.1/24  (PUBLIC_ENDPOINT)
//!  ├── veth ── <p>-c1   client "VM" 172.30.0.2, wg-quick interface <p>c1
//!  └── veth ── <p>-c2   client "VM" 172.30.0.3, wg-quick interface <p>c2
//!  <p>-<kid>  tenant namespaces made by the controller under test
//! ```
//!
//! A guard removes all of it (namespaces, daemons, sockets, database) when the test ends, even
//! when it panics.

#![allow(dead_code)]

use meshwg::actors::Deps;
use meshwg::controller::{Controller, NewTenant};
use meshwg::crypto::HubKeyCipher;
use meshwg::db::Pool;
use meshwg::db::machines::{Machine, NewMachine};
use meshwg::db::orgs::Org;
use meshwg::keys::PrivateKey;
use meshwg::names::{KernelPrefix, TenantNames};
use meshwg::policy::Verdict;
use meshwg::secret::Secret;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub mod api;
pub mod probe;

pub const INTERVAL: Duration = Duration::from_secs(1);

/// The WireGuard backend under test: `MESHWG_TEST_BACKEND=kernel` (the guest tier, where the
/// module exists) or `userspace` (the default; wireguard-go). Every test runs against either,
/// so both implementations of the `WireGuard` trait answer to one contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Userspace,
    Kernel,
}

pub fn backend() -> Backend {
    match std::env::var("MESHWG_TEST_BACKEND").as_deref() {
        Ok("kernel") => Backend::Kernel,
        Ok("userspace") | Err(_) => Backend::Userspace,
        Ok(other) => panic!("MESHWG_TEST_BACKEND={other}: kernel or userspace"),
    }
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Userspace => "userspace",
            Backend::Kernel => "kernel",
        }
    }
}

/// `wg SUB <hub device> ARGS…` wherever the backend keeps the tenant's hub: wireguard-go's
/// UAPI socket is named by the birth name in the controller namespace; a kernel device is `wg0`
/// inside the tenant namespace.
pub fn wg_argv(names: &TenantNames, sub: &str, args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = match backend() {
        Backend::Userspace => vec!["wg".into(), sub.into(), names.birth.clone()],
        Backend::Kernel => ["ip", "netns", "exec", &names.netns, "wg", sub, "wg0"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    argv.extend(args.iter().map(|s| s.to_string()));
    argv
}

/// [`wg_argv`] run; stdout, panics on failure.
pub fn wg(names: &TenantNames, sub: &str, args: &[&str]) -> String {
    let argv = wg_argv(names, sub, args);
    sh(&argv.iter().map(String::as_str).collect::<Vec<_>>())
}

/// [`wg_argv`] run, whatever the exit status.
pub fn wg_out(names: &TenantNames, sub: &str, args: &[&str]) -> std::process::Output {
    let argv = wg_argv(names, sub, args);
    sh_out(&argv.iter().map(String::as_str).collect::<Vec<_>>())
}
pub const ENDPOINT: &str = "172.30.0.1";
pub const TEST_KEY: [u8; 32] = [42; 32];

/// Runs a command, printing it (like netns.sh's wrappers); returns stdout, panics on failure.
pub fn sh(args: &[&str]) -> String {
    let out = sh_out(args);
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output whatever the exit status.
pub fn sh_out(args: &[&str]) -> std::process::Output {
    eprintln!("+ {}", args.join(" "));
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]))
}

/// Runs a command inside a network namespace.
pub fn ns(netns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", netns];
    full.extend_from_slice(args);
    sh(&full)
}

pub fn ns_out(netns: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["ip", "netns", "exec", netns];
    full.extend_from_slice(args);
    sh_out(&full)
}

/// How much slower than this host the machine running the tests is: `MESHWG_TEST_SLOWDOWN`
/// (the QEMU/TCG guest tier sets it; default 1). Deadlines are correctness bounds with room to
/// spare, never timings; they stretch by this factor.
pub fn slowdown() -> u32 {
    std::env::var("MESHWG_TEST_SLOWDOWN")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|f| *f >= 1)
        .unwrap_or(1)
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `deadline` (stretched
/// by [`slowdown`]).
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = deadline * slowdown();
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        if start.elapsed() > deadline {
            panic!("{what}: not true within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn random_prefix() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    std::iter::once('t')
        .chain(b.iter().map(|x| (b'a' + x % 26) as char))
        .collect()
}

pub fn admin_database_url() -> String {
    std::env::var("MESHWG_TEST_DATABASE_URL").expect(
        "MESHWG_TEST_DATABASE_URL is not set: run the tests through scripts/test.sh, which makes a throw-away PostgreSQL",
    )
}

/// Everything one test created, removed on drop.
pub struct World {
    pub prefix: String,
    pub host_ns: String,
    pub runtime_dir: PathBuf,
    pub tmp: PathBuf,
    pub db_name: String,
    /// (namespace, wg-quick config path) of every client made.
    pub clients: Mutex<Vec<(String, PathBuf)>>,
    pub pids: Mutex<Vec<u32>>,
}

impl World {
    fn new() -> Arc<World> {
        let prefix = random_prefix();
        let w = World {
            host_ns: format!("{prefix}-host"),
            runtime_dir: PathBuf::from(format!("/run/meshwg-test/{prefix}")),
            tmp: PathBuf::from(format!("/tmp/meshwg-test-{prefix}")),
            db_name: format!("meshwg_{prefix}"),
            prefix,
            clients: Mutex::new(Vec::new()),
            pids: Mutex::new(Vec::new()),
        };
        std::fs::create_dir_all(&w.tmp).unwrap();
        sh(&["ip", "netns", "add", &w.host_ns]);
        ns(&w.host_ns, &["ip", "link", "set", "lo", "up"]);
        ns(&w.host_ns, &["ip", "link", "add", "br0", "type", "bridge"]);
        ns(
            &w.host_ns,
            &["ip", "addr", "add", &format!("{ENDPOINT}/24"), "dev", "br0"],
        );
        ns(&w.host_ns, &["ip", "link", "set", "br0", "up"]);
        Arc::new(w)
    }

    pub fn kernel_prefix(&self) -> KernelPrefix {
        KernelPrefix::new(&self.prefix).unwrap()
    }

    /// Environment for a `meshwg` process of this test.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        use base64::Engine;
        vec![
            ("DATABASE_URL", database_url(&self.db_name)),
            (
                "ENCRYPTION_KEY",
                base64::engine::general_purpose::STANDARD.encode(TEST_KEY),
            ),
            ("JWT_SECRET", "j".repeat(40)),
            ("PUBLIC_ENDPOINT", ENDPOINT.to_string()),
            ("KERNEL_PREFIX", self.prefix.clone()),
            ("RUNTIME_DIR", self.runtime_dir.display().to_string()),
            ("RECONCILE_INTERVAL", format!("{}ms", INTERVAL.as_millis())),
            ("WG_BACKEND", backend().name().to_string()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("METRICS_ADDR", "127.0.0.1:0".to_string()),
            ("RUST_LOG", "info".to_string()),
        ]
    }
}

/// Replaces the `dbname` of the admin URL (key=value form) with `db`.
pub fn database_url(db: &str) -> String {
    let admin = admin_database_url();
    let kept: Vec<&str> = admin
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .collect();
    format!("{} dbname={db}", kept.join(" "))
}

impl Drop for World {
    fn drop(&mut self) {
        for pid in self.pids.lock().unwrap().drain(..) {
            // SAFETY: a pid this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for (client, conf) in self.clients.lock().unwrap().drain(..) {
            // wg-quick's daemon pins its namespace with its UDP socket: take the interface
            // down first (the daemon exits with it), then remove the namespace.
            let _ = sh_out(&[
                "ip",
                "netns",
                "exec",
                &client,
                "wg-quick",
                "down",
                conf.to_str().unwrap(),
            ]);
            let _ = sh_out(&["ip", "netns", "del", &client]);
        }
        kill_client_daemons(&self.prefix);
        // Tear down tenants with the library itself, from inside the controller host namespace.
        let prefix = self.kernel_prefix();
        let host_ns = self.host_ns.clone();
        let runtime_dir = self.runtime_dir.clone();
        let _ = std::thread::spawn(move || {
            enter_netns(&host_ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let kernel = test_kernel(&runtime_dir);
                let mut kids = std::collections::BTreeSet::new();
                kids.extend(kernel.netns.list(&prefix).await.unwrap_or_default());
                kids.extend(kernel.wg.list(&prefix).await.unwrap_or_default());
                for kid in kids {
                    let _ =
                        meshwg::reconcile::apply::teardown(&kernel, &prefix.tenant(kid).unwrap())
                            .await;
                }
            });
        })
        .join();
        let _ = sh_out(&["ip", "netns", "del", &self.host_ns]);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        let _ = std::fs::remove_dir_all(&self.tmp);
        // wg-quick's own daemons exit once their namespace (and so their TUN) is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && leftover_sockets(&self.prefix) > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop_database(&self.db_name);
    }
}

/// Last resort for clients whose `wg-quick down` failed: their daemons, found by exact command
/// line (`wireguard-go <prefix>c<n>`, names only this test uses), killed by pid.
fn kill_client_daemons(prefix: &str) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.len() == 2
            && args[0].ends_with("wireguard-go")
            && args[1].starts_with(&format!("{prefix}c"))
        {
            // SAFETY: a daemon wg-quick started for this test's client.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

fn leftover_sockets(prefix: &str) -> usize {
    std::fs::read_dir("/var/run/wireguard")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

fn drop_database(db: &str) {
    let db = db.to_string();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&admin_database_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client
                    .execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), &[])
                    .await;
            }
        });
    })
    .join();
}

fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("netns");
    // SAFETY: setns on this (private, fresh) thread.
    assert_eq!(
        unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
        0,
        "setns {name}"
    );
}

pub fn test_kernel(runtime_dir: &std::path::Path) -> meshwg::kernel::Kernel {
    use meshwg::kernel::*;
    Kernel::real(match backend() {
        Backend::Userspace => WgBackend::Userspace {
            wireguard_go: find_program(std::path::Path::new("wireguard-go")).expect("wireguard-go"),
            runtime_dir: runtime_dir.to_path_buf(),
        },
        Backend::Kernel => WgBackend::Kernel,
    })
}

/// Runs a test body with a fresh world, its runtime inside the world's controller host namespace.
pub fn run<F, Fut>(body: F)
where
    F: FnOnce(Harness) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    run_with(INTERVAL, body)
}

/// [`run`] with another reconcile interval (benchmarks use the production default).
pub fn run_with<F, Fut>(interval: Duration, body: F)
where
    F: FnOnce(Harness) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    // Rule counters as fresh as the poll, so metrics tests need not wait 15 s.
    run_observed(
        meshwg::actors::Observer {
            counters: interval,
            ..meshwg::actors::Observer::polling(interval)
        },
        body,
    )
}

/// [`run`] with the change-detection mechanisms chosen (events, poll, full check).
pub fn run_observed<F, Fut>(observer: meshwg::actors::Observer, body: F)
where
    F: FnOnce(Harness) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    run_configured(observer, Default::default(), body)
}

/// [`run`] with other per-org quotas (`MAX_*_PER_ORG`).
pub fn run_with_quotas<F, Fut>(quotas: meshwg::actors::Quotas, body: F)
where
    F: FnOnce(Harness) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let observer = meshwg::actors::Observer {
        counters: INTERVAL,
        ..meshwg::actors::Observer::polling(INTERVAL)
    };
    run_configured(observer, quotas, body)
}

fn run_configured<F, Fut>(
    observer: meshwg::actors::Observer,
    quotas: meshwg::actors::Quotas,
    body: F,
) where
    F: FnOnce(Harness) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let world = World::new();
    let w = world.clone();
    let result = std::thread::spawn(move || {
        enter_netns(&w.host_ns);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = Harness::start(w, observer, quotas).await;
            body(h.clone()).await;
            h.ctl.shutdown().await;
        });
    })
    .join();
    drop(world);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[derive(Clone)]
pub struct Harness {
    pub world: Arc<World>,
    pub ctl: Controller,
    pub pool: Pool,
    pub deps: Deps,
}

impl Harness {
    async fn start(
        world: Arc<World>,
        observer: meshwg::actors::Observer,
        quotas: meshwg::actors::Quotas,
    ) -> Harness {
        let (admin, conn) = tokio_postgres::connect(&admin_database_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        admin
            .execute(
                &format!("CREATE DATABASE {} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0", world.db_name),
                &[],
            )
            .await
            .unwrap();
        let pool = meshwg::db::pool(&Secret::new(database_url(&world.db_name))).unwrap();
        meshwg::db::migrate(&pool).await.unwrap();
        let deps = Deps {
            pool: pool.clone(),
            kernel: test_kernel(&world.runtime_dir),
            cipher: Arc::new(HubKeyCipher::new(&Secret::new(TEST_KEY))),
            prefix: world.kernel_prefix(),
            observer,
            port_range: 51820..=52819,
            telemetry: Arc::new(meshwg::telemetry::Telemetry::default()),
            listen: Some(database_url(&world.db_name).parse().unwrap()),
            board: Default::default(),
            poll: Default::default(),
            events: meshwg::actors::events::EventLog::start(pool.clone()),
            quotas,
        };
        meshwg::telemetry::recorder();
        let ctl = Controller::start(deps.clone()).await.unwrap();
        Harness {
            world,
            ctl,
            pool,
            deps,
        }
    }

    /// A new in-process controller over the same database and kernel (the old one must be gone).
    pub async fn restart_controller(&mut self) {
        self.ctl = Controller::start(self.deps.clone()).await.unwrap();
    }

    pub fn names(&self, org: &Org) -> TenantNames {
        self.deps.prefix.tenant(org.kid).unwrap()
    }

    /// An org made through the API (`id` as the API gives it), as its row.
    pub async fn org_row(&self, id: &str) -> Org {
        meshwg::db::orgs::get(&self.pool, id.parse().unwrap())
            .await
            .unwrap()
            .expect("org row")
    }

    pub async fn tenant(&self, name: &str, cidr: &str) -> Org {
        self.ctl
            .create_tenant(NewTenant {
                name: name.into(),
                cidr: cidr.parse().unwrap(),
                default_action: Verdict::Allow,
            })
            .await
            .expect("create tenant")
    }

    /// Inserts a policy as another process would (SQL) and makes the kernel apply it.
    pub async fn policy(
        &self,
        org: &Org,
        action: &str,
        src: serde_json::Value,
        dst: serde_json::Value,
    ) {
        let conn = self.pool.get().await.unwrap();
        conn.execute(
            "INSERT INTO policies (id, org_id, action, src, dst) VALUES ($1, $2, $3, $4, $5)",
            &[&Uuid::new_v4(), &org.id, &action, &src, &dst],
        )
        .await
        .unwrap();
        self.ctl.sync(org.id).await.expect("policy applied");
    }

    /// Adds a machine with a server-made key; returns it with its wg-quick config.
    pub async fn machine(&self, org: &Org, name: &str, tags: &[&str]) -> (Machine, Secret<String>) {
        let key = PrivateKey::generate();
        let m = self
            .ctl
            .add_machine(
                org.id,
                NewMachine {
                    id: Uuid::new_v4(),
                    name: name.into(),
                    public_key: key.public_key(),
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                },
            )
            .await
            .expect("add machine");
        let config = meshwg::wgconfig::render(&meshwg::wgconfig::MachineConfig {
            machine_name: name,
            address: m.address,
            cidr: org.cidr,
            private_key: Some(&key),
            org_name: &org.name,
            hub_public_key: &org.hub_public_key,
            endpoint: ENDPOINT,
            listen_port: org.listen_port,
        });
        (m, config)
    }

    /// A client "VM" namespace on the bridge that brings `config` up with the real wg-quick.
    pub fn client(&self, n: u8, config: &Secret<String>) -> Client {
        let w = &self.world;
        let netns = format!("{}-c{n}", w.prefix);
        let iface = format!("{}c{n}", w.prefix);
        sh(&["ip", "netns", "add", &netns]);
        let conf = w.tmp.join(format!("{iface}.conf"));
        w.clients
            .lock()
            .unwrap()
            .push((netns.clone(), conf.clone()));
        let host_end = format!("{}h{n}", w.prefix);
        ns(
            &w.host_ns,
            &[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ],
        );
        ns(
            &w.host_ns,
            &["ip", "link", "set", &host_end, "master", "br0", "up"],
        );
        ns(
            &netns,
            &[
                "ip",
                "addr",
                "add",
                &format!("172.30.0.{}/24", n + 1),
                "dev",
                "eth0",
            ],
        );
        ns(&netns, &["ip", "link", "set", "eth0", "up"]);
        ns(&netns, &["ip", "link", "set", "lo", "up"]);
        std::fs::write(&conf, config.expose()).unwrap();
        ns(&netns, &["wg-quick", "up", conf.to_str().unwrap()]);
        Client { netns, iface }
    }

    /// Serves the real API on a socket in the controller host namespace; returns its address.
    pub async fn serve_api(&self, app: Arc<meshwg::http::App>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(meshwg::http::serve(app, listener, std::future::pending()));
        addr
    }

    /// Spawns the real `meshwg serve` in the controller host namespace; returns its pid.
    pub fn spawn_binary(&self, log: &str) -> u32 {
        let w = &self.world;
        let log = std::fs::File::create(w.tmp.join(log)).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &w.host_ns,
            env!("CARGO_BIN_EXE_meshwg"),
            "serve",
        ])
        .env_clear()
        .env("PATH", meshwg::cmd::SAFE_PATH)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        for (k, v) in w.env() {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn meshwg");
        let pid = child.id();
        w.pids.lock().unwrap().push(pid);
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        pid
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.world.tmp.join(name)).unwrap_or_default()
    }
}

pub struct Client {
    pub netns: String,
    pub iface: String,
}

/// Two machines of one org with their client VMs up, talking through the hub.
pub struct Pair {
    pub m1: Machine,
    pub m2: Machine,
    pub vm1: Client,
    pub vm2: Client,
}

impl Pair {
    /// vm2's overlay address, the usual ping target.
    pub fn dst(&self) -> String {
        self.m2.address.to_string()
    }
}

impl Harness {
    /// Machines "one" and "two" (with `tags`), their VMs up with the real wg-quick, a first
    /// ping through the hub, and the controller aware of where both machines are.
    pub async fn pair(&self, org: &Org, tags: [&[&str]; 2]) -> Pair {
        let (m1, c1) = self.machine(org, "one", tags[0]).await;
        let (m2, c2) = self.machine(org, "two", tags[1]).await;
        let vm1 = self.client(1, &c1);
        let vm2 = self.client(2, &c2);
        let dst = m2.address.to_string();
        eventually(Duration::from_secs(20), "first ping", || async {
            vm1.ping(&dst, 1).then_some(())
        })
        .await;
        eventually(Duration::from_secs(5), "endpoints observed", || async {
            let s = self.ctl.status(org.id).await.ok()?;
            (s.peers.len() >= 2 && s.peers.values().all(|p| p.endpoint.is_some())).then_some(())
        })
        .await;
        Pair { m1, m2, vm1, vm2 }
    }
}

impl Client {
    /// `ping` from this client; true if at least one reply came back.
    pub fn ping(&self, dst: &str, count: u32) -> bool {
        ns_out(
            &self.netns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                dst,
            ],
        )
        .status
        .success()
    }
}

/// What serves a tenant's hub: the wireguard-go daemon's pid (userspace) or `wg0`'s ifindex in
/// the tenant namespace (kernel). Unchanged as long as the same device serves the tenant.
pub fn hub_identity(h: &Harness, names: &TenantNames) -> String {
    match backend() {
        Backend::Userspace => format!("daemon pid {}", daemon_pid(h, names)),
        Backend::Kernel => {
            let out = ns(&names.netns, &["ip", "-j", "link", "show", "wg0"]);
            let links: serde_json::Value = serde_json::from_str(&out).unwrap();
            format!("wg0 ifindex {}", links[0]["ifindex"])
        }
    }
}

/// The wireguard-go pid serving a tenant, from its pidfile (userspace backend only).
pub fn daemon_pid(h: &Harness, names: &TenantNames) -> u32 {
    let text =
        std::fs::read_to_string(h.world.runtime_dir.join(format!("{}.pid", names.birth))).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

pub fn netns_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}"))
        .ok()
        .map(|m| m.ino())
}
