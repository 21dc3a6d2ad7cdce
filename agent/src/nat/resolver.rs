//! The conntrack reader: dumps the node's table once, then follows its NEW and DESTROY events,
//! and writes each TCP connection's real remote end into the kernel's NAT map, where a pending
//! socket finds it on its next packet. Runs on its own thread: netlink reads block.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use agent_common::nat::{NatKey, NatTarget, PendingValue, target};
use aya::maps::{HashMap, MapData};

use super::{
    ctnetlink::{self, Entry, GROUPS_NEW_DESTROY, IPPROTO_TCP, Kind, Message},
    socket::NetlinkSocket,
};

/// What the reader did, for self-metrics.
#[derive(Debug, Default)]
pub struct ResolverStats {
    pub entries: AtomicU64,
    pub destroyed: AtomicU64,
    pub written: AtomicU64,
    pub write_failures: AtomicU64,
    /// Times the kernel dropped events (ENOBUFS); each triggers a fresh dump.
    pub overruns: AtomicU64,
    pub parse_errors: AtomicU64,
    /// 1 while the event socket is open.
    pub listening: AtomicU64,
}

impl ResolverStats {
    /// Conntrack was seen tracking a TCP connection in this namespace (dump or event).
    pub fn tracking(&self) -> bool {
        self.written.load(Ordering::Relaxed) > 0
    }
}

/// Keys and targets to write for a conntrack entry, one per way a local socket can see the
/// connection:
/// - the initiator before NAT (a pod dialing a VIP): the original tuple → the reply's source, the
///   real remote end;
/// - the initiator after NAT (a host-network client behind OUTPUT DNAT, whose packets already
///   carry the backend): the reply tuple reversed → the same;
/// - the responder (a server, possibly behind DNAT or seeing a masqueraded client): the reply
///   tuple → the original source, the real client.
pub fn writes_for(e: &Entry) -> Vec<(NatKey, NatTarget)> {
    if e.orig.proto != IPPROTO_TCP {
        return Vec::new();
    }
    let target = |a: IpAddr| NatTarget { remote: addr16(a), family: family(a), state: target::RESOLVED, _pad: [0; 2] };
    let mut out: Vec<(NatKey, NatTarget)> = Vec::with_capacity(3);
    for (k, t) in [
        (key(e.orig.src, e.orig.sport, e.orig.dst, e.orig.dport), target(e.reply.src)),
        (key(e.reply.dst, e.reply.dport, e.reply.src, e.reply.sport), target(e.reply.src)),
        (key(e.reply.src, e.reply.sport, e.reply.dst, e.reply.dport), target(e.orig.src)),
    ] {
        if !out.iter().any(|(seen, _)| *seen == k) {
            out.push((k, t));
        }
    }
    out
}

fn key(local: IpAddr, local_port: u16, remote: IpAddr, remote_port: u16) -> NatKey {
    NatKey { family: family(remote), _pad: [0; 3], local_port, remote_port, local: addr16(local), remote: addr16(remote) }
}

pub fn addr16(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() { 4 } else { 6 }
}

pub struct Resolver {
    nat: HashMap<MapData, NatKey, NatTarget>,
    pending: HashMap<MapData, NatKey, PendingValue>,
    stats: Arc<ResolverStats>,
}

impl Resolver {
    pub fn new(nat: HashMap<MapData, NatKey, NatTarget>, pending: HashMap<MapData, NatKey, PendingValue>, stats: Arc<ResolverStats>) -> Self {
        Self { nat, pending, stats }
    }

    /// Starts the reader thread and waits until it has subscribed to the node's conntrack NEW
    /// and DESTROY events (CAP_NET_ADMIN). Done before anything is attached, so a failure turns
    /// NAT resolution off instead of holding bytes that nobody will resolve. With `netns`, the
    /// thread reads the conntrack of that network namespace (an agent outside the node's own).
    pub fn start(mut self, netns: Option<PathBuf>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name("azflow-conntrack".into()).spawn(move || {
            let opened = enter_netns(netns.as_deref())
                .and_then(|()| NetlinkSocket::open(GROUPS_NEW_DESTROY, Duration::from_millis(200), 8 << 20));
            let events = match opened {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            self.stats.listening.store(1, Ordering::Relaxed);
            // Subscribed first, then dumped: nothing that starts in between is missed.
            self.dump();
            let mut buf = vec![0u8; 256 << 10];
            while !stop.load(Ordering::Relaxed) {
                match events.recv(&mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        self.handle(&buf[..n]);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        self.stats.overruns.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("conntrack events were dropped by the kernel; reading the table again");
                        self.dump();
                    }
                    Err(e) => {
                        tracing::warn!("reading conntrack events failed ({e}); stopping NAT resolution");
                        break;
                    }
                }
            }
            self.stats.listening.store(0, Ordering::Relaxed);
        })?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the conntrack reader did not start within 5 s")),
        }
    }

    fn dump(&mut self) {
        let sock = match NetlinkSocket::open(0, Duration::from_secs(2), 8 << 20) {
            Ok(s) => s,
            Err(e) => return tracing::warn!("cannot open a conntrack dump socket: {e}"),
        };
        if let Err(e) = sock.send(&ctnetlink::dump_request(1)) {
            return tracing::warn!("conntrack dump request failed: {e}");
        }
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match sock.recv(&mut buf) {
                Ok(0) => return tracing::warn!("conntrack dump timed out; continuing with events only"),
                Ok(n) => {
                    if self.handle(&buf[..n]) {
                        return;
                    }
                }
                Err(e) => return tracing::warn!("conntrack dump failed: {e}"),
            }
        }
    }

    /// Applies every message in a buffer; true at the end of a dump (or its error).
    fn handle(&mut self, buf: &[u8]) -> bool {
        let msgs = match ctnetlink::parse_buffer(buf) {
            Ok(m) => m,
            Err(e) => {
                self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("unparsable conntrack message: {e}");
                return false;
            }
        };
        let mut done = false;
        for m in msgs {
            match m {
                Message::Entry(e) if e.kind == Kind::New => self.learn(&e),
                Message::Entry(e) => self.forget(&e),
                Message::Done => done = true,
                Message::Error(code) if code != 0 => {
                    tracing::warn!("conntrack answered error {code}");
                    done = true;
                }
                _ => {}
            }
        }
        done
    }

    fn learn(&mut self, e: &Entry) {
        self.stats.entries.fetch_add(1, Ordering::Relaxed);
        for (k, t) in writes_for(e) {
            match self.nat.insert(&k, &t, 0) {
                Ok(()) => self.stats.written.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.stats.write_failures.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    /// A finished connection's mapping goes, unless a pending socket still waits on it (the
    /// pending sweep removes it then). TCP entries end only after conntrack's TIME_WAIT, so
    /// only a flush can race a live socket here.
    fn forget(&mut self, e: &Entry) {
        self.stats.destroyed.fetch_add(1, Ordering::Relaxed);
        for (k, _) in writes_for(e) {
            if self.pending.get(&k, 0).is_err() {
                let _ = self.nat.remove(&k);
            }
        }
    }
}

/// Moves the calling thread (only) into the network namespace at `path`.
fn enter_netns(path: Option<&std::path::Path>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let Some(path) = path else { return Ok(()) };
    let file = std::fs::File::open(path)?;
    // SAFETY: setns on a descriptor we hold open for the call; it changes this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::ctnetlink::Tuple;

    fn t(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple { src: src.parse().expect("ip"), dst: dst.parse().expect("ip"), proto: IPPROTO_TCP, sport, dport }
    }

    #[test]
    fn a_service_connection_maps_the_vip_tuple_to_the_backend() {
        let e = Entry { kind: Kind::New, orig: t("10.0.1.50", 40000, "172.20.0.10", 80), reply: t("10.0.2.10", 8080, "10.0.1.50", 40000) };
        let w = writes_for(&e);
        assert_eq!(w.len(), 3);
        let (pre, target) = w[0];
        assert_eq!((pre.local_port, pre.remote_port, pre.family), (40000, 80, 4));
        assert_eq!(&pre.remote[..4], &[172, 20, 0, 10]);
        assert_eq!(&target.remote[..4], &[10, 0, 2, 10]);
        // The post-NAT view (host-network client behind OUTPUT DNAT) resolves to itself.
        let (post, same) = w[1];
        assert_eq!((&post.remote[..4], post.remote_port), (&[10u8, 0, 2, 10][..], 8080));
        assert_eq!(same, target);
        // The backend's own view (if it runs here): its client is the pod.
        let (served, client) = w[2];
        assert_eq!((&served.local[..4], served.local_port, &served.remote[..4]), (&[10u8, 0, 2, 10][..], 8080, &[10u8, 0, 1, 50][..]));
        assert_eq!(&client.remote[..4], &[10, 0, 1, 50]);
    }

    #[test]
    fn a_masqueraded_client_is_named_to_the_server() {
        // A NodePort: an outside client 203.0.113.9 → node 10.0.1.10:30080, DNAT'd to a pod
        // 10.0.1.50:8080 and masqueraded to the node's address.
        let e = Entry { kind: Kind::New, orig: t("203.0.113.9", 5555, "10.0.1.10", 30080), reply: t("10.0.1.50", 8080, "10.0.1.10", 61000) };
        let w = writes_for(&e);
        let (k, who) = w.iter().find(|(k, _)| k.local[..4] == [10, 0, 1, 50]).expect("the pod's view");
        assert_eq!((k.local_port, &k.remote[..4], k.remote_port), (8080, &[10u8, 0, 1, 10][..], 61000));
        assert_eq!(&who.remote[..4], &[203, 0, 113, 9]);
    }

    #[test]
    fn an_untranslated_connection_resolves_to_itself_once() {
        let e = Entry { kind: Kind::New, orig: t("fd00::5", 1234, "fd00:2::10", 443), reply: t("fd00:2::10", 443, "fd00::5", 1234) };
        let w = writes_for(&e);
        // The initiator's two views coincide; the responder's is the other.
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].1.family, 6);
        assert_eq!(w[0].0.remote, w[0].1.remote);
        assert_eq!(w[1].1.remote, addr16("fd00::5".parse().expect("ip")));
    }

    #[test]
    fn other_protocols_write_nothing() {
        let mut e = Entry { kind: Kind::New, orig: t("10.0.1.50", 1, "10.0.2.1", 53), reply: t("10.0.2.1", 53, "10.0.1.50", 1) };
        e.orig.proto = 17;
        assert!(writes_for(&e).is_empty());
    }
}
