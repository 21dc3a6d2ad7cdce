//! cgroup paths as the walk reads them: any path names a workload (or the host) without a panic,
//! a container reference carries an id, and a pod name gives an owner.

#![no_main]

use azflow::workloads::{
    identity::{RuntimeInfo, container_ref, identify},
    owner::owner_from_name,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(c) = container_ref(path) {
        assert!(!c.id.is_empty(), "a container reference without an id: {path:?}");
    }
    for info in [RuntimeInfo::NotFound, RuntimeInfo::Unreadable] {
        for depth in [0, 1, 3, 64] {
            let _ = identify(path, &info, depth);
        }
    }
    let _ = owner_from_name(path.rsplit('/').next().unwrap_or(path));
});
