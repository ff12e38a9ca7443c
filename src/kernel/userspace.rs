//! The userspace backend: one wireguard-go daemon per tenant, started by us in the controller
//! namespace, detached (own session, stdio to a log file) so that a controller restart or
//! `kill -9` leaves it running, and re-adopted on start through its UAPI socket.
//!
//! One UAPI connection per tenant stays open and serves every read and write. A daemon that is
//! slow to answer is not replaced; only a refused socket, a dead pid or a run of failed reads
//! makes it stale. A quiet daemon (nobody sent it a request since we last read it: its
//! `/proc/<pid>/io` says so, see `uapi`) is not asked by the cheap poll, except every 15 s for
//! its numbers; so a stopped daemon is found slow once it is next asked.
//!
//! A daemon is identified by its pid *and* its command line (`<WIREGUARD_GO> -f <birth>`, the
//! program compared by file name), read from `/proc`, so a recycled pid is never killed. Its pid is kept in `<runtime>/<birth>.pid`
//! so a daemon whose socket was removed by hand is still found (and never doubled).

use super::uapi::{self, UapiError};
use super::{
    DeviceObserved, DeviceState, HUB_KEEPALIVE, KResult, KernelError, PeerSpec, WireGuard,
};
use crate::cmd::SAFE_PATH;
use crate::keys::{PrivateKey, PublicKey};
use crate::names::{KernelPrefix, TenantNames};
use crate::secret::Secret;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_DEADLINE: Duration = Duration::from_secs(5);
/// The daemons' niceness: with the CPU contended (a thousand daemons' timers, one tenant's
/// traffic), the controller — which enforces every tenant's policy — and the commands it runs
/// come first. An idle CPU serves the daemons as if nothing was set.
pub const DAEMON_NICE: libc::c_int = 10;
/// Go's scheduler threads per daemon (see `start`): one tenant's hub encrypts on one core.
const DAEMON_GOMAXPROCS: &str = "1";
const STOP_DEADLINE: Duration = Duration::from_secs(3);
/// A live daemon that failed to answer this many reads in a row is taken for hung and replaced;
/// fewer failures are a slow daemon, which is left alone.
const HUNG_AFTER: u32 = 3;

/// One open UAPI connection per tenant, reused for every read and write.
type Conn = Arc<tokio::sync::Mutex<Option<uapi::Connection>>>;

pub struct Userspace {
    wireguard_go: PathBuf,
    runtime_dir: PathBuf,
    conns: Mutex<HashMap<String, Conn>>,
    /// Consecutive failed reads of a live daemon, per birth name.
    failures: Mutex<HashMap<String, u32>>,
}

impl Userspace {
    pub fn new(wireguard_go: PathBuf, runtime_dir: PathBuf) -> Self {
        Self {
            wireguard_go,
            runtime_dir,
            conns: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn conn(&self, birth: &str) -> Conn {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        match conns.get(birth) {
            Some(c) => c.clone(),
            None => conns.entry(birth.to_string()).or_default().clone(),
        }
    }

    fn forget_conn(&self, birth: &str) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(birth);
    }

    /// Counts a failed read of a live daemon; returns how many in a row.
    fn failed(&self, birth: &str) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(birth.to_string()).or_default();
        *n += 1;
        *n
    }

    fn answered(&self, birth: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(birth);
    }

    /// Runs one UAPI exchange on the tenant's open connection (connecting if there is none).
    /// A reused connection that fails is dropped and the exchange retried once on a fresh one,
    /// since the daemon may have closed it; a fresh connection's failure is the answer.
    async fn exchange(&self, birth: &str, op: Op<'_>) -> Result<Option<DeviceObserved>, UapiError> {
        let conn = self.conn(birth);
        let mut slot = conn.lock().await;
        let reused = slot.is_some();
        if !reused {
            *slot = Some(uapi::connect(&uapi::socket_path(birth)).await?);
        }
        let result = op.run(slot.as_mut().expect("connected above")).await;
        match result {
            Ok(v) => Ok(v),
            // The daemon said no: the connection itself is fine.
            Err(UapiError::Errno(n)) => Err(UapiError::Errno(n)),
            Err(_) if reused => {
                *slot = Some(uapi::connect(&uapi::socket_path(birth)).await?);
                let again = op.run(slot.as_mut().expect("connected above")).await;
                if again.is_err() {
                    *slot = None;
                }
                again
            }
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }

    /// Reads the device (`None`: it equals `same`), judging a failure: a missing socket, a
    /// refusing one, or a slow or dead daemon.
    async fn read(
        &self,
        names: &TenantNames,
        same: Option<&DeviceObserved>,
    ) -> KResult<Option<DeviceState>> {
        let birth = &names.birth;
        match self.exchange(birth, Op::Get(same)).await {
            Ok(dev) => {
                self.answered(birth);
                Ok(dev.map(DeviceState::Up))
            }
            Err(UapiError::Missing) => {
                self.answered(birth);
                if self.daemons(birth).await.is_empty() {
                    Ok(Some(DeviceState::Absent))
                } else {
                    Ok(Some(DeviceState::Stale("daemon without socket".into())))
                }
            }
            // Nobody listens: the daemon is gone and left its socket behind.
            Err(e @ UapiError::Refused) => {
                self.answered(birth);
                Ok(Some(DeviceState::Stale(e.to_string())))
            }
            // A timeout or an I/O error from a daemon that is alive is a slow daemon, not a
            // dead one: replacing it would drop every machine of the tenant. Only a run of
            // failures makes it hung.
            Err(e) => {
                if self.daemons(birth).await.is_empty() {
                    self.answered(birth);
                    return Ok(Some(DeviceState::Stale(format!("daemon gone: {e}"))));
                }
                let n = self.failed(birth);
                if n >= HUNG_AFTER {
                    self.answered(birth);
                    Ok(Some(DeviceState::Stale(format!(
                        "daemon did not answer {n} times in a row: {e}"
                    ))))
                } else {
                    Err(KernelError::Device {
                        device: birth.clone(),
                        detail: format!("daemon slow to answer ({n} of {HUNG_AFTER}): {e}"),
                    })
                }
            }
        }
    }

    /// The daemon as `/proc/<pid>/cmdline` names it, whatever path it was started by.
    fn program_name(&self) -> &[u8] {
        self.wireguard_go
            .file_name()
            .map_or(b"wireguard-go", |n| n.as_encoded_bytes())
    }

    /// Started as the configured program, or as the stock `wireguard-go` (daemons started
    /// before `WIREGUARD_GO` was changed are still recognised, so never doubled).
    fn is_ours(&self, pid: u32, birth: &str) -> bool {
        is_daemon(pid, self.program_name(), birth) || is_daemon(pid, b"wireguard-go", birth)
    }

    async fn stop_process(&self, pid: u32, birth: &str) {
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_DEADLINE;
        while self.is_ours(pid, birth) {
            if Instant::now() > deadline {
                signal(pid, libc::SIGKILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pidfile(&self, birth: &str) -> PathBuf {
        self.runtime_dir.join(format!("{birth}.pid"))
    }

    fn logfile(&self, birth: &str) -> PathBuf {
        self.runtime_dir.join(format!("{birth}.log"))
    }

    /// Every live daemon of this tenant: the pidfile's and the socket's listener.
    async fn daemons(&self, birth: &str) -> BTreeSet<u32> {
        let mut pids = BTreeSet::new();
        if let Some(pid) = read_pidfile(&self.pidfile(birth))
            && self.is_ours(pid, birth)
        {
            pids.insert(pid);
        }
        if let Ok(conn) = uapi::connect(&uapi::socket_path(birth)).await
            && let Some(pid) = conn.pid.filter(|&p| self.is_ours(p, birth))
        {
            pids.insert(pid);
        }
        pids
    }
}

/// One UAPI operation: read the device, or apply a `set=1` body.
#[derive(Clone, Copy)]
enum Op<'a> {
    /// Read the device; with a device to compare, `None` when it is that one.
    Get(Option<&'a DeviceObserved>),
    Set(&'a Secret<String>),
}

impl Op<'_> {
    async fn run(&self, c: &mut uapi::Connection) -> Result<Option<DeviceObserved>, UapiError> {
        match self {
            Op::Get(None) => c.get().await.map(Some),
            Op::Get(Some(same)) => c.get_unless(same).await,
            Op::Set(body) => c.set(body).await.map(|()| None),
        }
    }
}

fn device_error(names: &TenantNames, e: UapiError) -> KernelError {
    KernelError::Device {
        device: names.birth.clone(),
        detail: e.to_string(),
    }
}

/// `(pid, start time)` from a pidfile; the start time guards against pid reuse.
fn read_pidfile(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    (process_start_time(pid) == Some(start)).then_some(pid)
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); a zombie is as good as gone.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

/// True if `pid` is alive and is `…/<program> -f <birth>`.
fn is_daemon(pid: u32, program: &[u8], birth: &str) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
    process_start_time(pid).is_some()
        && args.len() == 3
        && args[0].rsplit(|&b| b == b'/').next() == Some(program)
        && args[1] == b"-f"
        && args[2] == birth.as_bytes()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we verified to be our daemon.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn remove_if_exists(path: &Path) -> KResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::io(path.display().to_string(), e)),
    }
}

#[async_trait::async_trait]
impl WireGuard for Userspace {
    fn backend(&self) -> &'static str {
        "userspace"
    }

    async fn observe(&self, names: &TenantNames) -> KResult<DeviceState> {
        match self.read(names, None).await? {
            Some(state) => Ok(state),
            None => Err(device_error(
                names,
                UapiError::Malformed("no device".into()),
            )),
        }
    }

    async fn observe_unless(
        &self,
        names: &TenantNames,
        same: &DeviceObserved,
    ) -> KResult<Option<DeviceState>> {
        self.read(names, Some(same)).await
    }

    async fn create(&self, names: &TenantNames) -> KResult<()> {
        let birth = &names.birth;
        if !self.daemons(birth).await.is_empty() {
            // Never two daemons for one tenant: whatever is there must be destroyed first.
            return Err(KernelError::Device {
                device: birth.clone(),
                detail: "a daemon already runs for this tenant".into(),
            });
        }
        remove_if_exists(&uapi::socket_path(birth))?;
        for dir in [self.runtime_dir.as_path(), Path::new(uapi::SOCKET_DIR)] {
            std::fs::create_dir_all(dir)
                .map_err(|e| KernelError::io(dir.display().to_string(), e))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logfile(birth))
            .map_err(|e| KernelError::io("daemon log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| KernelError::io("daemon log", e))?;
        tracing::debug!(tenant_kid = names.kid, device = %birth, "starting wireguard-go");
        let mut command = tokio::process::Command::new(&self.wireguard_go);
        command
            .args(["-f", birth])
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("WG_PROCESS_FOREGROUND", "1")
            .env("LOG_LEVEL", "error")
            // One scheduler thread per daemon: a thousand Go runtimes each spinning a thread per
            // core to look for work keep both cores' run queues long on an idle host.
            .env("GOMAXPROCS", DAEMON_GOMAXPROCS)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        // SAFETY: setsid(2) and setpriority(2) are async-signal-safe. setsid detaches the
        // daemon from our session so that signals aimed at the controller's process group never
        // reach it; the niceness (inherited by every thread the daemon makes) is best effort.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::setpriority(libc::PRIO_PROCESS, 0, DAEMON_NICE);
                Ok(())
            });
        }
        // Not killed on drop: the daemon outlives us. If it exits while we run, the waiting
        // task reaps it (no thread per daemon).
        let mut child = command
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| KernelError::io(format!("start {}", self.wireguard_go.display()), e))?;
        let pid = child.id().ok_or_else(|| {
            KernelError::io("wireguard-go", std::io::Error::other("exited at once"))
        })?;
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        self.forget_conn(birth);
        self.answered(birth);

        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match uapi::connect(&uapi::socket_path(birth)).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    self.stop_process(pid, birth).await;
                    return Err(device_error(names, e));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let start = process_start_time(pid).unwrap_or_default();
        std::fs::write(self.pidfile(birth), format!("{pid} {start}\n"))
            .map_err(|e| KernelError::io("pidfile", e))?;
        tracing::info!(tenant_kid = names.kid, device = %birth, pid, "wireguard-go started");
        Ok(())
    }

    async fn configure(&self, names: &TenantNames, key: &PrivateKey, port: u16) -> KResult<()> {
        let body = Secret::new(format!(
            "private_key={}\nlisten_port={port}\n",
            key.expose_hex().expose()
        ));
        self.exchange(&names.birth, Op::Set(&body))
            .await
            .map(|_| ())
            .map_err(|e| device_error(names, e))
    }

    async fn set_peers(
        &self,
        names: &TenantNames,
        upsert: &[PeerSpec],
        remove: &[PublicKey],
    ) -> KResult<()> {
        let mut body = String::new();
        for p in upsert {
            let _ = write!(
                body,
                "public_key={}\nreplace_allowed_ips=true\nallowed_ip={}/32\npersistent_keepalive_interval={HUB_KEEPALIVE}\n",
                p.public_key.to_hex(),
                p.address
            );
            if let Some(endpoint) = &p.endpoint {
                let _ = writeln!(body, "endpoint={endpoint}");
            }
        }
        for k in remove {
            let _ = write!(body, "public_key={}\nremove=true\n", k.to_hex());
        }
        if body.is_empty() {
            return Ok(());
        }
        let body = Secret::new(body);
        self.exchange(&names.birth, Op::Set(&body))
            .await
            .map(|_| ())
            .map_err(|e| device_error(names, e))
    }

    async fn destroy(&self, names: &TenantNames) -> KResult<()> {
        let birth = &names.birth;
        self.forget_conn(birth);
        self.answered(birth);
        for pid in self.daemons(birth).await {
            tracing::info!(tenant_kid = names.kid, device = %birth, pid, "stopping wireguard-go");
            self.stop_process(pid, birth).await;
        }
        remove_if_exists(&uapi::socket_path(birth))?;
        remove_if_exists(&self.pidfile(birth))?;
        remove_if_exists(&self.logfile(birth))?;
        Ok(())
    }

    async fn list(&self, prefix: &KernelPrefix) -> KResult<BTreeSet<i64>> {
        let mut kids = BTreeSet::new();
        for (dir, suffix) in [
            (Path::new(uapi::SOCKET_DIR), ".sock"),
            (self.runtime_dir.as_path(), ".pid"),
        ] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(kid) = name
                    .strip_suffix(suffix)
                    .and_then(|n| prefix.parse_birth(n))
                {
                    kids.insert(kid);
                }
            }
        }
        Ok(kids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_not_a_daemon() {
        let me = std::process::id();
        assert!(process_start_time(me).is_some());
        assert!(!is_daemon(me, b"wireguard-go", "mwg1"));
        assert!(!is_daemon(u32::MAX - 1, b"wireguard-go", "mwg1"));
    }

    #[test]
    fn a_daemon_is_known_by_program_file_name_and_device() {
        // `tail -f <file>` has the daemon's argv shape; started through a link with a custom
        // name, as an operator's WIREGUARD_GO path might be.
        let dir = std::env::temp_dir().join(format!("mwg-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mwg1"), b"").unwrap();
        let link = dir.join("my-wg-build");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/usr/bin/tail", &link).unwrap();
        let mut child = std::process::Command::new(&link)
            .args(["-f", "mwg1"])
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let pid = child.id();
        // Give the stand-in time to be itself (exec done, /proc updated) on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the stand-in exited early: {status}");
            }
            seen = is_daemon(pid, b"my-wg-build", "mwg1");
            if !seen {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let other_device = is_daemon(pid, b"my-wg-build", "mwg2");
        let other_program = is_daemon(pid, b"wireguard-go", "mwg1");
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            seen,
            "not recognised: cmdline {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        assert!(!other_device);
        assert!(!other_program);
        assert!(!is_daemon(pid, b"my-wg-build", "mwg1"), "gone once reaped");
    }
}
