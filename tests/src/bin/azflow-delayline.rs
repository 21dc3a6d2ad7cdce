//! A delay line for the test bed (the kernel here has no netem): reads routed packets from a TUN
//! device in the router namespace and writes them back after a per-(source, destination) one-way
//! delay, with sub-millisecond precision.
//!
//! Two threads: the reader stamps each packet with its due time and queues it; the writer
//! sleeps on an absolute monotonic deadline (timer slack 1 ns) until the earliest due packet,
//! spins the last few microseconds, and writes it back. The queue is bounded; overflow is
//! dropped and counted. On SIGTERM/SIGINT it prints one JSON line of statistics.
//!
//! Usage: azflow-delayline --tun NAME [--rule SRC_CIDR DST_CIDR MICROS]... [--max-queue N]

use std::{
    collections::BinaryHeap,
    cmp::Reverse,
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;

/// Spin instead of sleeping for the last stretch: a futex or nanosleep wake-up is late by tens
/// of microseconds on a busy two-core machine.
const SPIN: Duration = Duration::from_micros(100);
const MAX_PACKET: usize = 65_536;

struct Rule {
    src: IpNet,
    dst: IpNet,
    delay: Duration,
}

struct Queued {
    due: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

#[derive(Default)]
struct Stats {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
    late_total_ns: AtomicU64,
    late_max_ns: AtomicU64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (tun_name, rules, max_queue) = parse_args(&args)?;
    let tun = open_tun(&tun_name)?;
    let reader = tun.try_clone().context("cloning the TUN fd")?;
    // SAFETY: installing async-signal-safe handlers that only store to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let queue = Arc::new((Mutex::new(BinaryHeap::<Reverse<Queued>>::new()), Condvar::new()));
    let stats = Arc::new(Stats::default());
    let writer = {
        let (queue, stats) = (queue.clone(), stats.clone());
        std::thread::Builder::new().name("delay-writer".into()).spawn(move || write_loop(tun, &queue, &stats))?
    };
    println!("{{\"ready\":true,\"tun\":\"{tun_name}\",\"rules\":{}}}", rules.len());
    let _ = std::io::stdout().flush();
    read_loop(reader, &rules, max_queue, &queue, &stats);
    queue.1.notify_all();
    let _ = writer.join();
    let n = stats.delayed.load(Ordering::Relaxed).max(1);
    println!(
        "{{\"forwarded\":{},\"dropped\":{},\"delayed\":{},\"late_mean_us\":{:.1},\"late_max_us\":{:.1}}}",
        stats.forwarded.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.delayed.load(Ordering::Relaxed),
        stats.late_total_ns.load(Ordering::Relaxed) as f64 / n as f64 / 1e3,
        stats.late_max_ns.load(Ordering::Relaxed) as f64 / 1e3
    );
    Ok(())
}

fn parse_args(args: &[String]) -> Result<(String, Vec<Rule>, usize)> {
    let mut tun = None;
    let mut rules = Vec::new();
    let mut max_queue = 100_000;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--tun" => {
                tun = Some(args.get(i + 1).context("--tun NAME")?.clone());
                i += 2;
            }
            "--rule" => {
                let [src, dst, us] = [1, 2, 3].map(|k| args.get(i + k).cloned().unwrap_or_default());
                let src: IpNet = src.parse().with_context(|| format!("--rule: bad source CIDR {src:?}"))?;
                let dst: IpNet = dst.parse().with_context(|| format!("--rule: bad destination CIDR {dst:?}"))?;
                let us: u64 = us.parse().with_context(|| format!("--rule: bad delay {us:?} (microseconds)"))?;
                rules.push(Rule { src, dst, delay: Duration::from_micros(us) });
                i += 4;
            }
            "--max-queue" => {
                max_queue = args.get(i + 1).context("--max-queue N")?.parse().context("--max-queue N")?;
                i += 2;
            }
            other => bail!("unknown argument {other:?}; usage: --tun NAME [--rule SRC DST MICROS]... [--max-queue N]"),
        }
    }
    Ok((tun.context("--tun NAME is required")?, rules, max_queue))
}

/// Attaches to an existing (persistent) TUN device, without packet information headers.
fn open_tun(name: &str) -> Result<File> {
    let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun").context("opening /dev/net/tun")?;
    // struct ifreq: 16-byte name, then a short of flags (rest padding).
    let mut ifr = [0u8; 40];
    let bytes = name.as_bytes();
    if bytes.len() >= 16 {
        bail!("TUN name {name:?} is longer than 15 bytes");
    }
    ifr[..bytes.len()].copy_from_slice(bytes);
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: TUNSETIFF reads and writes a 40-byte ifreq we own.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
    if ret != 0 {
        bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    Ok(file)
}

fn addresses(p: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let s: [u8; 4] = p[12..16].try_into().ok()?;
            let d: [u8; 4] = p[16..20].try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        6 if p.len() >= 40 => {
            let s: [u8; 16] = p[8..24].try_into().ok()?;
            let d: [u8; 16] = p[24..40].try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        _ => None,
    }
}

fn read_loop(
    mut tun: File,
    rules: &[Rule],
    max_queue: usize,
    queue: &(Mutex<BinaryHeap<Reverse<Queued>>>, Condvar),
    stats: &Stats,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut seq = 0u64;
    // Wake up periodically to notice a stop request even with no traffic.
    let fd = tun.as_raw_fd();
    while !STOP.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        let n = match tun.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        let packet = buf[..n].to_vec();
        let delay = addresses(&packet)
            .and_then(|(s, d)| rules.iter().find(|r| r.src.contains(&s) && r.dst.contains(&d)))
            .map_or(Duration::ZERO, |r| r.delay);
        let (lock, cv) = queue;
        let Ok(mut q) = lock.lock() else { break };
        if q.len() >= max_queue {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !delay.is_zero() {
            stats.delayed.fetch_add(1, Ordering::Relaxed);
        }
        seq += 1;
        q.push(Reverse(Queued { due: now + delay, seq, packet }));
        cv.notify_one();
    }
}

fn write_loop(mut tun: File, queue: &(Mutex<BinaryHeap<Reverse<Queued>>>, Condvar), stats: &Stats) {
    // SAFETY: PR_SET_TIMERSLACK with a plain integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let (lock, cv) = queue;
    loop {
        let next = {
            let Ok(mut q) = lock.lock() else { return };
            loop {
                if STOP.load(Ordering::SeqCst) && q.is_empty() {
                    return;
                }
                let now = Instant::now();
                match q.peek() {
                    Some(Reverse(head)) if head.due <= now + SPIN => break q.pop().map(|Reverse(p)| p),
                    Some(Reverse(head)) => {
                        let wait = head.due - now - SPIN;
                        let Ok((g, _)) = cv.wait_timeout(q, wait) else { return };
                        q = g;
                    }
                    None => {
                        let Ok((g, _)) = cv.wait_timeout(q, Duration::from_millis(100)) else { return };
                        q = g;
                    }
                }
            }
        };
        let Some(p) = next else { continue };
        while Instant::now() < p.due {
            std::hint::spin_loop();
        }
        let late = Instant::now().saturating_duration_since(p.due).as_nanos() as u64;
        if tun.write_all(&p.packet).is_ok() {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        stats.late_total_ns.fetch_add(late, Ordering::Relaxed);
        stats.late_max_ns.fetch_max(late, Ordering::Relaxed);
    }
}
