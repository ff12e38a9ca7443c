//! The binary refuses to start on bad configuration: one line naming the variable, exit code 2,
//! no secret echoed, nothing touched (no runtime directory, no kernel object).

mod common;

use common::{Backend, backend, sh};
use std::process::Command;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn serve(env: &[(&str, &str)]) -> (i32, String, bool) {
    let dir = std::env::temp_dir().join(format!("meshwg-cli-{}", uuid::Uuid::new_v4()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshwg"));
    cmd.arg("serve")
        .env_clear()
        .env("RUNTIME_DIR", &dir)
        .env("KERNEL_PREFIX", "clizz");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let touched = dir.exists();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        touched,
    )
}

fn good() -> Vec<(&'static str, &'static str)> {
    vec![
        ("DATABASE_URL", "host=/nonexistent user=x dbname=y"),
        ("ENCRYPTION_KEY", KEY),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef-jwt"),
        ("PUBLIC_ENDPOINT", "vpn.example.com"),
    ]
}

#[test]
fn refuses_bad_secrets_with_one_line() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("ENCRYPTION_KEY", None, "ENCRYPTION_KEY: missing"),
        (
            "ENCRYPTION_KEY",
            Some("c2hvcnQ="),
            "ENCRYPTION_KEY: must decode to exactly 32 bytes",
        ),
        (
            "ENCRYPTION_KEY",
            Some("not*base64*at*all*not*base64*at*all*xxxxxxx="),
            "ENCRYPTION_KEY: not valid base64",
        ),
        (
            "JWT_SECRET",
            Some("too-short-secret"),
            "JWT_SECRET: too short",
        ),
        ("JWT_SECRET", None, "JWT_SECRET: missing"),
        ("DATABASE_URL", None, "DATABASE_URL: missing"),
        ("WG_PORT_RANGE", Some("9-1"), "WG_PORT_RANGE:"),
    ];
    for (var, value, expect) in cases {
        let mut env = good();
        env.retain(|(k, _)| k != var);
        if let Some(v) = value {
            env.push((var, v));
        }
        let (code, stderr, touched) = serve(&env);
        assert_eq!(code, 2, "{var}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(expect), "{stderr}");
        if let Some(v) = value {
            assert!(!stderr.contains(v), "value echoed: {stderr}");
        }
        assert!(!touched, "runtime directory created before refusing");
    }
}

#[test]
fn doctor_reports_backend_choice() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshwg"))
        .arg("doctor")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KERNEL_PREFIX", "clidr")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for label in [
        "kernel WireGuard:",
        "wireguard-go:",
        "iptables:",
        "ip_forward (host):",
        "PostgreSQL:",
        "picks:",
    ] {
        assert!(text.contains(label), "{label} missing in:\n{text}");
    }
    // The probe decides honestly, says why, and leaves no probe link behind.
    let want = match backend() {
        Backend::Kernel => "picks: kernel (the kernel created and removed a probe WireGuard link)",
        Backend::Userspace => "picks: userspace (kernel WireGuard unusable: ",
    };
    assert!(text.contains(want), "{want:?} missing in:\n{text}");
    let links = sh(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("clidrprobe"), "probe link left: {links}");
}
