//! What `azflow-traffic` sends on the wire and prints on stdout, shared by the tool and the
//! harness that parses its output.
//!
//! A TCP connection starts with an 8-byte [`Header`]: `b"AZ"`, version 1, the mode, and a
//! big-endian u32 parameter. In [`Mode::Bulk`] the client then sends its payload and shuts down
//! its sending side; the server counts what it read and answers with that count as a big-endian
//! u64 (the confirmation), then closes. In [`Mode::Echo`] the parameter is the message size; the
//! server echoes each message of that size until the client shuts down its sending side.
//!
//! Every run prints JSON lines on stdout, one [`Report`] per line: a client prints exactly one;
//! a server prints `listening` once bound and `server_done` at the end.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Length of the connection header.
pub const HEADER_LEN: usize = 8;
/// Length of the server's byte-count confirmation at the end of a bulk transfer.
pub const CONFIRMATION_LEN: usize = 8;

const MAGIC: [u8; 2] = *b"AZ";
const VERSION: u8 = 1;
const MODE_BULK: u8 = 1;
const MODE_ECHO: u8 = 2;
const MODE_ASK: u8 = 3;

/// What the client of a TCP connection asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sink every byte, then confirm the count.
    Bulk,
    /// Echo messages of `size` bytes.
    Echo { size: u32 },
    /// Read the whole request (until the client shuts down its side), then answer `reply`
    /// bytes and close: one short request/response connection.
    Ask { reply: u32 },
}

/// The first 8 bytes of every TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header(pub Mode);

impl Header {
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let (mode, param) = match self.0 {
            Mode::Bulk => (MODE_BULK, 0),
            Mode::Echo { size } => (MODE_ECHO, size),
            Mode::Ask { reply } => (MODE_ASK, reply),
        };
        let p = param.to_be_bytes();
        [MAGIC[0], MAGIC[1], VERSION, mode, p[0], p[1], p[2], p[3]]
    }

    pub fn decode(bytes: [u8; HEADER_LEN]) -> Result<Header, String> {
        if bytes[..2] != MAGIC || bytes[2] != VERSION {
            return Err(format!(
                "not an azflow-traffic v{VERSION} header: {bytes:02x?}"
            ));
        }
        let param = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        match bytes[3] {
            MODE_BULK => Ok(Header(Mode::Bulk)),
            MODE_ECHO if param > 0 => Ok(Header(Mode::Echo { size: param })),
            MODE_ECHO => Err("echo mode with message size 0".to_owned()),
            MODE_ASK => Ok(Header(Mode::Ask { reply: param })),
            other => Err(format!("unknown mode {other}")),
        }
    }
}

/// One line of the tool's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    Listening(Listening),
    ServerDone(ServerDone),
    Bulk(BulkReport),
    Rr(RrReport),
    Udp(UdpReport),
    Ping(PingReport),
}

impl Report {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("reports serialize to JSON")
    }
}

/// A server is bound and accepting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listening {
    /// "tcp" or "udp".
    pub proto: String,
    /// The bound address, with the port the kernel chose if 0 was asked for.
    pub addr: SocketAddr,
}

/// A server's summary when it exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerDone {
    pub proto: String,
    pub addr: SocketAddr,
    /// TCP: one entry per connection, in the order they were accepted.
    pub connections: Vec<ConnectionSummary>,
    /// UDP: datagrams received.
    pub datagrams: u64,
    /// All bytes read from sockets (TCP payload including headers, or UDP payload).
    pub bytes_received: u64,
    /// All bytes written to sockets.
    pub bytes_sent: u64,
}

/// What one TCP connection carried, seen from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSummary {
    pub peer: SocketAddr,
    /// "bulk" or "echo".
    pub mode: String,
    /// Bytes read, including the 8-byte header.
    pub bytes_received: u64,
    /// Bytes written (the confirmation for bulk, the echoes for echo).
    pub bytes_sent: u64,
    /// Echo messages answered (0 for bulk).
    pub messages: u64,
}

/// Result of `azflow-traffic bulk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkReport {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Payload bytes asked for and sent after the header.
    pub payload_bytes: u64,
    /// All bytes written to the socket: header + payload.
    pub bytes_sent: u64,
    /// All bytes read from the socket: the confirmation.
    pub bytes_received: u64,
    /// The server's count of bytes it read after the header (equals `payload_bytes`, or the tool
    /// fails).
    pub confirmed_bytes: u64,
    pub elapsed_secs: f64,
    pub goodput_bits_per_sec: f64,
}

/// Result of `azflow-traffic rr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RrReport {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Round trips completed.
    pub count: u64,
    /// Size of each request and each response.
    pub size: u64,
    /// All bytes written: header + count × size.
    pub bytes_sent: u64,
    /// All bytes read: count × size.
    pub bytes_received: u64,
    pub elapsed_secs: f64,
    pub rtt_us: RttStats,
    /// The kernel's smoothed RTT (`tcp_info.tcpi_rtt`, as `ss -ti` shows it), sampled every 50
    /// round trips.
    #[serde(default)]
    pub kernel_srtt_us: RttStats,
}

/// Round-trip times in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RttStats {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl RttStats {
    /// Statistics of a set of samples in microseconds (all zero when empty).
    pub fn from_samples(samples: &mut [f64]) -> RttStats {
        if samples.is_empty() {
            return RttStats::default();
        }
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            let rank = (p * (samples.len() - 1) as f64).round() as usize;
            samples[rank.min(samples.len() - 1)]
        };
        RttStats {
            min: samples[0],
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
            p50: pct(0.50),
            p99: pct(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// Result of `azflow-traffic udp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpReport {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Datagrams asked for.
    pub count: u64,
    /// Payload size of each datagram.
    pub size: u64,
    /// Datagrams the kernel accepted.
    pub datagrams_sent: u64,
    /// Payload bytes the kernel accepted.
    pub bytes_sent: u64,
    /// Sends that failed (e.g. ECONNREFUSED after an ICMP port unreachable).
    pub send_errors: u64,
    pub elapsed_secs: f64,
}

/// Result of `azflow-traffic ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    pub targets: Vec<PingTarget>,
}

impl PingReport {
    /// Targets that answered none of their echo requests.
    pub fn silent(&self) -> Vec<IpAddr> {
        self.targets
            .iter()
            .filter(|t| t.received == 0)
            .map(|t| t.target)
            .collect()
    }
}

/// ICMP echo results for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingTarget {
    pub target: IpAddr,
    pub sent: u64,
    pub received: u64,
    /// Slowest answered round trip in microseconds (0 if none).
    pub max_rtt_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for mode in [
            Mode::Bulk,
            Mode::Echo { size: 1 },
            Mode::Echo { size: 65536 },
        ] {
            assert_eq!(Header::decode(Header(mode).encode()), Ok(Header(mode)));
        }
        assert!(Header::decode(*b"GET / HT").is_err());
        assert!(Header::decode([b'A', b'Z', 1, 2, 0, 0, 0, 0]).is_err());
        assert!(Header::decode([b'A', b'Z', 1, 9, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn report_lines_are_tagged() {
        let r = Report::Listening(Listening {
            proto: "tcp".into(),
            addr: "[fd00:0:0:1::10]:4000".parse().expect("valid address"),
        });
        let line = r.to_line();
        assert_eq!(
            line,
            r#"{"kind":"listening","proto":"tcp","addr":"[fd00:0:0:1::10]:4000"}"#
        );
        assert_eq!(
            serde_json::from_str::<Report>(&line).expect("parses back"),
            r
        );
    }

    #[test]
    fn rtt_stats() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = RttStats::from_samples(&mut samples);
        assert_eq!((s.min, s.max, s.p50, s.p99), (1.0, 100.0, 51.0, 99.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
    }
}
