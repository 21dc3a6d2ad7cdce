//! The bed as an azflow static topology: zones a, b, c mapped to test AZs (v4 and v6), zone x
//! left out so its traffic is "unmapped", the VPC CIDRs known.

use std::fmt::Write as _;

use crate::{Family, TestBed, Zone, addressing};

/// Test AZ name and ID of a bed zone (`None` for the unmapped zone x).
pub fn zone_labels(zone: Zone) -> Option<(&'static str, &'static str)> {
    match zone {
        Zone::A => Some(("us-test-1a", "tst1-az1")),
        Zone::B => Some(("us-test-1b", "tst1-az2")),
        Zone::C => Some(("us-test-1c", "tst1-az3")),
        Zone::X => None,
    }
}

impl TestBed {
    /// A topology file's text for this bed, with the monitored host's zone as the host's AZ.
    pub fn topology_toml(&self) -> String {
        let (zone, id) = zone_labels(self.monitored().zone()).unwrap_or(("unmapped", "unmapped"));
        let mut s = format!(
            "[host]\nregion = \"us-test-1\"\nzone = \"{zone}\"\nzone_id = \"{id}\"\nvpc_cidrs = [\"{}\", \"{}\"]\n\n",
            addressing::vpc_v4(),
            addressing::vpc_v6()
        );
        for z in [Zone::A, Zone::B, Zone::C] {
            let Some((zone, id)) = zone_labels(z) else { continue };
            for net in [z.subnet(Family::V4), z.subnet(Family::V6)] {
                let _ = writeln!(s, "[[subnet]]\ncidr = \"{net}\"\nzone = \"{zone}\"\nzone_id = \"{id}\"\n");
            }
        }
        s
    }
}
