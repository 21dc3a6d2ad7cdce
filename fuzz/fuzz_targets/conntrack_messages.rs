//! Conntrack netlink messages (dump replies and events): any bytes parse to messages or an error,
//! and every entry the parser accepts has tuples of one address family.

#![no_main]

use azflow::nat::{ctnetlink::{Message, parse_buffer}, resolver::writes_for};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = parse_buffer(data) {
        for m in messages {
            if let Message::Entry(e) = m {
                assert_eq!(e.orig.src.is_ipv4(), e.orig.dst.is_ipv4());
                assert_eq!(e.reply.src.is_ipv4(), e.reply.dst.is_ipv4());
                for (key, target) in writes_for(&e) {
                    assert!(key.family == 4 || key.family == 6);
                    assert!(target.family == 4 || target.family == 6);
                }
            }
        }
    }
});
