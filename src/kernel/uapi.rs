//! The WireGuard cross-platform userspace API (UAPI) over wireguard-go's Unix socket:
//! `get=1` to read the device, `set=1` to change it. Keys travel as hex.

use super::{DeviceObserved, PeerObserved};
use crate::keys::{PrivateKey, PublicKey};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Where wireguard-go puts its sockets (fixed in wireguard-go).
pub const SOCKET_DIR: &str = "/var/run/wireguard";

const TIMEOUT: Duration = Duration::from_secs(3);
const MAX_RESPONSE: usize = 16 << 20;

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
            Ok(Connection {
                stream,
                pid,
                memo: KeyMemo::default(),
                last: None,
            })
        }
    }
}

impl Connection {
    async fn exchange(&mut self, request: &[u8]) -> Result<Secret<String>, UapiError> {
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
        let fresh = !matches!(&self.last, Some((t, _)) if t.expose() == text.expose());
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

    /// The device, or `None` when it equals `same` (then without a copy).
    pub async fn get_unless(
        &mut self,
        same: &DeviceObserved,
    ) -> Result<Option<DeviceObserved>, UapiError> {
        let dev = self.read().await?;
        Ok((dev != same).then(|| dev.clone()))
    }

    /// Sends a `set=1` body (lines without the leading `set=1` and trailing blank line).
    pub async fn set(&mut self, body: &Secret<String>) -> Result<(), UapiError> {
        let request = Secret::new(format!("set=1\n{}\n", body.expose()).into_bytes());
        let answer = self.exchange(request.expose()).await?;
        match errno(answer.expose())? {
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
