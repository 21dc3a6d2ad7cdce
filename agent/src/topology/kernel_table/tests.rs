use agent_common::SUBNET_FLAG_UNMAPPED;

use super::*;
use crate::topology::model::{
    Source,
    tests::{host, net, subnet},
};

fn topo(vpc: &[&str], subnets: &[(&str, &str)]) -> Topology {
    let subnets = subnets
        .iter()
        .map(|(c, z)| subnet(c, z, Source::StaticFile));
    Topology::new(host("use1-az1", vpc), subnets)
}

fn class_at(t: &KernelTable, addr: &str) -> (String, TrafficClass, u8) {
    let addr: IpAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    let (prefix, info) = classify(t, addr).unwrap_or_else(|| panic!("{addr} unclassified"));
    (
        prefix.to_string(),
        TrafficClass::from_u8(info.class),
        info.flags,
    )
}

#[test]
fn slots_start_at_one_and_are_stable_across_refreshes() {
    let mut a = SlotAllocator::new(100);
    let k = |s: &str| SlotKey::Subnet(net(s));
    let first = a
        .refresh([k("10.0.1.0/24"), k("10.0.2.0/24")])
        .expect("fits");
    assert_eq!(first.values().copied().collect::<Vec<_>>(), [1, 2]);
    let second = a
        .refresh([k("10.0.3.0/24"), k("10.0.2.0/24")])
        .expect("fits");
    assert_eq!(second[&k("10.0.2.0/24")], 2);
    // Slot 1 was given up in this refresh: not reused until the next one.
    assert_eq!(second[&k("10.0.3.0/24")], 3);
    let third = a.refresh([k("10.0.3.0/24"), k("10.0.2.0/24"), k("10.0.4.0/24")]);
    let third = third.expect("fits");
    assert_eq!(third[&k("10.0.4.0/24")], 1);
    assert_eq!(third[&k("10.0.3.0/24")], 3);
    assert_eq!(a.slot(&k("10.0.1.0/24")), None);
}

#[test]
fn too_many_slots_is_a_clear_error_and_changes_nothing() {
    let mut a = SlotAllocator::new(3); // slots 1 and 2
    let k = |s: &str| SlotKey::Subnet(net(s));
    a.refresh([k("10.0.1.0/24"), k("10.0.2.0/24")])
        .expect("fits");
    let e = a
        .refresh([k("10.0.1.0/24"), k("10.0.3.0/24")])
        .expect_err("2 is cooling");
    assert_eq!(
        e,
        KernelTableError::SlotsExhausted {
            needed: 2,
            usable: 2,
            cooling: 1
        }
    );
    assert!(e.to_string().contains("raise --max-subnets"), "{e}");
    assert_eq!(
        a.slot(&k("10.0.2.0/24")),
        Some(2),
        "unchanged after the error"
    );
    let e = a.refresh([k("10.0.1.0/24"), k("10.0.2.0/24"), k("10.0.3.0/24")]);
    assert!(
        matches!(e, Err(KernelTableError::SlotsExhausted { needed: 3, .. })),
        "{e:?}"
    );
}

#[test]
fn zone_indexes_are_stable_and_never_zone_none() {
    let mut z = ZoneTable::new();
    assert_eq!(z.index("use1-az1", "us-east-1a"), Ok(0));
    assert_eq!(z.index("use1-az2", "us-east-1b"), Ok(1));
    assert_eq!(z.index("use1-az1", "us-east-1a"), Ok(0));
    assert_eq!(z.get(1), Some(("use1-az2", "us-east-1b")));
    let mut full = ZoneTable::new();
    for i in 0..usize::from(ZONE_NONE) {
        full.index(&format!("z{i}"), "n").expect("fits");
    }
    assert!(matches!(
        full.index("one-more", "n"),
        Err(KernelTableError::ZonesExhausted { .. })
    ));
}

#[test]
fn most_specific_prefix_wins() {
    let t = topo(
        &["10.0.0.0/16", "2600:1f18:1::/56"],
        &[
            ("10.0.1.0/24", "use1-az1"),
            ("10.0.2.0/24", "use1-az2"),
            ("2600:1f18:1:1::/64", "use1-az2"),
        ],
    );
    let kt = build_kernel_table(&t, &mut SlotAllocator::new(100), &mut ZoneTable::new())
        .expect("builds");
    let u = SUBNET_FLAG_UNMAPPED;
    assert_eq!(
        class_at(&kt, "10.0.1.9"),
        ("10.0.1.0/24".into(), TrafficClass::SameAz, 0)
    );
    assert_eq!(
        class_at(&kt, "10.0.2.9"),
        ("10.0.2.0/24".into(), TrafficClass::CrossAz, 0)
    );
    assert_eq!(
        class_at(&kt, "10.0.9.9"),
        ("10.0.0.0/16".into(), TrafficClass::Unknown, u)
    );
    assert_eq!(
        class_at(&kt, "10.1.0.1"),
        ("10.0.0.0/8".into(), TrafficClass::CrossVpc, u)
    );
    assert_eq!(
        class_at(&kt, "8.8.8.8"),
        ("0.0.0.0/0".into(), TrafficClass::Internet, u)
    );
    assert_eq!(
        class_at(&kt, "127.0.0.1"),
        ("127.0.0.0/8".into(), TrafficClass::Unknown, 0)
    );
    assert_eq!(class_at(&kt, "169.254.169.254").2, 0);
    assert_eq!(class_at(&kt, "2600:1f18:1:1::5").1, TrafficClass::CrossAz);
    assert_eq!(class_at(&kt, "2600:1f18:1:2::5").1, TrafficClass::Unknown);
    assert_eq!(class_at(&kt, "2a00::1").1, TrafficClass::Internet);
    assert_eq!(
        class_at(&kt, "::1"),
        ("::1/128".into(), TrafficClass::Unknown, 0)
    );
    assert_eq!(class_at(&kt, "fd12::1").1, TrafficClass::CrossVpc);
}

#[test]
fn catch_alls_share_one_slot_per_bucket_and_subnets_get_zones() {
    let t = topo(
        &["10.0.0.0/16"],
        &[("10.0.1.0/24", "use1-az1"), ("fd00:1::/64", "use1-az2")],
    );
    let kt = build_kernel_table(&t, &mut SlotAllocator::new(100), &mut ZoneTable::new())
        .expect("builds");
    let slot_of = |addr: &str| classify(&kt, addr.parse().expect("addr")).expect("hit").1;
    assert_eq!(
        slot_of("8.8.8.8").slot,
        slot_of("2a00::1").slot,
        "one internet slot"
    );
    assert_eq!(
        slot_of("172.16.0.1").slot,
        slot_of("fd99::1").slot,
        "one cross_vpc slot"
    );
    assert_eq!(
        slot_of("127.0.0.1").slot,
        slot_of("fe80::1").slot,
        "one local slot"
    );
    assert_eq!(slot_of("8.8.8.8").zone_idx, ZONE_NONE);
    assert_ne!(slot_of("10.0.1.1").zone_idx, slot_of("fd00:1::1").zone_idx);
    // 4 catch-all buckets + 2 subnets, all labelled.
    assert_eq!(kt.slots.len(), 6);
    assert!(kt.slots.keys().all(|&s| s != SLOT_NO_MATCH));
    let internet = &kt.slots[&slot_of("8.8.8.8").slot];
    assert_eq!(
        (internet.dst_zone.as_str(), internet.kind),
        ("internet", SlotKind::CatchAll)
    );
    assert_eq!(internet.subnet, None);
    let local = &kt.slots[&slot_of("127.0.0.1").slot];
    assert_eq!(
        (local.dst_zone_id.as_str(), local.class),
        ("local", TrafficClass::Unknown)
    );
    let sub = &kt.slots[&slot_of("10.0.1.1").slot];
    assert_eq!(sub.subnet, Some(net("10.0.1.0/24")));
    assert_eq!(
        (sub.dst_zone_id.as_str(), sub.class),
        ("use1-az1", TrafficClass::SameAz)
    );
}

#[test]
fn a_subnet_equal_to_a_catch_all_prefix_replaces_it() {
    let t = topo(&["10.0.0.0/16"], &[("10.0.0.0/16", "use1-az2")]);
    let kt = build_kernel_table(&t, &mut SlotAllocator::new(100), &mut ZoneTable::new())
        .expect("builds");
    assert_eq!(
        kt.v4
            .iter()
            .filter(|(n, _)| n.to_string() == "10.0.0.0/16")
            .count(),
        1
    );
    assert_eq!(
        class_at(&kt, "10.0.5.5"),
        ("10.0.0.0/16".into(), TrafficClass::CrossAz, 0)
    );
}

#[test]
fn refresh_keeps_slots_and_diff_upserts_before_deleting() {
    let mut slots = SlotAllocator::new(100);
    let mut zones = ZoneTable::new();
    let old_t = topo(
        &["10.0.0.0/16"],
        &[("10.0.1.0/24", "use1-az1"), ("10.0.2.0/24", "use1-az2")],
    );
    let old = build_kernel_table(&old_t, &mut slots, &mut zones).expect("builds");
    let new_t = topo(
        &["10.0.0.0/16"],
        &[("10.0.2.0/24", "use1-az3"), ("10.0.3.0/24", "use1-az1")],
    );
    let new = build_kernel_table(&new_t, &mut slots, &mut zones).expect("builds");
    let info = |t: &KernelTable, s: &str| {
        t.v4.iter()
            .find(|(n, _)| n.to_string() == s)
            .map(|(_, i)| *i)
            .expect("present")
    };
    assert_eq!(
        info(&old, "10.0.2.0/24").slot,
        info(&new, "10.0.2.0/24").slot
    );
    assert_eq!(info(&old, "0.0.0.0/0").slot, info(&new, "0.0.0.0/0").slot);
    assert_ne!(
        info(&new, "10.0.3.0/24").slot,
        info(&old, "10.0.1.0/24").slot
    );

    let (up, del) = diff(&old, &new);
    let up4: Vec<String> = up.v4.iter().map(|(n, _)| n.to_string()).collect();
    // 10.0.2.0/24 changed zone (same slot, new zone index); 10.0.3.0/24 is new.
    assert_eq!(up4, ["10.0.2.0/24", "10.0.3.0/24"]);
    assert_eq!(
        del.v4,
        [net("10.0.1.0/24")].map(|n| match n {
            IpNet::V4(n) => n,
            IpNet::V6(_) => panic!("v4"),
        })
    );
    assert!(up.v6.is_empty() && del.v6.is_empty());
    let (up, del) = diff(&new, &new);
    assert!(up.is_empty() && del.is_empty());
}

#[test]
fn capacity_is_checked_per_family() {
    let t = topo(&[], &[("10.0.1.0/24", "use1-az1")]);
    let kt = build_kernel_table(&t, &mut SlotAllocator::new(100), &mut ZoneTable::new())
        .expect("builds");
    assert_eq!(kt.check_capacity(kt.v4.len() as u32), Ok(()));
    let e = kt.check_capacity(3).expect_err("too small");
    assert!(
        matches!(e, KernelTableError::TooManyPrefixes { family: 4, .. }),
        "{e}"
    );
}

#[test]
fn a_failed_build_changes_neither_allocator() {
    let t = topo(
        &[],
        &[("10.0.1.0/24", "use1-az1"), ("10.0.2.0/24", "use1-az2")],
    );
    let mut slots = SlotAllocator::new(4); // 3 slots, the table needs 4 catch-alls' worth
    let mut zones = ZoneTable::new();
    let e = build_kernel_table(&t, &mut slots, &mut zones).expect_err("too small");
    assert!(matches!(e, KernelTableError::SlotsExhausted { .. }), "{e}");
    assert!(zones.is_empty());
    assert_eq!(slots.slot(&SlotKey::CatchAll(CatchAll::Internet)), None);
}
