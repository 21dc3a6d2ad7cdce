//! The conntrack netlink messages azflow reads (`nfnetlink_conntrack`), parsed from bytes. Pure, so
//! the parser is unit-tested and fuzzed; the socket lives in `socket.rs`.
//!
//! A message is `nlmsghdr` (16 bytes) + `nfgenmsg` (4 bytes) + attributes. The two tuples are
//! nested: `CTA_TUPLE_ORIG` / `CTA_TUPLE_REPLY` → `CTA_TUPLE_IP` (addresses) and
//! `CTA_TUPLE_PROTO` (protocol number, ports in network byte order). See the kernel's
//! `include/uapi/linux/netfilter/nfnetlink_conntrack.h`.

use std::net::IpAddr;

pub const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// Legacy group bits for `sockaddr_nl.nl_groups`: NFNLGRP_CONNTRACK_NEW (1) and _DESTROY (3).
pub const GROUPS_NEW_DESTROY: u32 = (1 << 0) | (1 << 2);

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

pub const IPPROTO_TCP: u8 = 6;

/// One direction of a connection as conntrack records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new entry (event) or an existing one (dump).
    New,
    Destroy,
}

/// A conntrack entry: `orig` as the initiator sent it, `reply` as the responder answers (after
/// NAT: `reply.src` is the real remote end of a DNAT'd connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub orig: Tuple,
    pub reply: Tuple,
}

/// One netlink message of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Entry(Entry),
    /// End of a dump.
    Done,
    /// An error reply; 0 is an acknowledgement.
    Error(i32),
    /// Another message type, or an entry without both tuples (e.g. an ICMP one we do not need).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("netlink message truncated at byte {0}")]
    Truncated(usize),
    #[error("netlink message length {len} at byte {at} is invalid")]
    BadLength { at: usize, len: usize },
}

/// The dump request for every entry of every family.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + NFGENMSG_LEN) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC (all), version 0, res_id 0.
    b.extend_from_slice(&[0, 0, 0, 0]);
    b
}

/// Every message in one receive buffer.
pub fn parse_buffer(buf: &[u8]) -> Result<Vec<Message>, ParseError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at)? as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(ParseError::BadLength { at, len });
        }
        let ty = u16_at(buf, at + 4)?;
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        out.push(parse_message(ty, body)?);
        at += align4(len);
    }
    Ok(out)
}

fn parse_message(ty: u16, body: &[u8]) -> Result<Message, ParseError> {
    match ty {
        NLMSG_DONE => return Ok(Message::Done),
        NLMSG_ERROR => {
            let code = i32::from_ne_bytes(body.get(..4).ok_or(ParseError::Truncated(0))?.try_into().map_err(|_| ParseError::Truncated(0))?);
            return Ok(Message::Error(code));
        }
        _ => {}
    }
    if ty >> 8 != NFNL_SUBSYS_CTNETLINK {
        return Ok(Message::Other);
    }
    let kind = match ty & 0xff {
        IPCTNL_MSG_CT_NEW => Kind::New,
        IPCTNL_MSG_CT_DELETE => Kind::Destroy,
        _ => return Ok(Message::Other),
    };
    let attrs = body.get(NFGENMSG_LEN..).ok_or(ParseError::Truncated(body.len()))?;
    let (mut orig, mut reply) = (None, None);
    for (t, payload) in Attrs::new(attrs) {
        let payload = payload?;
        match t {
            CTA_TUPLE_ORIG => orig = parse_tuple(payload)?,
            CTA_TUPLE_REPLY => reply = parse_tuple(payload)?,
            _ => {}
        }
    }
    Ok(match (orig, reply) {
        (Some(orig), Some(reply)) => Message::Entry(Entry { kind, orig, reply }),
        _ => Message::Other,
    })
}

fn parse_tuple(buf: &[u8]) -> Result<Option<Tuple>, ParseError> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0u16, 0u16);
    for (t, payload) in Attrs::new(buf) {
        let payload = payload?;
        match t {
            CTA_TUPLE_IP => {
                for (t, a) in Attrs::new(payload) {
                    let a = a?;
                    match (t, a.len()) {
                        (CTA_IP_V4_SRC, 4) => src = Some(IpAddr::from(<[u8; 4]>::try_from(a).map_err(|_| ParseError::Truncated(0))?)),
                        (CTA_IP_V4_DST, 4) => dst = Some(IpAddr::from(<[u8; 4]>::try_from(a).map_err(|_| ParseError::Truncated(0))?)),
                        (CTA_IP_V6_SRC, 16) => src = Some(IpAddr::from(<[u8; 16]>::try_from(a).map_err(|_| ParseError::Truncated(0))?)),
                        (CTA_IP_V6_DST, 16) => dst = Some(IpAddr::from(<[u8; 16]>::try_from(a).map_err(|_| ParseError::Truncated(0))?)),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (t, a) in Attrs::new(payload) {
                    let a = a?;
                    match (t, a.len()) {
                        (CTA_PROTO_NUM, 1) => proto = Some(a[0]),
                        (CTA_PROTO_SRC_PORT, 2) => sport = u16::from_be_bytes([a[0], a[1]]),
                        (CTA_PROTO_DST_PORT, 2) => dport = u16::from_be_bytes([a[0], a[1]]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (src, dst, proto) {
        (Some(src), Some(dst), Some(proto)) if src.is_ipv4() == dst.is_ipv4() => Some(Tuple { src, dst, proto, sport, dport }),
        _ => None,
    })
}

/// Iterator over `nlattr`s: (type without flag bits, payload).
struct Attrs<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Attrs<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, Result<&'a [u8], ParseError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at + 4 > self.buf.len() {
            return None;
        }
        let at = self.at;
        let len = u16::from_ne_bytes([self.buf[at], self.buf[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[at + 2], self.buf[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > self.buf.len() {
            self.at = self.buf.len();
            return Some((ty, Err(ParseError::BadLength { at, len })));
        }
        self.at = at + align4(len);
        Some((ty, Ok(&self.buf[at + 4..at + len])))
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, ParseError> {
    let b = buf.get(at..at + 4).ok_or(ParseError::Truncated(at))?;
    Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, ParseError> {
    let b = buf.get(at..at + 2).ok_or(ParseError::Truncated(at))?;
    Ok(u16::from_ne_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn tuple_attr(ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let ip = [attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)].concat();
        let proto = [attr(CTA_PROTO_NUM, &[6]), attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()), attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes())].concat();
        attr(ty | 0x8000, &[attr(CTA_TUPLE_IP | 0x8000, &ip), attr(CTA_TUPLE_PROTO | 0x8000, &proto)].concat())
    }

    /// A message as the kernel sends it for `conntrack -E`: a pod (10.0.1.50) dialing a VIP
    /// (172.20.0.10:80) DNAT'd to a backend (10.0.2.10:8080).
    pub(crate) fn dnat_message(msg: u16) -> Vec<u8> {
        let attrs = [
            tuple_attr(CTA_TUPLE_ORIG, [10, 0, 1, 50], [172, 20, 0, 10], 40000, 80),
            tuple_attr(CTA_TUPLE_REPLY, [10, 0, 2, 10], [10, 0, 1, 50], 8080, 40000),
            attr(3, &0x1aau32.to_be_bytes()), // CTA_STATUS, ignored
        ]
        .concat();
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
        b.extend_from_slice(&[0; 2]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&[2, 0, 0, 0]);
        b.extend_from_slice(&attrs);
        b
    }

    #[test]
    fn a_dnat_entry_names_the_backend() {
        let msgs = parse_buffer(&[dnat_message(IPCTNL_MSG_CT_NEW), dnat_message(IPCTNL_MSG_CT_DELETE)].concat()).expect("parses");
        let Message::Entry(e) = &msgs[0] else { panic!("{msgs:?}") };
        assert_eq!(e.kind, Kind::New);
        assert_eq!((e.orig.dst, e.orig.dport), ("172.20.0.10".parse().expect("ip"), 80));
        assert_eq!((e.reply.src, e.reply.sport), ("10.0.2.10".parse().expect("ip"), 8080));
        assert_eq!(e.orig.proto, IPPROTO_TCP);
        assert!(matches!(&msgs[1], Message::Entry(Entry { kind: Kind::Destroy, .. })));
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let m = dnat_message(IPCTNL_MSG_CT_NEW);
        for cut in 0..m.len() {
            let _ = parse_buffer(&m[..cut]);
        }
        let mut bad = m.clone();
        bad[0] = 200; // claims more than the buffer holds
        assert!(parse_buffer(&bad).is_err());
        let mut nested = m;
        nested[NLMSG_HDRLEN + NFGENMSG_LEN] = 255; // first attribute overruns
        assert!(parse_buffer(&nested).is_err());
    }

    #[test]
    fn the_fuzz_seed_corpus_holds_real_entries() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/conntrack_messages");
        let batch = std::fs::read(dir.join("dump_batch")).expect("seed file");
        let msgs = parse_buffer(&batch).expect("parses");
        assert_eq!(msgs.len(), 3);
        assert!(matches!(msgs[1], Message::Entry(Entry { kind: Kind::Destroy, orig: Tuple { src: IpAddr::V6(_), .. }, .. })));
        assert_eq!(msgs[2], Message::Done);
    }

    #[test]
    fn done_and_errors_are_recognised() {
        let mut done = Vec::new();
        done.extend_from_slice(&20u32.to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0; 14]);
        assert_eq!(parse_buffer(&done).expect("parses"), vec![Message::Done]);
        let req = dump_request(7);
        assert_eq!(req.len(), 20);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 0x0101);
    }
}
