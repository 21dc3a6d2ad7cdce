//! The ledger's records and their encoding (postcard: compact, so the per-drain record of a host
//! with thousands of busy subnets stays a few pages; versioned, so an agent never misreads a
//! record of another format and starts afresh instead).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::topology::{Billing, SlotAllocator, SlotLabels, ZoneTable};

/// Bumped whenever a record's shape changes.
pub const FORMAT: u32 = 1;

/// The kernel table as the agent that wrote it understood it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableState {
    /// The kernel generation this table was published as.
    pub generation: u32,
    pub slots: SlotAllocator,
    pub zones: ZoneTable,
    pub labels: BTreeMap<u32, SlotLabels>,
}

/// [`TableState`] as written: borrowed, so recording a large table does not copy it first (the
/// same fields in the same order, which is all postcard encodes).
#[derive(Serialize)]
pub struct TableRecord<'a> {
    pub generation: u32,
    pub slots: &'a SlotAllocator,
    pub zones: &'a ZoneTable,
    pub labels: &'a BTreeMap<u32, SlotLabels>,
}

/// One exported total: its labels (as `snapshot::FlowKey`) and `[bytes, packets]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalKey {
    pub direction: u8,
    pub dst_zone: String,
    pub dst_zone_id: String,
    pub class: u8,
    pub billing: Billing,
}

/// A per-subnet total's subnet: 0 none (catch-all), 1 a CIDR, 2 the overflow series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubnetKey {
    None,
    Cidr(ipnet::IpNet),
    Overflow,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetState {
    pub cap: u64,
    pub series: u64,
    pub totals: Vec<(TotalKey, SubnetKey, [u64; 2])>,
    pub refused: Vec<(ipnet::IpNet, u8)>,
}

/// What the drains had credited: each slot's counters as last read (`[tx bytes, tx packets,
/// rx bytes, rx packets]`; a slot not listed read zero) and the totals built from them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccState {
    pub generation: u32,
    pub last: Vec<(u32, [u64; 4])>,
    pub totals: Vec<(TotalKey, [u64; 2])>,
    pub subnets: Option<SubnetState>,
    /// NAT-held bytes user space credited as unresolved, `[tx bytes, tx packets, rx bytes, rx
    /// packets]`.
    pub nat_unresolved: [u64; 4],
}

/// Both records, as read back by a new agent.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub table: TableState,
    pub acc: AccState,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("written in ledger format {0}, this agent reads format {FORMAT}")]
    Format(u32),
    #[error("unreadable: {0}")]
    Corrupt(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = FORMAT.to_le_bytes().to_vec();
    out.extend(postcard::to_allocvec(value)?);
    Ok(out)
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (head, body) = bytes.split_at_checked(4).ok_or(DecodeError::Corrupt(postcard::Error::DeserializeUnexpectedEnd))?;
    let format = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if format != FORMAT {
        return Err(DecodeError::Format(format));
    }
    Ok(postcard::from_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{LabelSet, SlotKey, SlotKind};
    use agent_common::TrafficClass;

    #[test]
    fn records_round_trip_and_other_formats_are_refused() {
        let mut slots = SlotAllocator::new(64);
        let net: ipnet::IpNet = "10.0.2.0/24".parse().expect("net");
        let assigned = slots.refresh([SlotKey::Subnet(net)]).expect("slots");
        let mut zones = ZoneTable::new();
        zones.index("use1-az2", "us-east-1b").expect("zone");
        let label = SlotLabels {
            set: std::sync::Arc::new(LabelSet {
                dst_zone: "us-east-1b".into(),
                dst_zone_id: "use1-az2".into(),
                class: TrafficClass::CrossAz,
                billing: Billing::default(),
            }),
            subnet: Some(net),
            kind: SlotKind::Subnet,
        };
        let table = TableState { generation: 7, slots, zones, labels: assigned.values().map(|s| (*s, label.clone())).collect() };
        let bytes = encode(&table).expect("encode");
        let borrowed = TableRecord { generation: 7, slots: &table.slots, zones: &table.zones, labels: &table.labels };
        assert_eq!(encode(&borrowed).expect("encode"), bytes, "the borrowed record encodes as the owned one");
        let back: TableState = decode(&bytes).expect("decode");
        assert_eq!(back.generation, 7);
        assert_eq!(back.labels.values().next(), Some(&label));
        assert_eq!(back.slots.slot(&SlotKey::Subnet(net)), assigned.values().next().copied());
        assert_eq!(back.zones.get(0), Some(("use1-az2", "us-east-1b")));

        let acc = AccState { generation: 3, last: vec![(1, [10, 1, 20, 2])], nat_unresolved: [1, 2, 3, 4], ..AccState::default() };
        assert_eq!(decode::<AccState>(&encode(&acc).expect("encode")).expect("decode"), acc);

        let mut other = encode(&acc).expect("encode");
        other[0] = 9;
        assert!(matches!(decode::<AccState>(&other), Err(DecodeError::Format(9))));
        assert!(decode::<AccState>(&[1, 0]).is_err());
        assert!(decode::<AccState>(&encode(&acc).expect("encode")[..6]).is_err());
    }
}
