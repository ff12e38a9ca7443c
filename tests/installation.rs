//! Start-up orphan removal does not trust a wrong database (root): a second controller with the
//! same prefix on an empty database refuses to start and leaves the first one's tenants running.

mod common;

use common::*;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// `meshwg serve` in the test's controller host namespace, entered with `nsenter --net` as in
/// production (no private mount namespace: what it removes, it removes for the host), with the
/// test's environment changed by `env`.
fn serve(h: &Harness, env: &[(&str, String)], log: &str) -> Child {
    let w = &h.world;
    let log = std::fs::File::create(w.tmp.join(log)).unwrap();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", w.host_ns))
        .arg(env!("CARGO_BIN_EXE_meshwg"))
        .arg("serve")
        .env_clear()
        .env("PATH", meshwg::cmd::SAFE_PATH)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in w.env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn meshwg");
    w.pids.lock().unwrap().push(child.id());
    child
}

/// Waits until the controller exits (`Some(status)`) or says it runs (`None`).
async fn outcome(h: &Harness, child: &mut Child, log: &str) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if h.log(log).contains("controller running") {
            return None;
        }
        assert!(Instant::now() < deadline, "no outcome: {}", h.log(log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[test]
fn installation_second_controller_on_an_empty_database_leaves_the_first_ones_tenants() {
    run(|h| async move {
        let org = h.tenant("First", "10.100.0.0/16").await;
        let pair = h.pair(&org, [&[], &[]]).await;
        let names = h.names(&org);
        let inode = netns_inode(&names.netns);
        let hub = hub_identity(&h, &names);
        let untouched = |why: &str| {
            assert_eq!(
                netns_inode(&names.netns),
                inode,
                "{why}: namespace replaced or gone"
            );
            assert_eq!(hub_identity(&h, &names), hub, "{why}: hub replaced");
            assert!(pair.vm1.ping(&pair.dst(), 2), "{why}: overlay broken");
        };
        let empty = format!("{}_empty", h.world.db_name);
        admin()
            .await
            .execute(
                &format!("CREATE DATABASE {empty} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"),
                &[],
            )
            .await
            .unwrap();
        let wrong_db = ("DATABASE_URL", database_url(&empty));

        // 1. Nothing marks the objects yet (the first controller runs in-process): the empty
        //    database never issued their ids, so it may not judge them orphans.
        let other_dir = (
            "RUNTIME_DIR",
            h.world.tmp.join("b-run").display().to_string(),
        );
        let mut b = serve(&h, &[wrong_db.clone(), other_dir], "b1.log");
        let status = outcome(&h, &mut b, "b1.log").await;
        untouched("a controller on an empty database started");
        let log = h.log("b1.log");
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
        assert!(log.contains("were not made by this database"), "{log}");
        assert!(log.contains("--remove-unowned"), "{log}");

        // 2. The first controller as the real binary binds the prefix to its installation.
        h.ctl.shutdown().await;
        let mut a = serve(&h, &[], "a.log");
        assert_eq!(
            outcome(&h, &mut a, "a.log").await,
            None,
            "{}",
            h.log("a.log")
        );
        let marker = h
            .world
            .runtime_dir
            .join(format!("{}.installation", h.world.prefix));
        let id = std::fs::read_to_string(&marker).expect("marker written");
        // A second controller on the empty database, same runtime directory: refused by name.
        let mut b = serve(&h, &[wrong_db], "b2.log");
        let status = outcome(&h, &mut b, "b2.log").await;
        untouched("a second controller started beside the first");
        let log = h.log("b2.log");
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
        assert!(
            log.contains(&format!("belong to installation {}", id.trim())),
            "{log}"
        );
        assert!(
            a.try_wait().unwrap().is_none(),
            "the first controller still runs"
        );

        let _ = a.kill();
        let _ = a.wait();
        admin()
            .await
            .execute(&format!("DROP DATABASE {empty} WITH (FORCE)"), &[])
            .await
            .unwrap();
    });
}
