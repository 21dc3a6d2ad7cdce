//! ICMP / ICMPv6 echo over raw sockets (needs CAP_NET_RAW; the bed runs as root), so the bed
//! does not depend on a `ping` binary being installed.

use std::{
    io,
    mem::{size_of, zeroed},
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread,
    time::{Duration, Instant},
};

use crate::protocol::{PingReport, PingTarget};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const PAYLOAD: &[u8; 16] = b"azflow-traffic\0\0";

/// Sends `count` echo requests to each target (targets in parallel), waiting up to `wait` for
/// each reply.
pub fn ping(targets: &[IpAddr], count: u64, wait: Duration) -> Result<PingReport, String> {
    let base = (std::process::id() & 0xffff) as u16;
    let results: Vec<Result<PingTarget, String>> = thread::scope(|scope| {
        let workers: Vec<_> = targets
            .iter()
            .zip(0u16..)
            .map(|(&target, i)| {
                scope.spawn(move || {
                    ping_one(target, count, wait, base.wrapping_add(i))
                        .map_err(|e| format!("pinging {target}: {e}"))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("ping thread panicked".into()))
            })
            .collect()
    });
    Ok(PingReport {
        targets: results.into_iter().collect::<Result<_, _>>()?,
    })
}

fn ping_one(target: IpAddr, count: u64, wait: Duration, ident: u16) -> io::Result<PingTarget> {
    let socket = RawIcmp::connect(target)?;
    let mut result = PingTarget {
        target,
        sent: 0,
        received: 0,
        max_rtt_us: 0.0,
    };
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let seq = (seq & 0xffff) as u16;
        let request = echo_request(target, ident, seq);
        let start = Instant::now();
        socket.send(&request)?;
        result.sent += 1;
        let deadline = start + wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            socket.set_recv_timeout(remaining)?;
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if is_echo_reply(target, &buf[..n], ident, seq) {
                result.received += 1;
                result.max_rtt_us = result.max_rtt_us.max(start.elapsed().as_secs_f64() * 1e6);
                break;
            }
        }
    }
    Ok(result)
}

fn echo_request(target: IpAddr, ident: u16, seq: u16) -> Vec<u8> {
    let kind = if target.is_ipv4() {
        ECHO_REQUEST_V4
    } else {
        ECHO_REQUEST_V6
    };
    let mut packet = vec![kind, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if target.is_ipv4() {
        // The kernel fills in the ICMPv6 checksum itself (RFC 3542), not the ICMPv4 one.
        let sum = internet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn is_echo_reply(target: IpAddr, packet: &[u8], ident: u16, seq: u16) -> bool {
    let icmp = if target.is_ipv4() {
        // Raw IPv4 sockets deliver the IP header too.
        let Some(&first) = packet.first() else {
            return false;
        };
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || packet.len() < ihl {
            return false;
        }
        &packet[ihl..]
    } else {
        packet
    };
    let reply = if target.is_ipv4() {
        ECHO_REPLY_V4
    } else {
        ECHO_REPLY_V6
    };
    icmp.len() >= 8
        && icmp[0] == reply
        && icmp[4..6] == ident.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw ICMP socket connected to one peer (so the kernel only hands it that peer's packets).
struct RawIcmp(OwnedFd);

impl RawIcmp {
    fn connect(target: IpAddr) -> io::Result<RawIcmp> {
        let (domain, proto) = match target {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
        };
        // SAFETY: plain socket(2) call; the fd is owned right below.
        let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket that nothing else owns.
        let socket = RawIcmp(unsafe { OwnedFd::from_raw_fd(fd) });
        let (addr, len) = sockaddr(target);
        // SAFETY: `addr` is a properly initialised sockaddr of length `len`.
        let rc = unsafe {
            libc::connect(
                socket.0.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    fn send(&self, packet: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for `packet.len()` bytes.
        let n = unsafe { libc::send(self.0.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid and writable for `buf.len()` bytes.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: `tv` is a valid timeval and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                socklen::<libc::timeval>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).expect("socket structures are small")
}

fn sockaddr(ip: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match ip {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            socklen::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.octets();
            socklen::<libc::sockaddr_in6>()
        }
    };
    (storage, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_known_packet() {
        // Echo request id 0x1234 seq 1 without payload: sum is !(0x0800 + 0x1234 + 0x0001).
        let p = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(internet_checksum(&p), !(0x0800u16 + 0x1234 + 0x0001));
        let mut full = echo_request("10.0.0.1".parse().expect("ip"), 7, 9);
        let sum = internet_checksum(&full);
        assert_eq!(sum, 0, "a packet with its checksum in place sums to 0");
        full[0] = ECHO_REPLY_V4;
        let mut with_ip = vec![0x45u8; 20];
        with_ip.extend_from_slice(&full);
        assert!(is_echo_reply(
            "10.0.0.1".parse().expect("ip"),
            &with_ip,
            7,
            9
        ));
        assert!(!is_echo_reply(
            "10.0.0.1".parse().expect("ip"),
            &with_ip,
            7,
            10
        ));
    }
}
