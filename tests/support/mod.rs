//! Helpers of the hardening tests that the shared harness does not have: a private PostgreSQL
//! cluster that a test may stop and start (a real outage, not a simulated one), and moving a
//! harness's controller onto it.

#![allow(dead_code)]

use crate::common::{Harness, sh, sh_out};
use meshwg::secret::Secret;
use std::path::PathBuf;

/// A PostgreSQL cluster of one test, on a Unix socket in its own directory; removed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    bins.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    bins.pop().expect("an initdb under /usr/lib/postgresql")
}

impl Cluster {
    /// initdb (UTF8, C locale, trust on the socket only) and start.
    pub fn start_new(prefix: &str) -> Cluster {
        let dir = PathBuf::from(format!("/tmp/meshwg-pg-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        sh(&["chown", "postgres:", dir.to_str().unwrap()]);
        let c = Cluster { dir, bin: pg_bin() };
        c.pg(&[
            "initdb",
            "-D",
            &c.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        c.start();
        c
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg(&self, args: &[&str]) -> String {
        let prog = self.bin.join(args[0]).display().to_string();
        let mut argv = vec!["runuser", "-u", "postgres", "--", &prog];
        argv.extend_from_slice(&args[1..]);
        sh(&argv)
    }

    /// Starts the cluster and waits until it accepts connections.
    pub fn start(&self) {
        let opts = format!(
            "-k {} -c listen_addresses= -c fsync=off -c max_connections=100",
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-o",
            &opts,
            "start",
        ]);
    }

    /// Stops it the hard way: every backend dies at once, as in a crash or a cut cable.
    pub fn stop(&self) {
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }

    pub fn url(&self, db: &str) -> String {
        format!("host={} user=postgres dbname={db}", self.dir.display())
    }

    /// A `psql` query against `db`; its output, unaligned and tuples only.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let dir = self.dir.display().to_string();
        sh(&[
            "runuser", "-u", "postgres", "--", "psql", "-h", &dir, "-d", db, "-XAtqc", sql,
        ])
        .trim()
        .to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let prog = self.bin.join("pg_ctl").display().to_string();
        let _ = sh_out(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            &prog,
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops the harness's controller and starts a new one on a fresh database `meshwg` in `pg`
/// (same kernel prefix and runtime directory, so the world's guard still cleans up).
pub async fn use_cluster(h: &mut Harness, pg: &Cluster) {
    h.ctl.shutdown().await;
    pg.psql(
        "postgres",
        "CREATE DATABASE meshwg ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let pool = meshwg::db::pool(&Secret::new(pg.url("meshwg"))).unwrap();
    meshwg::db::migrate(&pool).await.unwrap();
    h.pool = pool.clone();
    h.deps.pool = pool;
    h.restart_controller().await;
}

/// Runs the real `meshwg` binary with `args` against `database_url`, `stdin` as its input.
pub fn meshwg(database_url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshwg"))
        .args(args)
        .env_clear()
        .env("PATH", meshwg::cmd::SAFE_PATH)
        .env("DATABASE_URL", database_url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn meshwg");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
