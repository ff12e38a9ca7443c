//! How many tenants this host can carry as configured: descriptors, tasks, listen ports and
//! PostgreSQL connections, each against what a tenant needs. Used by `meshwg doctor` and logged
//! at start, so an operator learns of a limit before the 1,000th tenant hits it.

/// Descriptors one tenant holds: namespace, three request sockets, three sysctl files, two
/// event sockets, a pidfd and a UAPI connection (userspace), with room to spare.
pub const FDS_PER_TENANT: u64 = 16;
/// Threads one wireguard-go daemon runs (they count against the unit's `TasksMax`).
pub const TASKS_PER_DAEMON: u64 = 12;
/// Descriptors and tasks the controller needs besides its tenants.
const BASE: u64 = 256;
/// Connections the controller may hold: the pool and the `LISTEN` connection.
pub const DB_CONNECTIONS: u64 = crate::db::POOL_SIZE as u64 + 1;

/// One finding: a line for the operator, and whether it is a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

/// The soft and hard `RLIMIT_NOFILE` of this process.
pub fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

/// Raises the soft descriptor limit to the hard one (the usual default is a soft 1024).
pub fn raise_nofile() -> u64 {
    let (soft, hard) = nofile();
    if soft < hard {
        let r = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit with a valid limit not above the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
            return hard;
        }
    }
    soft
}

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";
/// inotify instances per user the host should allow: every wireguard-go daemon takes one (it
/// watches its own UAPI socket), and the kernel's default of 128 stops the 128th tenant.
pub const INOTIFY_WANTED: u64 = 8192;

/// The host's `fs.inotify.max_user_instances`.
pub fn inotify_instances() -> Option<u64> {
    std::fs::read_to_string(INOTIFY_INSTANCES)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises `fs.inotify.max_user_instances` to [`INOTIFY_WANTED`] if it is lower; returns the
/// value in force afterwards.
pub fn raise_inotify_instances() -> Option<u64> {
    let now = inotify_instances()?;
    if now >= INOTIFY_WANTED {
        return Some(now);
    }
    match std::fs::write(INOTIFY_INSTANCES, format!("{INOTIFY_WANTED}\n")) {
        Ok(()) => Some(INOTIFY_WANTED),
        Err(_) => Some(now),
    }
}

/// The `pids.max` of this process's cgroup (`None`: unlimited or unknown).
pub fn tasks_max() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/pids.max")).ok()?;
    max.trim().parse().ok()
}

/// How many tenants a descriptor limit allows.
pub fn tenants_for_nofile(nofile: u64) -> u64 {
    tenants_for(nofile, FDS_PER_TENANT)
}

/// How many tenants a limit allows.
fn tenants_for(limit: u64, per: u64) -> u64 {
    limit.saturating_sub(BASE) / per
}

/// The host's and process's limits that bound the tenant count.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub nofile: u64,
    pub tasks: Option<u64>,
    pub inotify: Option<u64>,
}

impl Limits {
    /// As this process sees them (descriptors at the hard limit, which `serve` raises to).
    pub fn here() -> Self {
        Limits {
            nofile: nofile().1,
            tasks: tasks_max(),
            inotify: inotify_instances(),
        }
    }
}

/// Judges the limits for `want` tenants (present, or the port range's size, whichever is more).
pub fn judge(
    want: u64,
    limits: Limits,
    userspace: bool,
    ports: u64,
    db_free: Option<u64>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let fds = tenants_for(limits.nofile, FDS_PER_TENANT);
    out.push(Finding {
        ok: fds >= want,
        text: format!(
            "open files limit {}: enough for {fds} tenants (raise LimitNOFILE; the unit sets 65536)",
            limits.nofile
        ),
    });
    if userspace {
        match limits.tasks {
            Some(t) => {
                let n = tenants_for(t, TASKS_PER_DAEMON);
                out.push(Finding {
                    ok: n >= want,
                    text: format!(
                        "tasks limit {t}: enough for {n} wireguard-go daemons (raise TasksMax; the unit sets infinity)"
                    ),
                });
            }
            None => out.push(Finding {
                ok: true,
                text: "tasks limit: none".into(),
            }),
        }
        if let Some(n) = limits.inotify {
            out.push(Finding {
                ok: n > want,
                text: format!(
                    "fs.inotify.max_user_instances {n}: enough for {} wireguard-go daemons (serve raises it to {INOTIFY_WANTED})",
                    n.saturating_sub(1)
                ),
            });
        }
    }
    out.push(Finding {
        ok: ports >= want,
        text: format!("WG_PORT_RANGE: {ports} ports, one per tenant"),
    });
    if let Some(free) = db_free {
        out.push(Finding {
            ok: free >= DB_CONNECTIONS,
            text: format!(
                "PostgreSQL: {free} connections free, the controller uses up to {DB_CONNECTIONS}"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_judged_against_what_tenants_need() {
        let stock = Limits {
            nofile: 1024,
            tasks: Some(4915),
            inotify: Some(128),
        };
        let f = judge(1000, stock, true, 1000, Some(80));
        assert!(
            !f[0].ok,
            "1024 descriptors do not carry 1,000 tenants: {f:?}"
        );
        assert!(
            !f[1].ok,
            "systemd's default TasksMax does not carry 1,000 daemons"
        );
        assert!(!f[2].ok, "128 inotify instances stop the 128th daemon");
        assert!(f[3].ok && f[4].ok);
        let tuned = Limits {
            nofile: 65536,
            tasks: None,
            inotify: Some(8192),
        };
        let f = judge(1000, tuned, true, 500, Some(5));
        assert!(f[0].ok && f[1].ok && f[2].ok);
        assert!(!f[3].ok, "500 ports for 1,000 tenants");
        assert!(!f[4].ok, "too few free connections");
        // The kernel backend runs no daemons: no task or inotify limit to judge.
        assert_eq!(judge(10, stock, false, 1000, None).len(), 2);
    }
}
