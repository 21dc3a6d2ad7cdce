//! TCP server (bulk sink and echo) and the bulk and request/response clients.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    thread,
    time::{Duration, Instant},
};

use super::{emit, io_err, secs};
use crate::protocol::{
    BulkReport, CONFIRMATION_LEN, ConnectionSummary, HEADER_LEN, Header, Listening, Mode, Report,
    RrReport, RttStats, ServerDone,
};

const READ_BUF: usize = 256 << 10;

/// Accepts `connections` connections (each handled on its own thread), then prints the summary.
/// With 0, serves until no connection came for `timeout` (see [`serve_until_idle`]).
pub fn serve(bind: SocketAddr, connections: u32, timeout: Duration) -> Result<(), String> {
    let listener = TcpListener::bind(bind).map_err(io_err(format!("binding TCP {bind}")))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("reading the bound address"))?;
    emit(&Report::Listening(Listening {
        proto: "tcp".into(),
        addr,
    }))?;
    if connections == 0 {
        return serve_until_idle(&listener, addr, timeout);
    }
    let deadline = Instant::now() + timeout;
    let mut workers = Vec::new();
    for n in 0..connections {
        let (stream, peer) = accept_before(&listener, deadline).map_err(|e| {
            format!(
                "accepting connection {} of {connections} on {addr}: {e}",
                n + 1
            )
        })?;
        workers.push(thread::spawn(move || {
            handle(stream, peer, timeout).map_err(|e| format!("connection from {peer}: {e}"))
        }));
    }
    let mut summaries = Vec::new();
    let mut errors = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(Ok(summary)) => summaries.push(summary),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a connection thread panicked".to_owned()),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    emit(&Report::ServerDone(ServerDone {
        proto: "tcp".into(),
        addr,
        bytes_received: summaries.iter().map(|s| s.bytes_received).sum(),
        bytes_sent: summaries.iter().map(|s| s.bytes_sent).sum(),
        connections: summaries,
        datagrams: 0,
    }))
}

/// A backend behind a load-balancing VIP: it cannot know how many connections it will get, so it
/// serves any number (a fixed pool of workers, so heavy churn costs no thread per connection)
/// until none came for `timeout`. A failed connection is reported on stderr and does not stop
/// the others; the summary carries totals only.
fn serve_until_idle(listener: &TcpListener, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    const WORKERS: usize = 16;
    let (tx, rx) = std::sync::mpsc::channel::<(TcpStream, SocketAddr)>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                let (mut received, mut sent) = (0u64, 0u64);
                loop {
                    let next = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok((stream, peer)) = next else { break };
                    match handle(stream, peer, timeout) {
                        Ok(s) => {
                            received += s.bytes_received;
                            sent += s.bytes_sent;
                        }
                        Err(e) => eprintln!("connection from {peer}: {e}"),
                    }
                }
                (received, sent)
            })
        })
        .collect();
    let mut deadline = Instant::now() + timeout;
    loop {
        match accept_before(listener, deadline) {
            Ok(conn) => {
                deadline = Instant::now() + timeout;
                if tx.send(conn).is_err() {
                    break;
                }
            }
            Err(_) if Instant::now() >= deadline => break,
            // ECONNABORTED and the like: that client is gone, the others are not.
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
    drop(tx);
    let (mut received, mut sent) = (0u64, 0u64);
    for w in workers {
        let (r, s) = w.join().map_err(|_| "a worker thread panicked")?;
        received += r;
        sent += s;
    }
    emit(&Report::ServerDone(ServerDone { proto: "tcp".into(), addr, bytes_received: received, bytes_sent: sent, connections: Vec::new(), datagrams: 0 }))
}

/// Waits for a connection until `deadline` (poll on the listening socket, then accept).
fn accept_before(
    listener: &TcpListener,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), String> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err("timed out waiting for a connection".into());
        }
        let ms = i32::try_from(remaining.as_millis().max(1)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if n > 0 {
            return listener.accept().map_err(|e| format!("accept: {e}"));
        }
    }
}

fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<ConnectionSummary, String> {
    set_timeouts(&stream, timeout)?;
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .map_err(io_err("reading the header"))?;
    let Header(mode) = Header::decode(header)?;
    let mut summary = ConnectionSummary {
        peer,
        mode: String::new(),
        bytes_received: HEADER_LEN as u64,
        bytes_sent: 0,
        messages: 0,
    };
    match mode {
        Mode::Bulk => {
            summary.mode = "bulk".into();
            let mut buf = vec![0u8; READ_BUF];
            let mut payload = 0u64;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => payload += n as u64,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("after {payload} payload bytes: {e}")),
                }
            }
            summary.bytes_received += payload;
            stream
                .write_all(&payload.to_be_bytes())
                .map_err(io_err("sending the confirmation"))?;
            summary.bytes_sent = CONFIRMATION_LEN as u64;
        }
        Mode::Ask { reply } => {
            summary.mode = "ask".into();
            let mut buf = vec![0u8; READ_BUF];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => summary.bytes_received += n as u64,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("reading the request: {e}")),
                }
            }
            let answer = pattern(usize::try_from(reply).map_err(|_| "reply too large")?);
            stream.write_all(&answer).map_err(io_err("sending the reply"))?;
            summary.bytes_sent = u64::from(reply);
            summary.messages = 1;
        }
        Mode::Echo { size } => {
            summary.mode = "echo".into();
            stream.set_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
            let size = usize::try_from(size).map_err(|_| "message size too large")?;
            let mut buf = vec![0u8; size];
            loop {
                // A clean end is EOF at a message boundary.
                let first = match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("after {} messages: {e}", summary.messages)),
                };
                stream
                    .read_exact(&mut buf[first..])
                    .map_err(|e| format!("inside message {}: {e}", summary.messages + 1))?;
                stream
                    .write_all(&buf)
                    .map_err(io_err(format!("echoing message {}", summary.messages + 1)))?;
                summary.messages += 1;
                summary.bytes_received += size as u64;
                summary.bytes_sent += size as u64;
            }
        }
    }
    // Best effort: the client may already have closed.
    let _ = stream.shutdown(Shutdown::Write);
    Ok(summary)
}

fn set_timeouts(stream: &TcpStream, timeout: Duration) -> Result<(), String> {
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(io_err("setting socket timeouts"))
}

fn connect(to: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect_timeout(&to, timeout).map_err(io_err(format!("connecting to {to}")))?;
    set_timeouts(&stream, timeout)?;
    Ok(stream)
}

/// A recognisable, non-constant payload pattern.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads until EOF and fails if any byte arrives.
fn expect_eof(stream: &mut TcpStream) -> Result<(), String> {
    let mut extra = [0u8; 64];
    match stream.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("server sent {n} unexpected bytes")),
        Err(e) => Err(format!("waiting for the server to close: {e}")),
    }
}

/// Sends `bytes` payload bytes after a bulk header and checks the server's confirmation. With
/// `rate` (payload bytes per second) each chunk waits for its slot on a fixed schedule from the
/// start, so a late chunk is caught up and the average holds over any window of a few chunks.
pub fn bulk(
    to: SocketAddr,
    bytes: u64,
    chunk: usize,
    rate: Option<u64>,
    timeout: Duration,
) -> Result<BulkReport, String> {
    let mut stream = connect(to, timeout)?;
    let local = stream.local_addr().map_err(io_err("local address"))?;
    let start = Instant::now();
    stream
        .write_all(&Header(Mode::Bulk).encode())
        .map_err(io_err("sending the header"))?;
    let buf = pattern(chunk);
    let mut left = bytes;
    while left > 0 {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64((bytes - left) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        stream
            .write_all(&buf[..n])
            .map_err(|e| format!("sending after {} bytes: {e}", bytes - left))?;
        left -= n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(io_err("shutting down the sending side"))?;
    let mut confirmation = [0u8; CONFIRMATION_LEN];
    stream
        .read_exact(&mut confirmation)
        .map_err(io_err("reading the server's confirmation"))?;
    expect_eof(&mut stream)?;
    let elapsed = start.elapsed();
    let confirmed = u64::from_be_bytes(confirmation);
    if confirmed != bytes {
        return Err(format!(
            "server confirmed {confirmed} payload bytes, sent {bytes}"
        ));
    }
    Ok(BulkReport {
        local,
        peer: to,
        payload_bytes: bytes,
        bytes_sent: bytes + HEADER_LEN as u64,
        bytes_received: CONFIRMATION_LEN as u64,
        confirmed_bytes: confirmed,
        elapsed_secs: secs(elapsed),
        goodput_bits_per_sec: bytes as f64 * 8.0 / secs(elapsed),
    })
}

/// `sessions` sequential connections, each doing `count` round trips (many connects from one
/// process, so no process start-up competes with the handshakes); totals in one report.
/// `connections` short connections one after another: each sends `request` bytes (after the
/// header), shuts down its side, reads a `reply`-byte answer and the server's close.
pub fn ask(to: SocketAddr, connections: u64, request: u64, reply: u32, timeout: Duration) -> Result<RrReport, String> {
    let start = Instant::now();
    let body = pattern(usize::try_from(request).map_err(|_| "--bytes too large")?);
    let mut answer = vec![0u8; usize::try_from(reply).map_err(|_| "--reply too large")?];
    let mut local = to;
    let mut rtts = Vec::new();
    for i in 0..connections {
        let t = Instant::now();
        let mut stream = connect(to, timeout)?;
        local = stream.local_addr().map_err(io_err("local address"))?;
        stream.write_all(&Header(Mode::Ask { reply }).encode()).map_err(io_err("sending the header"))?;
        stream.write_all(&body).map_err(|e| format!("connection {}: sending the request: {e}", i + 1))?;
        stream.shutdown(Shutdown::Write).map_err(io_err("shutting down the sending side"))?;
        stream.read_exact(&mut answer).map_err(|e| format!("connection {}: reading the reply: {e}", i + 1))?;
        expect_eof(&mut stream)?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(RrReport {
        local,
        peer: to,
        count: connections,
        size: request,
        bytes_sent: connections * (HEADER_LEN as u64 + request),
        bytes_received: connections * u64::from(reply),
        elapsed_secs: secs(start.elapsed()),
        rtt_us: RttStats::from_samples(&mut rtts),
        kernel_srtt_us: RttStats::default(),
    })
}

pub fn rr_sessions(to: SocketAddr, sessions: u64, count: u64, size: u32, timeout: Duration, start_after: Duration) -> Result<RrReport, String> {
    let mut total = rr(to, count, size, timeout, start_after)?;
    for _ in 1..sessions {
        let r = rr(to, count, size, timeout, Duration::ZERO)?;
        total.count += r.count;
        total.bytes_sent += r.bytes_sent;
        total.bytes_received += r.bytes_received;
        total.elapsed_secs += r.elapsed_secs;
    }
    Ok(total)
}

/// `count` request/response round trips of `size` bytes each, with TCP_NODELAY; checks every echo.
/// The connection is opened first and the exchanges start `start_after` later (a connection that
/// predates an agent started in between).
pub fn rr(to: SocketAddr, count: u64, size: u32, timeout: Duration, start_after: Duration) -> Result<RrReport, String> {
    if size == 0 {
        return Err("--size must be positive".into());
    }
    let size_usize = usize::try_from(size).map_err(|_| "--size too large")?;
    let mut stream = connect(to, timeout)?;
    stream.set_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
    let local = stream.local_addr().map_err(io_err("local address"))?;
    stream
        .write_all(&Header(Mode::Echo { size }).encode())
        .map_err(io_err("sending the header"))?;
    if !start_after.is_zero() {
        // Say the connection is up, so a harness can start what must come after it.
        emit(&Report::Listening(crate::protocol::Listening { proto: "tcp-connected".into(), addr: local }))?;
        thread::sleep(start_after);
    }
    let start = Instant::now();
    let mut request = pattern(size_usize);
    let mut response = vec![0u8; size_usize];
    let mut rtts = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut srtts = Vec::new();
    for i in 0..count {
        // The kernel's own smoothed RTT of this socket (what `ss -ti` prints as rtt:), read
        // in-process so no sampling process competes with the traffic for the CPU.
        if i % 50 == 49
            && let Some(us) = kernel_srtt_us(&stream)
        {
            srtts.push(us);
        }
        // Number the messages so a stale or misordered echo is caught.
        let stamp = i.to_be_bytes();
        let k = stamp.len().min(size_usize);
        request[..k].copy_from_slice(&stamp[stamp.len() - k..]);
        let t = Instant::now();
        stream
            .write_all(&request)
            .map_err(|e| format!("sending request {}: {e}", i + 1))?;
        stream
            .read_exact(&mut response)
            .map_err(|e| format!("reading response {}: {e}", i + 1))?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
        if response != request {
            return Err(format!("response {} differs from its request", i + 1));
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(io_err("shutting down the sending side"))?;
    expect_eof(&mut stream)?;
    let elapsed = start.elapsed();
    Ok(RrReport {
        local,
        peer: to,
        count,
        size: u64::from(size),
        bytes_sent: HEADER_LEN as u64 + count * u64::from(size),
        bytes_received: count * u64::from(size),
        elapsed_secs: secs(elapsed),
        rtt_us: RttStats::from_samples(&mut rtts),
        kernel_srtt_us: RttStats::from_samples(&mut srtts),
    })
}

/// `tcpi_rtt` of a connected socket in microseconds.
fn kernel_srtt_us(stream: &TcpStream) -> Option<f64> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: valid fd, pointer and length.
    let ret = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len)
    };
    (ret == 0).then_some(f64::from(info.tcpi_rtt))
}
