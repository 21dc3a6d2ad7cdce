//! UDP sink and sender.

use std::{
    io::{self, ErrorKind},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use super::{emit, io_err, secs};
use crate::protocol::{Listening, Report, ServerDone, UdpReport};

/// The sink's socket receive buffer. The default (net.core.rmem_default, 208 KiB) holds only
/// about 90 datagrams of 1000 bytes (each is charged ~2.3 KiB), so a burst from a sender that is
/// not paced would overflow it.
const RECEIVE_BUFFER: i32 = 16 << 20;

pub struct ServeOptions {
    pub bind: SocketAddr,
    /// Stop after this many datagrams.
    pub datagrams: Option<u64>,
    /// Stop when nothing arrived for this long after the first datagram.
    pub idle: Duration,
    /// Give up if no datagram arrives at all within this time.
    pub timeout: Duration,
}

/// Counts datagrams until `datagrams` arrived, or the flow went idle, then prints the summary.
pub fn serve(opts: &ServeOptions) -> Result<(), String> {
    let socket =
        UdpSocket::bind(opts.bind).map_err(io_err(format!("binding UDP {}", opts.bind)))?;
    let addr = socket
        .local_addr()
        .map_err(io_err("reading the bound address"))?;
    grow_receive_buffer(&socket, RECEIVE_BUFFER).map_err(io_err("enlarging the receive buffer"))?;
    emit(&Report::Listening(Listening {
        proto: "udp".into(),
        addr,
    }))?;
    socket
        .set_read_timeout(Some(opts.timeout))
        .map_err(io_err("setting the read timeout"))?;
    let mut buf = vec![0u8; 65536];
    let (mut datagrams, mut bytes) = (0u64, 0u64);
    while opts.datagrams.is_none_or(|want| datagrams < want) {
        match socket.recv(&mut buf) {
            Ok(n) => {
                if datagrams == 0 {
                    socket
                        .set_read_timeout(Some(opts.idle.max(Duration::from_millis(1))))
                        .map_err(io_err("setting the idle timeout"))?;
                }
                datagrams += 1;
                bytes += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if datagrams == 0 {
                    return Err(format!(
                        "no datagram arrived on {addr} within {:?}",
                        opts.timeout
                    ));
                }
                break;
            }
            Err(e) => return Err(format!("receiving on {addr}: {e}")),
        }
    }
    emit(&Report::ServerDone(ServerDone {
        proto: "udp".into(),
        addr,
        connections: Vec::new(),
        datagrams,
        bytes_received: bytes,
        bytes_sent: 0,
    }))
}

/// Sends `count` datagrams of `size` bytes to `to` as fast as the socket accepts them.
pub fn send(to: SocketAddr, count: u64, size: usize) -> Result<UdpReport, String> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).map_err(io_err("binding a UDP socket"))?;
    socket
        .connect(to)
        .map_err(io_err(format!("connecting UDP to {to}")))?;
    let local = socket.local_addr().map_err(io_err("local address"))?;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    for _ in 0..count {
        match socket.send(&payload) {
            Ok(n) => {
                sent += 1;
                bytes += n as u64;
            }
            Err(_) => errors += 1,
        }
    }
    Ok(UdpReport {
        local,
        peer: to,
        count,
        size: size as u64,
        datagrams_sent: sent,
        bytes_sent: bytes,
        send_errors: errors,
        elapsed_secs: secs(start.elapsed()),
    })
}

/// Sets SO_RCVBUFFORCE (root may exceed net.core.rmem_max), falling back to SO_RCVBUF.
fn grow_receive_buffer(socket: &UdpSocket, bytes: i32) -> io::Result<()> {
    let set = |option| {
        // SAFETY: `bytes` is a valid c_int and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const bytes).cast(),
                libc::socklen_t::try_from(size_of::<i32>()).expect("4 fits socklen_t"),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SO_RCVBUFFORCE).or_else(|_| set(libc::SO_RCVBUF))
}
