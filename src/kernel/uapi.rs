//! The WireGuard cross-platform userspace API (UAPI) over wireguard-go's Unix socket:
//! `get=1` to read the device, `set=1` to change it. Keys travel as hex.

use super::{DeviceObserved, PeerObserved};
use crate::keys::{PrivateKey, PublicKey};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Where wireguard-go puts its sockets (fixed in wireguard-go).
pub const SOCKET_DIR: &str = "/var/run/wireguard";

const TIMEOUT: Duration = Duration::from_secs(3);
const MAX_RESPONSE: usize = 16 << 20;
/// A quiet daemon is still asked this often, for the numbers that move without a request
/// (bytes, handshakes, endpoints).
const NUMBERS_EVERY: Duration = Duration::from_secs(15);
/// The fewest bytes of a UAPI request that changes what a reconcile enforces: the shortest,
/// `set=1\nlisten_port=N\n`, has 20 (a key or a peer takes 64 hex digits). A daemon reads
/// less on its own: its Go runtime wakes itself through a pipe, one byte at a time.
const LEAST_CHANGE: u64 = 16;

pub fn socket_path(birth: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{birth}.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    #[error("no socket")]
    Missing,
    #[error("socket refuses connections (daemon gone)")]
    Refused,
    #[error("daemon did not answer within {0:?}")]
    Timeout(Duration),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("daemon answered errno={0}")]
    Errno(i64),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// An open connection and the pid of the daemon that listens on it.
pub struct Connection {
    stream: UnixStream,
    pub pid: Option<u32>,
    /// The device's private key as last read and its public key, so an unchanged key costs no
    /// scalar multiplication.
    memo: KeyMemo,
    /// The last `get` answer and what it parsed to: an idle device answers the same bytes, which
    /// then need no parsing (the answer holds the private key, hence the wiping wrapper).
    last: Option<(Secret<String>, DeviceObserved)>,
    /// The daemon's `/proc/<pid>/io`, a doorbell: every UAPI request (ours, `wg`'s, anybody's)
    /// reaches the daemon through read(2), which counts its bytes in `rchar`. `None` where it
    /// cannot be read (then every glance asks the daemon).
    io: Option<std::fs::File>,
    /// `rchar` right after our last exchange.
    mark: Option<u64>,
    /// Between the end of the exchange before our last `get` and the end of that `get`, the
    /// daemon read nothing that could change it: `last` is its shape for as long as `rchar`
    /// grows by less than [`LEAST_CHANGE`] past `mark`.
    quiet: bool,
    /// When the daemon was last asked for the device.
    read_at: Instant,
}

/// Derives public keys, remembering the last one.
#[derive(Default)]
pub struct KeyMemo(Option<(Secret<[u8; 32]>, PublicKey)>);

impl KeyMemo {
    fn public(&mut self, private: PrivateKey) -> PublicKey {
        if let Some((k, p)) = &self.0
            && k.expose() == private.expose_bytes()
        {
            return *p;
        }
        let public = private.public_key();
        self.0 = Some((Secret::new(*private.expose_bytes()), public));
        public
    }
}

pub async fn connect(path: &Path) -> Result<Connection, UapiError> {
    match tokio::time::timeout(TIMEOUT, UnixStream::connect(path)).await {
        Err(_) => Err(UapiError::Timeout(TIMEOUT)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(UapiError::Missing),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(UapiError::Refused),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(stream)) => {
            // SO_PEERCRED of a listening socket names the process that called listen().
            let pid = stream
                .peer_cred()
                .ok()
                .and_then(|c| c.pid())
                .map(|p| p as u32);
            let io = pid.and_then(|p| std::fs::File::open(format!("/proc/{p}/io")).ok());
            Ok(Connection {
                stream,
                pid,
                memo: KeyMemo::default(),
                last: None,
                io,
                mark: None,
                quiet: false,
                read_at: Instant::now(),
            })
        }
    }
}

/// The `rchar` line of a `/proc/<pid>/io` text.
fn parse_rchar(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))?
        .trim()
        .parse()
        .ok()
}

/// Two `get` answers that say the same: wireguard-go lists peers in no fixed order (a Go map),
/// so the peer blocks are compared as sets.
fn same_answer(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if a.len() != b.len() {
        return false;
    }
    parts(a).is_some_and(|pa| Some(pa) == parts(b))
}

/// The header, the peer blocks sorted, and the `errno` line of a `get` answer.
fn parts(t: &str) -> Option<(Vec<&str>, &str)> {
    let (body, tail) = t.rsplit_once("\nerrno=")?;
    let mut blocks: Vec<&str> = body.split("\npublic_key=").collect();
    blocks[1..].sort_unstable();
    Some((blocks, tail))
}

impl Connection {
    /// Bytes the daemon has read so far (`None`: unknown).
    fn rchar(&self) -> Option<u64> {
        let mut buf = [0u8; 256];
        let n = self.io.as_ref()?.read_at(&mut buf, 0).ok()?;
        parse_rchar(&buf[..n])
    }

    /// Has nobody asked the daemon to change anything since our last `get`, recently enough?
    fn still_quiet(&self) -> bool {
        self.quiet
            && self.last.is_some()
            && self.read_at.elapsed() < NUMBERS_EVERY
            && self
                .mark
                .zip(self.rchar())
                .is_some_and(|(m, now)| now >= m && now - m < LEAST_CHANGE)
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Secret<String>, UapiError> {
        self.quiet = false;
        let mark = self.mark.take();
        let text = self.exchange_raw(request).await?;
        // The daemon read our request before it answered. Whatever else it read since our
        // previous exchange ended may be a change it applies after this answer: only if that
        // is less than any change can be is the answer taken as the device's shape.
        let after = self.rchar();
        let sent = request.len() as u64;
        self.quiet = mark.zip(after).is_some_and(|(m, a)| {
            a.checked_sub(m + sent)
                .is_some_and(|foreign| foreign < LEAST_CHANGE)
        });
        self.mark = after;
        Ok(text)
    }

    async fn exchange_raw(&mut self, request: &[u8]) -> Result<Secret<String>, UapiError> {
        let work = async {
            self.stream.write_all(request).await?;
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.ends_with(b"\n\n") || buf.len() > MAX_RESPONSE {
                    break;
                }
            }
            chunk.iter_mut().for_each(|b| *b = 0);
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| UapiError::Timeout(TIMEOUT))??;
        String::from_utf8(buf)
            .map(Secret::new)
            .map_err(|_| UapiError::Malformed("not UTF-8".into()))
    }

    /// Reads the device; an idle device answers the bytes it answered last time, which then
    /// need no parsing.
    async fn read(&mut self) -> Result<&DeviceObserved, UapiError> {
        let text = self.exchange(b"get=1\n\n").await?;
        self.read_at = Instant::now();
        let fresh = !matches!(&self.last, Some((t, _)) if same_answer(t.expose(), text.expose()));
        if fresh {
            let mut dev = parse_get_with(text.expose(), &mut self.memo)?;
            dev.pid = self.pid;
            self.last = Some((text, dev));
        }
        match &self.last {
            Some((_, dev)) => Ok(dev),
            None => Err(UapiError::Malformed("no device".into())),
        }
    }

    pub async fn get(&mut self) -> Result<DeviceObserved, UapiError> {
        self.read().await.cloned()
    }

    /// The device, or `None` when it equals `same` (then without a copy). A quiet daemon (see
    /// `io`) is not asked: its device has the shape last read, and its numbers are at most
    /// [`NUMBERS_EVERY`] old.
    pub async fn get_unless(
        &mut self,
        same: &DeviceObserved,
    ) -> Result<Option<DeviceObserved>, UapiError> {
        let dev = match &self.last {
            Some((_, dev)) if self.still_quiet() => dev,
            _ => self.read().await?,
        };
        Ok((dev != same).then(|| dev.clone()))
    }

    /// Sends a `set=1` body (lines without the leading `set=1` and trailing blank line).
    pub async fn set(&mut self, body: &Secret<String>) -> Result<(), UapiError> {
        let request = Secret::new(format!("set=1\n{}\n", body.expose()).into_bytes());
        let answer = self.exchange(request.expose()).await;
        // The device changed: the next `get` must ask.
        self.quiet = false;
        match errno(answer?.expose())? {
            0 => Ok(()),
            n => Err(UapiError::Errno(n)),
        }
    }
}

fn errno(text: &str) -> Result<i64, UapiError> {
    text.lines()
        .find_map(|l| l.strip_prefix("errno="))
        .ok_or_else(|| UapiError::Malformed("no errno line".into()))?
        .parse()
        .map_err(|_| UapiError::Malformed("errno is not a number".into()))
}

/// Parses a `get=1` answer. The private key is turned into its public key at once.
pub fn parse_get(text: &str) -> Result<DeviceObserved, UapiError> {
    parse_get_with(text, &mut KeyMemo::default())
}

/// [`parse_get`], deriving the public key through `memo`.
pub fn parse_get_with(text: &str, memo: &mut KeyMemo) -> Result<DeviceObserved, UapiError> {
    match errno(text)? {
        0 => {}
        n => return Err(UapiError::Errno(n)),
    }
    let bad = |what: &str| UapiError::Malformed(what.to_string());
    let mut dev = DeviceObserved {
        listen_port: 0,
        public_key: None,
        peers: BTreeMap::new(),
        pid: None,
    };
    let mut current: Option<(PublicKey, PeerObserved)> = None;
    let mut handshake_sec = 0i64;
    let finish = |cur: Option<(PublicKey, PeerObserved)>,
                  sec: i64,
                  peers: &mut BTreeMap<PublicKey, PeerObserved>| {
        if let Some((k, mut p)) = cur {
            p.last_handshake = (sec > 0).then_some(sec);
            peers.insert(k, p);
        }
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "private_key" => {
                let private = PrivateKey::from_hex(value).map_err(|_| bad("private_key"))?;
                dev.public_key = Some(memo.public(private));
            }
            "listen_port" => dev.listen_port = value.parse().map_err(|_| bad("listen_port"))?,
            "public_key" => {
                finish(current.take(), handshake_sec, &mut dev.peers);
                handshake_sec = 0;
                let k = PublicKey::from_hex(value).map_err(|_| bad("public_key"))?;
                current = Some((
                    k,
                    PeerObserved {
                        allowed_ips: Default::default(),
                        endpoint: None,
                        last_handshake: None,
                        rx_bytes: 0,
                        tx_bytes: 0,
                    },
                ));
            }
            _ => {
                let Some((_, peer)) = current.as_mut() else {
                    continue;
                };
                match key {
                    "endpoint" => peer.endpoint = Some(value.to_string()),
                    "allowed_ip" => {
                        peer.allowed_ips.insert(value.to_string());
                    }
                    "rx_bytes" => peer.rx_bytes = value.parse().map_err(|_| bad("rx_bytes"))?,
                    "tx_bytes" => peer.tx_bytes = value.parse().map_err(|_| bad("tx_bytes"))?,
                    "last_handshake_time_sec" => {
                        handshake_sec = value.parse().map_err(|_| bad("last_handshake_time_sec"))?
                    }
                    _ => {}
                }
            }
        }
    }
    finish(current, handshake_sec, &mut dev.peers);
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_device_with_peers() {
        let private = PrivateKey::generate();
        let p1 = PrivateKey::generate().public_key();
        let p2 = PrivateKey::generate().public_key();
        let text = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\npreshared_key=0000000000000000000000000000000000000000000000000000000000000000\nprotocol_version=1\nendpoint=192.0.2.7:40000\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=100\nrx_bytes=200\npersistent_keepalive_interval=0\nallowed_ip=10.100.0.2/32\npublic_key={}\nlast_handshake_time_sec=0\nallowed_ip=10.100.0.3/32\nerrno=0\n\n",
            private.expose_hex().expose(),
            p1.to_hex(),
            p2.to_hex()
        );
        let dev = parse_get(&text).unwrap();
        assert_eq!(dev.listen_port, 51820);
        assert_eq!(dev.public_key, Some(private.public_key()));
        assert_eq!(dev.peers.len(), 2);
        let a = &dev.peers[&p1];
        assert_eq!(a.endpoint.as_deref(), Some("192.0.2.7:40000"));
        assert_eq!(a.last_handshake, Some(1_700_000_000));
        assert_eq!((a.rx_bytes, a.tx_bytes), (200, 100));
        assert!(a.allowed_ips.contains("10.100.0.2/32"));
        assert_eq!(dev.peers[&p2].last_handshake, None);
        assert!(!format!("{dev:?}").contains(private.expose_hex().expose().as_str()));
    }

    #[test]
    fn answers_with_peers_in_another_order_are_the_same() {
        let head = "private_key=aa\nlisten_port=1\n";
        let a = "public_key=01\nallowed_ip=10.0.0.2/32";
        let b = "public_key=02\nallowed_ip=10.0.0.3/32";
        let one = format!("{head}{a}\n{b}\nerrno=0\n\n");
        let two = format!("{head}{b}\n{a}\nerrno=0\n\n");
        assert!(same_answer(&one, &two));
        let moved = format!("{head}{b}\n{}\nerrno=0\n\n", a.replace(".2/", ".4/"));
        assert!(!same_answer(&one, &moved));
        assert!(!same_answer(&one, &one.replace("errno=0", "errno=1")));
        assert!(!same_answer(
            &one,
            &one.replace("listen_port=1", "listen_port=2")
        ));
    }

    #[test]
    fn rchar_is_read_from_proc_io() {
        let text = b"rchar: 20984\nwchar: 52\nsyscr: 41\n";
        assert_eq!(parse_rchar(text), Some(20984));
        assert_eq!(parse_rchar(b"wchar: 1\n"), None);
        // This process reads its own counter, and reading (read(2), as a daemon reads a
        // request) moves it.
        let io = std::fs::File::open("/proc/self/io").unwrap();
        let read = || {
            let mut buf = [0u8; 256];
            let n = io.read_at(&mut buf, 0).unwrap();
            parse_rchar(&buf[..n]).unwrap()
        };
        let first = read();
        assert!(read() > first);
    }

    #[test]
    fn errno_and_garbage() {
        assert!(matches!(
            parse_get("errno=98\n\n"),
            Err(UapiError::Errno(98))
        ));
        assert!(matches!(
            parse_get("listen_port=1\n\n"),
            Err(UapiError::Malformed(_))
        ));
        assert!(matches!(
            parse_get("listen_port=x\nerrno=0\n\n"),
            Err(UapiError::Malformed(_))
        ));
    }
}
