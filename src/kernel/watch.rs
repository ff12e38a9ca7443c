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

/// Reads every queued datagram; returns the dirty bits they carry (`classify` maps a message
/// type to bits; `None` maps every message to `all`).
fn drain(s: &Socket, classify: Option<fn(u16) -> u32>, all: u32) -> io::Result<u32> {
    let mut bits = 0;
    let mut head = [0u8; 64];
    loop {
        let mut buf = &mut head[..];
        match s.recv(&mut buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
            Ok(n) if n >= 6 => {
                let t = u16::from_ne_bytes([head[4], head[5]]);
                bits |= classify.map_or(all, |f| f(t));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(bits),
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
    /// given, to the exit of daemon `pid`; `notify` gets the dirty bits of every batch of events.
    pub async fn start(
        netns: &str,
        inode: u64,
        pid: Option<u32>,
        notify: impl Fn(u32) + Send + Sync + 'static,
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
                notify(Dirty::DEVICE);
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
    notify: impl Fn(u32),
) {
    loop {
        let bits = tokio::select! {
            g = route.readable() => {
                let Ok(mut g) = g else { return };
                let bits = drain(route.get_ref(), Some(route_kind), 0);
                g.clear_ready();
                bits
            }
            g = nft.readable() => {
                let Ok(mut g) = g else { return };
                let bits = drain(nft.get_ref(), None, Dirty::FIREWALL);
                g.clear_ready();
                bits
            }
            _ = async { pidfd.as_ref().expect("guarded").readable().await }, if pidfd.is_some() => {
                // The daemon exited; nothing more to hear from this pid.
                pidfd = None;
                Ok(Dirty::DEVICE)
            }
        };
        match bits {
            Ok(0) => {}
            Ok(bits) => notify(bits),
            Err(e) => {
                tracing::warn!(error = %e, "kernel event socket failed; relying on polls");
                notify(Dirty::ALL);
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
