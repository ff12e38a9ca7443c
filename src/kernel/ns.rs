//! Tenant namespaces as handles held open: made and removed natively (no `ip netns`), and for
//! each one a set of descriptors opened once inside it — netlink sockets for routing,
//! netfilter and generic netlink, and the sysctl files — so that observing a tenant needs no
//! thread, no `setns` and no process.
//!
//! The handles are opened on a fresh OS thread that joined the namespace and then exits; the
//! kernel binds each of them to that namespace for life. They keep the namespace alive: a
//! namespace deleted by hand would live on, unreachable, with its `wg0` and listen port. So the
//! registry checks the handle's identity (inode) on every use and [`Namespaces::forget`] closes
//! them as soon as the namespace is gone or replaced.

use super::nl::{NlError, NlSocket};
use crate::cmd::{CmdError, NETNS_DIR};
use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_NETFILTER, NETLINK_ROUTE};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_OFF_ALL: &str = "/proc/sys/net/ipv6/conf/all/disable_ipv6";
const IPV6_OFF_DEFAULT: &str = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
const REDIRECTS_ALL: &str = "/proc/sys/net/ipv4/conf/all/send_redirects";
const REDIRECTS_DEFAULT: &str = "/proc/sys/net/ipv4/conf/default/send_redirects";

/// The namespace-wide switches a hub needs, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    pub ip_forward: bool,
    /// IPv6 disabled for all and for new interfaces.
    pub ipv6_off: bool,
    /// ICMP redirects off for all and for new interfaces (a hub must not tell a machine to
    /// send to another machine directly).
    pub redirects_off: bool,
}

/// What is open inside one tenant namespace.
pub struct NsHandles {
    pub netns: String,
    /// Identity of the namespace the handles belong to.
    pub inode: u64,
    /// The namespace itself (for moving links into it).
    pub nsfd: OwnedFd,
    pub route: NlSocket,
    pub nfnl: NlSocket,
    pub genl: NlSocket,
    ip_forward: File,
    ipv6_off_all: File,
    ipv6_off_default: File,
    redirects_all: File,
    redirects_default: File,
}

/// The raw descriptors opened inside the namespace, before they meet the runtime.
struct Opened {
    nsfd: OwnedFd,
    route: netlink_sys::Socket,
    nfnl: netlink_sys::Socket,
    genl: netlink_sys::Socket,
    sysctls: [File; 5],
}

fn read_flag(f: &File) -> io::Result<bool> {
    let mut buf = [0u8; 16];
    let n = f.read_at(&mut buf, 0)?;
    Ok(buf[..n].trim_ascii() == b"1")
}

impl NsHandles {
    pub fn sysctls(&self) -> io::Result<Switches> {
        Ok(Switches {
            ip_forward: read_flag(&self.ip_forward)?,
            ipv6_off: read_flag(&self.ipv6_off_all)? && read_flag(&self.ipv6_off_default)?,
            redirects_off: !read_flag(&self.redirects_all)? && !read_flag(&self.redirects_default)?,
        })
    }

    /// Are the switches that announce no change as they must be: IPv6 off for new interfaces,
    /// ICMP redirects off for all and for new ones? (`ip_forward` is announced by a netconf
    /// event, and `all/disable_ipv6` going to 0 by the `::1` address and route it gives `lo`,
    /// so the cheap poll need not read them.)
    pub fn silent_switches_hold(&self) -> io::Result<bool> {
        Ok(read_flag(&self.ipv6_off_default)?
            && !read_flag(&self.redirects_all)?
            && !read_flag(&self.redirects_default)?)
    }

    /// IPv6 and redirects off for new interfaces and all of them, then `ip_forward=1`.
    pub fn set_sysctls(&self) -> io::Result<()> {
        for f in [&self.redirects_default, &self.redirects_all] {
            f.write_at(b"0\n", 0)?;
        }
        for f in [&self.ipv6_off_default, &self.ipv6_off_all, &self.ip_forward] {
            f.write_at(b"1\n", 0)?;
        }
        Ok(())
    }
}

pub fn handle_path(netns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns)
}

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The inode at the namespace's path (one `stat`; a leftover plain file has some other inode, so
/// comparing with a known namespace's inode needs no more).
pub fn path_inode(netns: &str) -> Option<u64> {
    std::fs::metadata(handle_path(netns)).ok().map(|m| m.ino())
}

/// The inode of a live namespace handle, or `None` if the path is missing or not a namespace
/// (e.g. a leftover file whose mount was removed by hand).
pub fn namespace_inode(netns: &str) -> Option<u64> {
    let path = handle_path(netns);
    let meta = std::fs::metadata(&path).ok()?;
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    (st.f_type as i64 == NSFS_MAGIC).then(|| meta.ino())
}

fn open_rw(path: &str) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

/// Opens everything on the calling thread, which must be inside the namespace.
fn open_here() -> io::Result<Opened> {
    let nsfd: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
    Ok(Opened {
        nsfd,
        route: super::nl::new_socket(NETLINK_ROUTE)?,
        nfnl: super::nl::new_socket(NETLINK_NETFILTER)?,
        genl: super::nl::new_socket(NETLINK_GENERIC)?,
        sysctls: [
            open_rw(IP_FORWARD)?,
            open_rw(IPV6_OFF_ALL)?,
            open_rw(IPV6_OFF_DEFAULT)?,
            open_rw(REDIRECTS_ALL)?,
            open_rw(REDIRECTS_DEFAULT)?,
        ],
    })
}

/// Runs `f` on a fresh OS thread that first joined (or, with `create`, made) a network
/// namespace; the thread exits afterwards, so no pooled thread is ever left inside a tenant.
async fn on_fresh_thread<T: Send + 'static>(
    join: Option<File>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let entered = match &join {
                // SAFETY: setns/unshare only change this fresh, private thread's namespace.
                Some(file) => unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                None => unsafe { libc::unshare(libc::CLONE_NEWNET) },
            };
            let result = if entered == 0 {
                f()
            } else {
                Err(io::Error::last_os_error())
            };
            let _ = tx.send(result);
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

fn fd_inode(fd: &OwnedFd) -> Option<u64> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid out-pointer.
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
}

/// Opens the handle set of a namespace that exists.
async fn open(netns: &str) -> Result<NsHandles, NlError> {
    let path = handle_path(netns);
    let Some(inode) = namespace_inode(netns) else {
        return Err(CmdError::NoNetns(netns.to_string()).into());
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CmdError::NoNetns(netns.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    };
    let opened = on_fresh_thread(Some(file), open_here).await?;
    // The path may have been replaced while we were inside: the handles must be of this inode.
    if fd_inode(&opened.nsfd) != Some(inode) {
        return Err(NlError::Interrupted);
    }
    wrap(netns, inode, opened)
}

fn wrap(netns: &str, inode: u64, o: Opened) -> Result<NsHandles, NlError> {
    let [
        ip_forward,
        ipv6_off_all,
        ipv6_off_default,
        redirects_all,
        redirects_default,
    ] = o.sysctls;
    Ok(NsHandles {
        netns: netns.to_string(),
        inode,
        nsfd: o.nsfd,
        route: NlSocket::from_socket(o.route)?,
        nfnl: NlSocket::from_socket(o.nfnl)?,
        genl: NlSocket::from_socket(o.genl)?,
        ip_forward,
        ipv6_off_all,
        ipv6_off_default,
        redirects_all,
        redirects_default,
    })
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so namespace mounts made
/// below it are seen by every mount namespace that shares it.
pub fn prepare_netns_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_DIR)?;
    let dir = CString::new(NETNS_DIR).expect("no NUL");
    let none = CString::new("none").expect("no NUL");
    let shared = || {
        // SAFETY: valid NUL-terminated strings; no data argument.
        unsafe {
            libc::mount(
                none.as_ptr(),
                dir.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        }
    };
    if shared() == 0 {
        return Ok(());
    }
    if io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::last_os_error());
    }
    // Not a mount point yet: bind it onto itself, then make it shared.
    // SAFETY: as above.
    if unsafe {
        libc::mount(
            dir.as_ptr(),
            dir.as_ptr(),
            none.as_ptr(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    if shared() == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every tenant namespace's handles, by namespace name.
#[derive(Default)]
pub struct Namespaces {
    open: Mutex<HashMap<String, Arc<NsHandles>>>,
}

impl Namespaces {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<NsHandles>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handles of `netns`, opened if needed; [`CmdError::NoNetns`] if it does not exist.
    /// Handles of a namespace that was deleted or replaced are dropped first.
    pub async fn get(&self, netns: &str) -> Result<Arc<NsHandles>, NlError> {
        let current = namespace_inode(netns);
        {
            let mut map = self.lock();
            match (map.get(netns), current) {
                (Some(h), Some(inode)) if h.inode == inode => return Ok(h.clone()),
                (Some(_), _) => {
                    map.remove(netns);
                }
                (None, _) => {}
            }
        }
        if current.is_none() {
            return Err(CmdError::NoNetns(netns.to_string()).into());
        }
        let handles = Arc::new(open(netns).await?);
        self.lock().insert(netns.to_string(), handles.clone());
        Ok(handles)
    }

    /// The handles if they are open and still name the live namespace (no system call beyond a
    /// `stat`; nothing is opened).
    pub fn cached(&self, netns: &str) -> Option<Arc<NsHandles>> {
        let inode = namespace_inode(netns);
        let mut map = self.lock();
        match map.get(netns) {
            Some(h) if Some(h.inode) == inode => Some(h.clone()),
            Some(_) => {
                map.remove(netns);
                None
            }
            None => None,
        }
    }

    /// The open handles of `netns` if they belong to the namespace with `inode` — no system
    /// call: the caller has just checked that the path names that namespace.
    pub fn held(&self, netns: &str, inode: u64) -> Option<Arc<NsHandles>> {
        self.lock().get(netns).filter(|h| h.inode == inode).cloned()
    }

    /// Closes the handles of `netns` (gone, replaced, or about to be deleted).
    pub fn forget(&self, netns: &str) {
        self.lock().remove(netns);
    }

    /// `ip netns add`, natively: a new network namespace bound at `/run/netns/<netns>`.
    pub async fn create(&self, netns: &str) -> Result<(), NlError> {
        let path = handle_path(netns);
        if path.exists() && namespace_inode(netns).is_none() {
            // A handle file whose namespace mount is gone would make creation fail forever.
            std::fs::remove_file(&path)?;
        }
        prepare_netns_dir()?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let target = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::other("NUL in namespace path"))?;
        let made = on_fresh_thread(None, move || {
            let src = CString::new("/proc/thread-self/ns/net").expect("no NUL");
            // SAFETY: valid NUL-terminated paths; a bind mount of this thread's new namespace.
            if unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
            open_here()
        })
        .await;
        match made {
            Ok(opened) => {
                let inode = fd_inode(&opened.nsfd).ok_or(NlError::Interrupted)?;
                let handles = wrap(netns, inode, opened)?;
                self.lock().insert(netns.to_string(), Arc::new(handles));
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e.into())
            }
        }
    }

    /// `ip netns del`, natively: closes our handles, detaches the mount and removes the file.
    /// Idempotent.
    pub async fn delete(&self, netns: &str) -> Result<(), NlError> {
        self.forget(netns);
        let path = handle_path(netns);
        if !path.exists() {
            return Ok(());
        }
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::other("NUL in namespace path"))?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            // Not mounted (a leftover file): removing the file is all that is left to do.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e.into());
            }
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Sockets for the controller's own namespace (birth links, probe), opened on first use.
pub struct HostHandles {
    route: tokio::sync::OnceCell<NlSocket>,
    genl: tokio::sync::OnceCell<NlSocket>,
}

impl Default for HostHandles {
    fn default() -> Self {
        Self {
            route: tokio::sync::OnceCell::new(),
            genl: tokio::sync::OnceCell::new(),
        }
    }
}

impl HostHandles {
    pub async fn route(&self) -> Result<&NlSocket, NlError> {
        self.route
            .get_or_try_init(|| async { Ok(NlSocket::here(NETLINK_ROUTE)?) })
            .await
    }

    pub async fn genl(&self) -> Result<&NlSocket, NlError> {
        self.genl
            .get_or_try_init(|| async { Ok(NlSocket::here(NETLINK_GENERIC)?) })
            .await
    }
}

/// Runs `f` inside `netns` on a fresh thread (for the rare writes that have no held handle,
/// such as one interface's own sysctl).
pub async fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, NlError> {
    let file = match File::open(handle_path(netns)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CmdError::NoNetns(netns.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok(on_fresh_thread(Some(file), f).await?)
}
