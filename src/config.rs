//! Configuration from the environment (`/etc/meshwg.env` under systemd).
//!
//! Parsing takes a lookup function instead of reading `std::env` directly so that unit tests can
//! feed it a map. Errors are one line that names the variable and never contains its value.

use crate::names::KernelPrefix;
use crate::secret::Secret;
use base64::Engine;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// Which WireGuard implementation drives the hubs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Kernel,
    Userspace,
}

/// Everything `meshwg serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret<String>,
    pub encryption_key: Secret<[u8; 32]>,
    pub jwt_secret: Secret<Vec<u8>>,
    pub admin_email: Option<String>,
    pub admin_password: Option<Secret<String>>,
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub public_endpoint: String,
    pub port_range: RangeInclusive<u16>,
    pub backend: BackendChoice,
    pub cookie_secure: bool,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The cheap poll of what emits no kernel event.
    pub reconcile_interval: Duration,
    /// The full check of database and kernel state.
    pub full_check_interval: Duration,
    /// Kernel events and database notifications (off only to diagnose).
    pub kernel_events: bool,
    pub kernel: KernelConfig,
    /// Per-org limits: machines, policies, users.
    pub quotas: (u32, u32, u32),
}

/// Where kernel objects and daemons live; shared by `serve`, `doctor` and the tests.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub prefix: KernelPrefix,
    pub runtime_dir: PathBuf,
    pub wireguard_go: PathBuf,
}

pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `std::env` as a [`Lookup`], treating empty values as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn database_url(env: Lookup) -> Result<Secret<String>, ConfigError> {
    let url = env("DATABASE_URL").ok_or_else(|| {
        err(
            "DATABASE_URL",
            "missing (e.g. postgresql:///meshwg?host=/var/run/postgresql)",
        )
    })?;
    url.parse::<tokio_postgres::Config>()
        .map_err(|_| err("DATABASE_URL", "not a valid PostgreSQL connection string"))?;
    Ok(Secret::new(url))
}

pub fn encryption_key(env: Lookup) -> Result<Secret<[u8; 32]>, ConfigError> {
    const HINT: &str = "generate one with: head -c 32 /dev/urandom | base64";
    let text = Secret::new(
        env("ENCRYPTION_KEY").ok_or_else(|| err("ENCRYPTION_KEY", format!("missing; {HINT}")))?,
    );
    let bytes = Secret::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.expose().trim())
            .map_err(|_| err("ENCRYPTION_KEY", format!("not valid base64; {HINT}")))?,
    );
    let key: [u8; 32] = bytes.expose().as_slice().try_into().map_err(|_| {
        err(
            "ENCRYPTION_KEY",
            format!(
                "must decode to exactly 32 bytes, got {}; {HINT}",
                bytes.expose().len()
            ),
        )
    })?;
    Ok(Secret::new(key))
}

pub fn jwt_secret(env: Lookup) -> Result<Secret<Vec<u8>>, ConfigError> {
    let s = env("JWT_SECRET").ok_or_else(|| {
        err(
            "JWT_SECRET",
            "missing; use at least 32 random bytes, e.g. head -c 48 /dev/urandom | base64",
        )
    })?;
    if s.len() < 32 {
        return Err(err(
            "JWT_SECRET",
            format!("too short ({} bytes); at least 32 are required", s.len()),
        ));
    }
    Ok(Secret::new(s.into_bytes()))
}

pub fn kernel(env: Lookup) -> Result<KernelConfig, ConfigError> {
    let prefix = env("KERNEL_PREFIX").unwrap_or_else(|| "mwg".into());
    let prefix = KernelPrefix::new(&prefix).map_err(|e| err("KERNEL_PREFIX", e.to_string()))?;
    Ok(KernelConfig {
        prefix,
        runtime_dir: env("RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/run/meshwg".into()),
        wireguard_go: env("WIREGUARD_GO")
            .map(PathBuf::from)
            .unwrap_or_else(|| "wireguard-go".into()),
    })
}

pub fn backend(env: Lookup) -> Result<BackendChoice, ConfigError> {
    match env("WG_BACKEND").as_deref().unwrap_or("auto") {
        "auto" => Ok(BackendChoice::Auto),
        "kernel" => Ok(BackendChoice::Kernel),
        "userspace" => Ok(BackendChoice::Userspace),
        _ => Err(err("WG_BACKEND", "must be one of auto, kernel, userspace")),
    }
}

fn socket_addr(env: Lookup, var: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
    env(var)
        .unwrap_or_else(|| default.into())
        .parse()
        .map_err(|_| err(var, "expected ADDRESS:PORT, e.g. 127.0.0.1:8080"))
}

pub fn port_range(env: Lookup) -> Result<RangeInclusive<u16>, ConfigError> {
    const VAR: &str = "WG_PORT_RANGE";
    let text = env(VAR).unwrap_or_else(|| "51820-52819".into());
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| err(VAR, "expected FIRST-LAST, e.g. 51820-52819"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| err(VAR, "ports must be numbers 1-65535"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| err(VAR, "ports must be numbers 1-65535"))?;
    if a == 0 || a > b {
        return Err(err(VAR, "FIRST must be at least 1 and not above LAST"));
    }
    Ok(a..=b)
}

fn trusted_proxies(env: Lookup) -> Result<Vec<std::net::IpAddr>, ConfigError> {
    env("TRUSTED_PROXIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| err("TRUSTED_PROXIES", "expected comma-separated IP addresses"))
        })
        .collect()
}

fn boolean(env: Lookup, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match env(var).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(_) => Err(err(var, "must be true or false")),
    }
}

/// A positive count up to a million.
fn count(env: Lookup, var: &'static str, default: u32) -> Result<u32, ConfigError> {
    match env(var) {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=1_000_000) => Ok(n),
            _ => Err(err(var, "must be a whole number from 1 to 1000000")),
        },
    }
}

/// `2s`, `500ms` or a plain number of seconds.
pub fn duration(
    env: Lookup,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = env(var) else {
        return Ok(default);
    };
    let bad = || err(var, "expected a duration such as 2s or 500ms");
    let (num, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else {
        (text.as_str(), 1000)
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = Duration::from_millis(n.checked_mul(unit_ms).ok_or_else(bad)?);
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(err(var, "must be between 100ms and 3600s"));
    }
    Ok(d)
}

impl Config {
    /// Reads and validates everything; secrets first, so a bad secret fails before anything else.
    pub fn from_env(env: Lookup) -> Result<Config, ConfigError> {
        let encryption_key = encryption_key(env)?;
        let jwt_secret = jwt_secret(env)?;
        let database_url = database_url(env)?;
        let admin_email = env("ADMIN_EMAIL");
        let admin_password = env("ADMIN_PASSWORD").map(Secret::new);
        if admin_email.is_some() != admin_password.is_some() {
            return Err(err(
                "ADMIN_PASSWORD",
                "ADMIN_EMAIL and ADMIN_PASSWORD must be set together",
            ));
        }
        let public_endpoint = env("PUBLIC_ENDPOINT").ok_or_else(|| {
            err(
                "PUBLIC_ENDPOINT",
                "missing; the host name or address machines dial, e.g. vpn.example.com",
            )
        })?;
        if public_endpoint.is_empty()
            || public_endpoint.len() > 253
            || !public_endpoint
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(err("PUBLIC_ENDPOINT", "must be a host name or IP address"));
        }
        Ok(Config {
            database_url,
            encryption_key,
            jwt_secret,
            admin_email,
            admin_password,
            listen_addr: socket_addr(env, "LISTEN_ADDR", "127.0.0.1:8080")?,
            metrics_addr: socket_addr(env, "METRICS_ADDR", "127.0.0.1:9587")?,
            public_endpoint,
            port_range: port_range(env)?,
            backend: backend(env)?,
            cookie_secure: boolean(env, "COOKIE_SECURE", true)?,
            trusted_proxies: trusted_proxies(env)?,
            reconcile_interval: duration(env, "RECONCILE_INTERVAL", Duration::from_millis(1500))?,
            full_check_interval: duration(env, "FULL_CHECK_INTERVAL", Duration::from_secs(60))?,
            kernel_events: boolean(env, "KERNEL_EVENTS", true)?,
            kernel: kernel(env)?,
            quotas: (
                count(env, "MAX_MACHINES_PER_ORG", 5000)?,
                count(env, "MAX_POLICIES_PER_ORG", 5000)?,
                count(env, "MAX_USERS_PER_ORG", 500)?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("DATABASE_URL", "postgresql:///meshwg?host=/tmp".to_string()),
            ("ENCRYPTION_KEY", KEY.to_string()),
            ("JWT_SECRET", "x".repeat(32)),
            ("PUBLIC_ENDPOINT", "vpn.example.com".to_string()),
        ])
    }

    fn load(map: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_env(&|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = load(&base()).unwrap();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9587");
        assert_eq!(c.port_range, 51820..=52819);
        assert_eq!(c.backend, BackendChoice::Auto);
        assert!(c.cookie_secure);
        assert_eq!(c.reconcile_interval, Duration::from_millis(1500));
        assert_eq!(c.full_check_interval, Duration::from_secs(60));
        assert!(c.kernel_events);
        assert_eq!(c.kernel.prefix.as_str(), "mwg");
        assert_eq!(c.encryption_key.expose()[31], 31);
    }

    #[test]
    fn encryption_key_failures_name_the_variable_and_hide_the_value() {
        for (value, expect) in [
            (None, "missing"),
            (Some("!!!not base64!!!".to_string()), "not valid base64"),
            (Some("c2hvcnQ=".to_string()), "exactly 32 bytes, got 5"),
            (Some(format!("{KEY}{KEY}")), "not valid base64"),
        ] {
            let mut m = base();
            match &value {
                Some(v) => m.insert("ENCRYPTION_KEY", v.clone()),
                None => m.remove("ENCRYPTION_KEY"),
            };
            let e = load(&m).unwrap_err();
            assert_eq!(e.var, "ENCRYPTION_KEY");
            let line = e.to_string();
            assert!(line.starts_with("ENCRYPTION_KEY: "), "{line}");
            assert!(line.contains(expect), "{line}");
            assert!(!line.contains('\n'));
            if let Some(v) = value {
                assert!(!line.contains(&v), "value leaked: {line}");
            }
        }
    }

    #[test]
    fn other_required_variables() {
        let mut m = base();
        m.insert("JWT_SECRET", "short".into());
        assert_eq!(load(&m).unwrap_err().var, "JWT_SECRET");
        let mut m = base();
        m.remove("JWT_SECRET");
        assert_eq!(load(&m).unwrap_err().var, "JWT_SECRET");
        let mut m = base();
        m.remove("DATABASE_URL");
        assert_eq!(load(&m).unwrap_err().var, "DATABASE_URL");
        let mut m = base();
        m.remove("PUBLIC_ENDPOINT");
        assert_eq!(load(&m).unwrap_err().var, "PUBLIC_ENDPOINT");
        let mut m = base();
        m.insert("PUBLIC_ENDPOINT", "a b".into());
        assert_eq!(load(&m).unwrap_err().var, "PUBLIC_ENDPOINT");
        let mut m = base();
        m.insert("ADMIN_EMAIL", "a@b.c".into());
        assert_eq!(load(&m).unwrap_err().var, "ADMIN_PASSWORD");
    }

    #[test]
    fn malformed_optional_variables() {
        for (var, value) in [
            ("WG_PORT_RANGE", "9000"),
            ("WG_PORT_RANGE", "9000-8000"),
            ("WG_PORT_RANGE", "0-10"),
            ("WG_PORT_RANGE", "1-70000"),
            ("WG_BACKEND", "ebpf"),
            ("COOKIE_SECURE", "maybe"),
            ("LISTEN_ADDR", "localhost"),
            ("RECONCILE_INTERVAL", "fast"),
            ("RECONCILE_INTERVAL", "10ms"),
            ("KERNEL_PREFIX", "mwg-1"),
            ("TRUSTED_PROXIES", "127.0.0.1,caddy"),
        ] {
            let mut m = base();
            m.insert(var, value.into());
            assert_eq!(load(&m).unwrap_err().var, var, "{var}={value}");
        }
        let mut m = base();
        m.insert("RECONCILE_INTERVAL", "500ms".into());
        m.insert("WG_PORT_RANGE", "40000-40010".into());
        let c = load(&m).unwrap();
        assert_eq!(c.reconcile_interval, Duration::from_millis(500));
        assert_eq!(c.port_range, 40000..=40010);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = load(&base()).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(KEY));
        assert!(!dbg.contains(&"x".repeat(32)));
        assert!(!dbg.contains("postgresql:///meshwg"));
    }
}
