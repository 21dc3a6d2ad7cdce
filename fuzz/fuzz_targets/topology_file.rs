//! The static topology file: any text gives a topology or problems, each with a position.

#![no_main]

use std::path::Path;

use azflow::topology::static_file::parse_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_str(text, Path::new("fuzz.toml")) {
        Ok(t) => assert!(t.subnets().windows(2).all(|w| w[0].cidr < w[1].cidr)),
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!(
                e.problems()
                    .iter()
                    .all(|p| p.line >= 1 && p.line <= lines + 1),
                "{e}"
            );
            let _ = e.to_string();
        }
    }
});
