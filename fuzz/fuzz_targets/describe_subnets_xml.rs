//! EC2 `DescribeSubnets` pages and error documents: any text parses to a value or an error.

#![no_main]

use azflow::topology::aws::xml::{parse_describe_subnets, parse_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(page) = parse_describe_subnets(text) {
        // What the parser accepted is usable: every subnet has a CIDR and an AZ ID.
        for s in &page.subnets {
            assert!(s.cidr_v4.is_some() || !s.cidrs_v6.is_empty());
            assert!(!s.zone_id.is_empty() && !s.subnet_id.is_empty());
        }
    }
    let _ = parse_error(text);
});
