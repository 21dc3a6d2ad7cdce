//! A blocking conntrack netlink socket (libc only: the protocol needs four calls, and the parser
//! beside it is ours so it can be fuzzed). Needs CAP_NET_ADMIN in the node's network namespace.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use super::ctnetlink::NETLINK_NETFILTER;

pub struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    /// A socket subscribed to `groups` (legacy bitmask; 0 for a request/dump socket), with a
    /// receive timeout so the reader can notice shutdown.
    pub fn open(groups: u32, recv_timeout: Duration, rcvbuf: usize) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = Self { fd };
        // A burst of events must not overflow the queue; FORCE needs CAP_NET_ADMIN, else the
        // plain option is capped by rmem_max.
        let size = i32::try_from(rcvbuf).unwrap_or(i32::MAX);
        if s.setsockopt(libc::SO_RCVBUFFORCE, size).is_err() {
            let _ = s.setsockopt(libc::SO_RCVBUF, size);
        }
        let tv = libc::timeval { tv_sec: recv_timeout.as_secs() as libc::time_t, tv_usec: recv_timeout.subsec_micros() as libc::suseconds_t };
        // SAFETY: a valid timeval of the right size.
        let ret = unsafe {
            libc::setsockopt(s.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const tv).cast(), size_of::<libc::timeval>() as u32)
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zeroed sockaddr_nl is valid; family and groups set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        // SAFETY: a valid sockaddr_nl of the right size.
        let ret = unsafe { libc::bind(s.fd.as_raw_fd(), (&raw const addr).cast(), size_of::<libc::sockaddr_nl>() as u32) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    fn setsockopt(&self, opt: i32, v: i32) -> io::Result<()> {
        // SAFETY: an int option of the right size.
        let ret = unsafe { libc::setsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&raw const v).cast(), size_of::<i32>() as u32) };
        if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid buffer and address for the call.
        let ret = unsafe {
            libc::sendto(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0, (&raw const addr).cast(), size_of::<libc::sockaddr_nl>() as u32)
        };
        if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// One datagram; `Ok(0)` on timeout. ENOBUFS (events lost) comes back as an error.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: a valid, writable buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(0),
            _ => Err(e),
        }
    }
}
