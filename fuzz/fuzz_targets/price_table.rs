//! The price table: any text gives prices or problems, each with a position.

#![no_main]

use std::path::Path;

use azflow::{pricing::parse_str, topology::paths::Charge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_str(text, Path::new("fuzz.toml")) {
        Ok(book) => {
            let t = book.for_region(Some("us-east-1"));
            assert!(t.bytes_per_gb() > 0);
            // Every accepted price is at most $100/GB.
            for c in Charge::ALL {
                assert!(t.charge(c).iter().all(|n| *n <= 100_000_000_000));
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            let text = e.to_string();
            for line in text.lines() {
                let mut parts = line.splitn(3, ':');
                let _file = parts.next();
                let n: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
                assert!(n >= 1 && n <= lines + 1, "{line}");
            }
        }
    }
});
