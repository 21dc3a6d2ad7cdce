//! Interface counters, read from the kernel independently of any agent.

use std::ops::Sub;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The Ethernet header that veth counts in `rx_bytes`/`tx_bytes` on top of each L3 packet.
pub const ETHERNET_HEADER_LEN: u64 = 14;

/// Byte and packet counters of one interface (as in /proc/net/dev or `ip -s link`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl IfCounters {
    /// Received L3 bytes: `rx_bytes − 14 × rx_packets`. On a receiver behind the bed's router this
    /// is the IP-level wire byte count (every packet is at most MTU-sized there).
    pub fn l3_rx_bytes(&self) -> u64 {
        self.rx_bytes
            .saturating_sub(ETHERNET_HEADER_LEN * self.rx_packets)
    }

    /// Sent L3 bytes: `tx_bytes − 14 × tx_packets`. On a sending host this counts GSO
    /// super-packets at their full length, which is *not* the wire count.
    pub fn l3_tx_bytes(&self) -> u64 {
        self.tx_bytes
            .saturating_sub(ETHERNET_HEADER_LEN * self.tx_packets)
    }

    /// What changed from `before` to `after` (also written `after - before`). Counters only
    /// grow; a field that shrank (the interface was recreated) yields 0 there.
    pub fn delta(before: &IfCounters, after: &IfCounters) -> IfCounters {
        IfCounters {
            rx_bytes: after.rx_bytes.saturating_sub(before.rx_bytes),
            rx_packets: after.rx_packets.saturating_sub(before.rx_packets),
            tx_bytes: after.tx_bytes.saturating_sub(before.tx_bytes),
            tx_packets: after.tx_packets.saturating_sub(before.tx_packets),
        }
    }

    /// Average received frame length in bytes (0 without packets).
    pub fn avg_rx_frame(&self) -> f64 {
        if self.rx_packets == 0 {
            0.0
        } else {
            self.rx_bytes as f64 / self.rx_packets as f64
        }
    }

    /// Parses the line of `iface` in the text of /proc/net/dev.
    pub fn parse_proc_net_dev(text: &str, iface: &str) -> Result<IfCounters> {
        for line in text.lines() {
            let Some((name, values)) = line.split_once(':') else {
                continue;
            };
            if name.trim() != iface {
                continue;
            }
            let v: Vec<u64> = values
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("non-numeric counter in {line:?}"))?;
            if v.len() < 10 {
                bail!("too few counters in {line:?}");
            }
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets …
            return Ok(IfCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                tx_bytes: v[8],
                tx_packets: v[9],
            });
        }
        bail!("no interface {iface:?} in /proc/net/dev:\n{text}")
    }
}

impl Sub for IfCounters {
    type Output = IfCounters;

    /// `after - before`, see [`IfCounters::delta`].
    fn sub(self, before: IfCounters) -> IfCounters {
        IfCounters::delta(&before, &self)
    }
}

/// A host's TCP segment counters (the `Tcp:` line of /proc/net/snmp in its namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCounters {
    /// Segments received, including those received in error.
    pub in_segs: u64,
    /// Segments sent, excluding retransmissions.
    pub out_segs: u64,
    /// Segments retransmitted.
    pub retrans_segs: u64,
}

impl TcpCounters {
    /// What changed from `before` to `after` (also written `after - before`).
    pub fn delta(before: &TcpCounters, after: &TcpCounters) -> TcpCounters {
        TcpCounters {
            in_segs: after.in_segs.saturating_sub(before.in_segs),
            out_segs: after.out_segs.saturating_sub(before.out_segs),
            retrans_segs: after.retrans_segs.saturating_sub(before.retrans_segs),
        }
    }

    /// Parses the text of /proc/net/snmp.
    pub fn parse_proc_net_snmp(text: &str) -> Result<TcpCounters> {
        let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
        let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
            bail!("no Tcp: lines in /proc/net/snmp:\n{text}");
        };
        let field = |wanted: &str| -> Result<u64> {
            let i = names
                .split_whitespace()
                .position(|n| n == wanted)
                .with_context(|| format!("no {wanted} in {names:?}"))?;
            values
                .split_whitespace()
                .nth(i)
                .with_context(|| format!("no value for {wanted} in {values:?}"))?
                .parse()
                .with_context(|| format!("{wanted} in {values:?}"))
        };
        Ok(TcpCounters {
            in_segs: field("InSegs")?,
            out_segs: field("OutSegs")?,
            retrans_segs: field("RetransSegs")?,
        })
    }
}

impl Sub for TcpCounters {
    type Output = TcpCounters;

    fn sub(self, before: TcpCounters) -> TcpCounters {
        TcpCounters::delta(&before, &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 50766880   33578    0    0    0     0          0         0    59069     890    0    0    0     0       0          0
";

    #[test]
    fn parses_and_derives() {
        let c = IfCounters::parse_proc_net_dev(SAMPLE, "eth0").expect("eth0 is there");
        assert_eq!(
            c,
            IfCounters {
                rx_bytes: 50_766_880,
                rx_packets: 33_578,
                tx_bytes: 59_069,
                tx_packets: 890
            }
        );
        assert_eq!(c.l3_rx_bytes(), 50_766_880 - 14 * 33_578);
        let zero = IfCounters::default();
        assert_eq!(c - zero, c);
        assert_eq!(IfCounters::delta(&c, &zero), zero);
        assert_eq!(IfCounters::delta(&zero, &c), c);
        assert!(IfCounters::parse_proc_net_dev(SAMPLE, "eth1").is_err());
    }

    #[test]
    fn parses_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 2 64\n\
                    Tcp: RtoAlgorithm RtoMin ActiveOpens InSegs OutSegs RetransSegs\n\
                    Tcp: 1 200 3 100 90 7\n";
        assert_eq!(
            TcpCounters::parse_proc_net_snmp(text).expect("parses"),
            TcpCounters {
                in_segs: 100,
                out_segs: 90,
                retrans_segs: 7
            }
        );
    }
}
