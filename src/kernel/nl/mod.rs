//! Netlink without spawning programs: one small request/response socket type used for links
//! (`NETLINK_ROUTE`) and the WireGuard generic-netlink family.
//!
//! A netlink socket belongs to the network namespace of the thread that created it, for life.
//! Sockets for a tenant namespace are therefore opened on a fresh OS thread that joined it and
//! then used from any task (see [`crate::kernel::ns`], which holds them).

pub mod conntrack;
pub mod genl;
pub mod nft;
pub mod route;

use crate::cmd::CmdError;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::Socket;
use std::io;
use std::time::Duration;
use zeroize::Zeroize;

/// How long one request may wait for the kernel's answer (it answers synchronously; this only
/// guards against a bug turning into a hung actor).
const TIMEOUT: Duration = Duration::from_secs(5);
/// What one receive asks for. The kernel sizes each datagram of a dump by the largest receive
/// the socket has seen (up to 32 KiB): asking for less keeps every dump step within an 8 KiB
/// allocation (measured alone it changed little: an ipset list 25 → 23.6 µs; the epoll wake-ups
/// below were the cost). Dumps just take more steps; no answer we ask for is one bigger
/// message, and one that were would fail loudly as truncated.
const RECV_BUFFER: usize = 7 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the request with this errno.
    #[error("{}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    #[error("netlink: malformed answer: {0}")]
    Decode(String),
    #[error("netlink: a dump was interrupted by a concurrent change")]
    Interrupted,
    #[error("netlink: no answer within {TIMEOUT:?}")]
    Timeout,
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel(e) => Some(*e),
            _ => None,
        }
    }
}

/// One netlink socket, one request at a time (the kernel refuses a second concurrent dump).
///
/// Not registered with the runtime's epoll: the kernel answers a request within the `send`
/// (and makes each next part of a dump within the `recv` that takes the previous one), so the
/// answer is there when we look. A socket in an epoll set would instead wake a parked runtime
/// thread for every datagram queued on it — a context switch per answer, which was most of
/// the cost of a small read. Should an answer ever be late, we look again after a short sleep.
pub struct NlSocket {
    socket: Socket,
    seq: tokio::sync::Mutex<u32>,
}

/// How long to wait before looking again for an answer that was not there yet.
const LATE: Duration = Duration::from_millis(1);

impl NlSocket {
    /// A socket of `protocol` in the calling thread's namespace (the controller's, when called
    /// from a tokio worker).
    pub fn here(protocol: isize) -> io::Result<Self> {
        Self::from_socket(new_socket(protocol)?)
    }

    /// Takes over a socket opened elsewhere (in another namespace, by another thread).
    pub fn from_socket(socket: Socket) -> io::Result<Self> {
        socket.set_non_blocking(true)?;
        Ok(Self {
            socket,
            seq: tokio::sync::Mutex::new(0),
        })
    }

    /// Sends one request and collects the answer: every message of a dump (`dump`), or the
    /// acknowledgement (and any message the kernel sends before it) otherwise.
    pub async fn request<I>(
        &self,
        msg: &mut NetlinkMessage<I>,
        dump: bool,
    ) -> Result<Vec<I>, NlError>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut seq = self.seq.lock().await;
        *seq = seq.wrapping_add(1).max(1);
        msg.header.sequence_number = *seq;
        msg.header.flags |= NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        let sent = self.send(&out).await;
        // The request may carry a private key (the caller wipes its message).
        out.zeroize();
        sent?;
        tokio::time::timeout(TIMEOUT, self.collect(*seq, 1))
            .await
            .map_err(|_| NlError::Timeout)?
    }

    /// Sends `msgs` in one datagram (an nf_tables batch: begin, requests, end) and collects
    /// what the kernel answers until `acks` acknowledgements arrived; the first error ends it.
    /// Every message carries the same sequence number, so an error about any of them (the
    /// batch's begin included) is ours.
    pub async fn batch<I>(
        &self,
        msgs: &mut [NetlinkMessage<I>],
        acks: usize,
    ) -> Result<Vec<I>, NlError>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut seq = self.seq.lock().await;
        *seq = seq.wrapping_add(1).max(1);
        let mut out = Vec::new();
        for msg in msgs.iter_mut() {
            msg.header.sequence_number = *seq;
            msg.header.flags |= NLM_F_REQUEST;
            msg.finalize();
            let at = out.len();
            out.resize(at + msg.buffer_len().next_multiple_of(4), 0);
            msg.serialize(&mut out[at..at + msg.buffer_len()]);
        }
        self.send(&out).await?;
        tokio::time::timeout(TIMEOUT, self.collect(*seq, acks))
            .await
            .map_err(|_| NlError::Timeout)?
    }

    async fn send(&self, buf: &[u8]) -> io::Result<()> {
        // The kernel takes a request at once unless the socket is congested.
        loop {
            match self.socket.send(buf, libc::MSG_DONTWAIT) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::time::sleep(LATE).await,
                r => return r.map(|_| ()),
            }
        }
    }

    /// Receives one datagram into this thread's buffer and parses it there (no await between
    /// the two, so the buffer is never shared); `Ok(true)` when the answer is complete.
    fn take<I>(
        &self,
        seq: u32,
        out: &mut Vec<I>,
        acks: &mut usize,
    ) -> io::Result<Result<bool, NlError>>
    where
        I: NetlinkDeserializable + NetlinkSerializable,
    {
        RECV.with_borrow_mut(|buf| {
            buf.clear();
            let n = self
                .socket
                .recv(buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)?;
            let got = buf.len();
            let result = if n > got {
                Err(NlError::Decode(format!("{n}-byte message truncated")))
            } else {
                parse_datagram::<I>(buf, seq, out, acks)
            };
            // Answers may hold a private key (a device dump does).
            buf[..got].zeroize();
            Ok(result)
        })
    }

    async fn collect<I>(&self, seq: u32, mut acks: usize) -> Result<Vec<I>, NlError>
    where
        I: NetlinkDeserializable + NetlinkSerializable,
    {
        let mut answers = Vec::new();
        loop {
            // The kernel answers while the request is sent (and fills the next part of a dump
            // while the previous one is read): try first, wait only if nothing is there.
            match self.take(seq, &mut answers, &mut acks) {
                Ok(done) => {
                    if done? {
                        return Ok(answers);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::time::sleep(LATE).await,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

thread_local! {
    /// One receive buffer per thread, not per socket: a thousand tenants hold three sockets
    /// each, and a request uses the buffer only between a receive and its parse.
    static RECV: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(RECV_BUFFER));
}

/// Parses one datagram; `Ok(true)` when the answer to `seq` is complete: the last of `acks`
/// acknowledgements (which follow any answer message), or the end of a dump.
fn parse_datagram<I>(
    buf: &[u8],
    seq: u32,
    out: &mut Vec<I>,
    acks: &mut usize,
) -> Result<bool, NlError>
where
    I: NetlinkDeserializable + NetlinkSerializable,
{
    let mut offset = 0;
    while offset < buf.len() {
        let header = NetlinkBuffer::new_checked(&buf[offset..])
            .map_err(|e| NlError::Decode(e.to_string()))?;
        let len = header.length() as usize;
        if len < 16 || offset + len > buf.len() {
            return Err(NlError::Decode(format!("message length {len}")));
        }
        let (msg_seq, flags) = (header.sequence_number(), header.flags());
        let msg = NetlinkMessage::<I>::deserialize(&buf[offset..offset + len])
            .map_err(|e| NlError::Decode(e.to_string()))?;
        offset += (len + 3) & !3;
        // Leftovers of an earlier request that timed out are not ours.
        if msg_seq != seq {
            continue;
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            return Err(NlError::Interrupted);
        }
        match msg.payload {
            NetlinkPayload::InnerMessage(inner) => out.push(inner),
            NetlinkPayload::Error(e) => match e.code {
                None => {
                    *acks = acks.saturating_sub(1);
                    if *acks == 0 {
                        return Ok(true);
                    }
                }
                Some(code) => return Err(NlError::Kernel(-code.get())),
            },
            NetlinkPayload::Done(done) if done.code != 0 => {
                return Err(NlError::Kernel(-done.code));
            }
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Overrun(_) => return Err(NlError::Decode("overrun".into())),
            _ => {}
        }
    }
    Ok(false)
}

pub(crate) fn new_socket(protocol: isize) -> io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    // Errors need not echo our (possibly large, possibly secret) request back.
    socket.set_cap_ack(true)?;
    socket.set_ext_ack(true)?;
    Ok(socket)
}

/// True if the error says the namespace does not exist.
pub fn is_no_netns(e: &NlError) -> bool {
    matches!(e, NlError::Cmd(CmdError::NoNetns(_)))
}
