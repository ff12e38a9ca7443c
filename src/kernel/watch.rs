//! Kernel events instead of re-reading: per tenant, netlink sockets subscribed inside its
//! namespace to link, address, route and netconf changes and to every nf_tables commit, plus a
//! pidfd of its wireguard-go daemon; controller-wide, inotify on `/run/netns`. Each event only
//! says *what kind* of thing changed (a [`Dirty`] bit); the tenant actor then observes and
//! plans as usual. Message bodies are never parsed beyond their type.

use super::nl::NlError;
use super::ns::{handle_path, prepare_netns_dir};
use crate::cmd::{CmdError, NETNS_DIR};
use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};
use netlink_sys::{Socket, SocketAddr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Kinds of change, as bits.
pub struct Dirty;

impl Dirty {
    pub const LINK: u32 = 1;
    pub const ADDR: u32 = 1 << 1;
    pub const ROUTE: u32 = 1 << 2;
    pub const SYSCTL: u32 = 1 << 3;
    pub const FIREWALL: u32 = 1 << 4;
    pub const DEVICE: u32 = 1 << 5;
    pub const NETNS: u32 = 1 << 6;
    pub const DATABASE: u32 = 1 << 7;
    /// Events were lost (a socket overran): anything may have changed.
    pub const ALL: u32 = u32::MAX;
}

// Legacy multicast group bits for bind(2) and group numbers for NETLINK_ADD_MEMBERSHIP.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTNLGRP_IPV4_NETCONF: u32 = 24;
const RTNLGRP_IPV6_NETCONF: u32 = 25;
const NFNLGRP_NFTABLES: u32 = 7;
/// Room for a burst of notifications (a large ruleset restore echoes one per rule).
const EVENT_BUFFER: libc::c_int = 4 << 20;

/// The dirty bit of one rtnetlink message type.
fn route_kind(msg_type: u16) -> u32 {
    match msg_type {
        16..=19 => Dirty::LINK,
        20..=23 => Dirty::ADDR,
        24..=27 => Dirty::ROUTE,
        80..=82 => Dirty::SYSCTL,
        _ => 0,
    }
}

fn force_rcvbuf(s: &Socket) -> io::Result<()> {
    let size = EVENT_BUFFER;
    // SAFETY: a valid socket and a pointer to an int of the given size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The two event sockets, opened on the calling thread (inside the tenant namespace).
fn open_event_sockets(expect_inode: u64) -> io::Result<(Socket, Socket)> {
    let here = File::open("/proc/thread-self/ns/net")?;
    if here.metadata()?.ino() != expect_inode {
        return Err(io::Error::other("namespace replaced while subscribing"));
    }
    let mut route = Socket::new(NETLINK_ROUTE)?;
    route.bind(&SocketAddr::new(
        0,
        RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV6_ROUTE,
    ))?;
    route.add_membership(RTNLGRP_IPV4_NETCONF)?;
    route.add_membership(RTNLGRP_IPV6_NETCONF)?;
    let mut nft = Socket::new(NETLINK_NETFILTER)?;
    nft.bind_auto()?;
    nft.add_membership(NFNLGRP_NFTABLES)?;
    for s in [&route, &nft] {
        s.set_non_blocking(true)?;
        force_rcvbuf(s)?;
    }
    Ok((route, nft))
}

/// `NFT_MSG_NEWGEN` in the nf_tables subsystem: the end of a commit, with its generation.
const NFT_NEWGEN: u16 = (10 << 8) | 15;
const NFTA_GEN_ID: u16 = 1;

/// The generation a `NEWGEN` notification announces, from the message's first bytes.
fn newgen_id(msg: &[u8]) -> Option<u32> {
    if msg.len() < 20 || u16::from_ne_bytes([msg[4], msg[5]]) != NFT_NEWGEN {
        return None;
    }
    // After the 16-byte header and the 4-byte nfgenmsg: attributes.
    let mut attrs = &msg[20..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFTA_GEN_ID && len >= 8 {
            return Some(u32::from_be_bytes(attrs[4..8].try_into().ok()?));
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

/// Reads every queued datagram; returns the dirty bits they carry (`classify` maps a message
/// type to bits) and the generation of the newest nf_tables commit announced, if any.
fn drain(s: &Socket, classify: fn(u16) -> u32) -> io::Result<(u32, Option<u32>)> {
    let (mut bits, mut newest) = (0, None);
    let mut head = [0u8; 64];
    loop {
        let mut buf = &mut head[..];
        match s.recv(&mut buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
            Ok(n) if n >= 6 => {
                let t = u16::from_ne_bytes([head[4], head[5]]);
                bits |= classify(t);
                if let Some(g) = newgen_id(&head[..n.min(head.len())]) {
                    newest = Some(g);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((bits, newest)),
            // Notifications were dropped: anything may have changed.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => bits |= Dirty::ALL,
            Err(e) => return Err(e),
        }
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) with a pid and no flags; a returned fd is ours to own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a fresh descriptor from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    }
}

/// The event subscription of one tenant; dropping it closes every socket (which must happen
/// before the namespace can go away).
pub struct TenantWatch {
    task: JoinHandle<()>,
    pub inode: u64,
    pub pid: Option<u32>,
}

impl Drop for TenantWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TenantWatch {
    /// Subscribes to the namespace `netns` (which must still be the one with `inode`) and, if
    /// given, to the exit of daemon `pid`; `notify` gets the dirty bits of every batch of events
    /// and, for a batch of nf_tables notifications alone, the newest commit's generation.
    pub async fn start(
        netns: &str,
        inode: u64,
        pid: Option<u32>,
        notify: impl Fn(u32, Option<u32>) + Send + Sync + 'static,
    ) -> Result<Self, NlError> {
        let file = match File::open(handle_path(netns)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CmdError::NoNetns(netns.to_string()).into());
            }
            Err(e) => return Err(e.into()),
        };
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("netns-watch".into())
            .spawn(move || {
                // SAFETY: setns only changes this fresh, private thread's namespace.
                let r = if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                    open_event_sockets(inode)
                } else {
                    Err(io::Error::last_os_error())
                };
                let _ = tx.send(r);
            })?;
        let (route, nft) = rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))?;
        let pidfd = match pid.map(pidfd_open) {
            // SAFETY: the OwnedFd owns its descriptor for as long as the AsyncFd lives.
            Some(Ok(fd)) => Some(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?),
            // Already gone: say so at once.
            Some(Err(_)) => {
                notify(Dirty::DEVICE, None);
                None
            }
            None => None,
        };
        // SAFETY (both): the sockets own their descriptors for as long as the AsyncFd lives.
        let route = unsafe { AsyncFd::register(route) }.map_err(io::Error::from)?;
        let nft = unsafe { AsyncFd::register(nft) }.map_err(io::Error::from)?;
        let task = tokio::spawn(watch_loop(route, nft, pidfd, notify));
        Ok(Self { task, inode, pid })
    }
}

async fn watch_loop(
    route: AsyncFd<Socket>,
    nft: AsyncFd<Socket>,
    mut pidfd: Option<AsyncFd<OwnedFd>>,
    notify: impl Fn(u32, Option<u32>),
) {
    loop {
        let bits = tokio::select! {
            g = route.readable() => {
                let Ok(mut g) = g else { return };
                let bits = drain(route.get_ref(), route_kind);
                g.clear_ready();
                bits
            }
            g = nft.readable() => {
                let Ok(mut g) = g else { return };
                let bits = drain(nft.get_ref(), |_| Dirty::FIREWALL);
                g.clear_ready();
                bits
            }
            _ = async { pidfd.as_ref().expect("guarded").readable().await }, if pidfd.is_some() => {
                // The daemon exited; nothing more to hear from this pid.
                pidfd = None;
                Ok((Dirty::DEVICE, None))
            }
        };
        match bits {
            Ok((0, _)) => {}
            Ok((bits, generation)) => notify(bits, generation),
            Err(e) => {
                tracing::warn!(error = %e, "kernel event socket failed; relying on polls");
                notify(Dirty::ALL, None);
                return;
            }
        }
    }
}

/// Watches `/run/netns` for namespaces appearing, disappearing or being renamed; `notify` gets
/// each name, or `None` when events were lost (the queue overflowed: anything may have changed).
pub fn watch_netns_dir(
    notify: impl Fn(Option<&str>) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    prepare_netns_dir()?;
    // SAFETY: inotify_init1 with valid flags; the descriptor is ours to own.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let dir = std::ffi::CString::new(NETNS_DIR).expect("no NUL");
    let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
    // SAFETY: a valid inotify descriptor and path.
    if unsafe { libc::inotify_add_watch(fd.as_fd().as_raw_fd(), dir.as_ptr(), mask) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the OwnedFd owns its descriptor for as long as the AsyncFd lives.
    let fd = unsafe { AsyncFd::register(fd) }?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            // SAFETY: reading into a buffer we own, of the given length.
            let n =
                unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                guard.clear_ready();
                continue;
            }
            let mut off = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n as usize {
                // SAFETY: the kernel wrote whole events; read the header unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name = &buf[off + header..off + header + ev.len as usize];
                let name = name.split(|b| *b == 0).next().unwrap_or(&[]);
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    notify(None);
                } else if let Ok(name) = std::str::from_utf8(name) {
                    notify(Some(name));
                }
                off += header + ev.len as usize;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `NEWGEN` notification as the kernel sends it: header, nfgenmsg, then the generation
    /// (big-endian), the committing process's pid and name.
    fn newgen(generation: u32) -> Vec<u8> {
        let mut body = vec![0u8, 0, 0, 0];
        body.extend(8u16.to_ne_bytes());
        body.extend(NFTA_GEN_ID.to_ne_bytes());
        body.extend(generation.to_be_bytes());
        body.extend(8u16.to_ne_bytes());
        body.extend(2u16.to_ne_bytes());
        body.extend(4242u32.to_be_bytes());
        let mut msg = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        msg.extend(NFT_NEWGEN.to_ne_bytes());
        msg.extend([0u8; 10]);
        msg.extend(body);
        msg
    }

    #[test]
    fn the_generation_of_a_commit_is_read_from_its_notification() {
        assert_eq!(newgen_id(&newgen(7)), Some(7));
        assert_eq!(newgen_id(&newgen(u32::MAX)), Some(u32::MAX));
        // Another nf_tables message (a new rule) carries no generation.
        let mut rule = newgen(7);
        rule[4..6].copy_from_slice(&((10u16 << 8) | 6).to_ne_bytes());
        assert_eq!(newgen_id(&rule), None);
        // Cut short: nothing read past the end.
        assert_eq!(newgen_id(&newgen(7)[..22]), None);
        assert_eq!(newgen_id(&[]), None);
    }
}
