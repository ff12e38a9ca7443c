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
pub const DB_CONNECTIONS: u64 = 17;

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

/// Judges the limits for `want` tenants (present, or the port range's size, whichever is more).
pub fn judge(
    want: u64,
    nofile: u64,
    tasks: Option<u64>,
    userspace: bool,
    ports: u64,
    db_free: Option<u64>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let fds = tenants_for(nofile, FDS_PER_TENANT);
    out.push(Finding {
        ok: fds >= want,
        text: format!(
            "open files limit {nofile}: enough for {fds} tenants (raise LimitNOFILE; the unit sets 65536)"
        ),
    });
    if userspace {
        match tasks {
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
        let f = judge(1000, 1024, Some(4915), true, 1000, Some(80));
        assert!(
            !f[0].ok,
            "1024 descriptors do not carry 1,000 tenants: {f:?}"
        );
        assert!(
            !f[1].ok,
            "systemd's default TasksMax does not carry 1,000 daemons"
        );
        assert!(f[2].ok && f[3].ok);
        let f = judge(1000, 65536, None, true, 500, Some(5));
        assert!(f[0].ok && f[1].ok);
        assert!(!f[2].ok, "500 ports for 1,000 tenants");
        assert!(!f[3].ok, "too few free connections");
        // The kernel backend runs no daemons: no task limit to judge.
        assert_eq!(judge(10, 65536, Some(100), false, 1000, None).len(), 2);
    }
}
