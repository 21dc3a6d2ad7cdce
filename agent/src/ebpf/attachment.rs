//! Are our programs still attached? Asked of the kernel (`BPF_PROG_QUERY` on the cgroup), not of
//! our own bookkeeping: a link detached by `bpftool link detach`, `azflow uninstall` or a removed
//! cgroup leaves the agent running but counting nothing, and `/readyz` must say so.

use std::{fs::File, io, os::fd::AsRawFd as _, path::Path, sync::Arc};

use agent_common::prog_names;
use aya::Ebpf;

const BPF_PROG_QUERY: libc::c_long = 16;
/// `enum bpf_attach_type` values (stable kernel ABI).
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_CGROUP_SOCK_OPS: u32 = 3;
/// Far more programs than any cgroup hook carries in practice; a longer list is cut (ENOSPC)
/// and then read as "not found", which errs on the side of "not ready".
const MAX_QUERY: usize = 64;

/// Our three programs' ids and the cgroup they were attached to. Cheap to clone and to check.
#[derive(Debug, Clone)]
pub struct AttachmentCheck {
    cgroup: Arc<File>,
    expected: Vec<(&'static str, u32, u32)>,
}

impl AttachmentCheck {
    /// Reads the ids of the programs `attach` just attached to `cgroup`.
    pub fn new(ebpf: &Ebpf, cgroup: &Path) -> io::Result<Self> {
        let cgroup = Arc::new(File::open(cgroup)?);
        let mut expected = Vec::new();
        for (name, attach_type) in [
            (prog_names::EGRESS, BPF_CGROUP_INET_EGRESS),
            (prog_names::INGRESS, BPF_CGROUP_INET_INGRESS),
            (prog_names::SOCK_OPS, BPF_CGROUP_SOCK_OPS),
        ] {
            let program = ebpf
                .program(name)
                .ok_or_else(|| io::Error::other(format!("program {name} is missing")))?;
            let id = program
                .info()
                .map_err(|e| io::Error::other(format!("program {name}: {e}")))?
                .id();
            expected.push((name, attach_type, id));
        }
        Ok(Self { cgroup, expected })
    }

    /// `Err` names the first program the kernel no longer runs on the cgroup.
    pub fn verify(&self) -> Result<(), String> {
        for (name, attach_type, id) in &self.expected {
            match query(&self.cgroup, *attach_type) {
                Ok(ids) if ids.contains(id) => {}
                Ok(_) => {
                    return Err(format!(
                        "program {name} (id {id}) is detached from the cgroup"
                    ));
                }
                Err(e) => return Err(format!("cannot query the cgroup's programs: {e}")),
            }
        }
        Ok(())
    }
}

/// Ids of the programs attached directly to `cgroup` at `attach_type`.
fn query(cgroup: &File, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; MAX_QUERY];
    // union bpf_attr, query: target_fd u32 @0, attach_type u32 @4, query_flags u32 @8,
    // attach_flags u32 @12 (out), prog_ids u64 @16, prog_cnt u32 @24 (in: room, out: count);
    // the rest (link ids, revision) stays zero: not asked for.
    let mut attr = [0u8; 64];
    attr[..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&attach_type.to_ne_bytes());
    attr[16..24].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&(MAX_QUERY as u32).to_ne_bytes());
    // SAFETY: `attr` is a zero-padded bpf_attr for BPF_PROG_QUERY whose prog_ids points at `ids`,
    // which holds prog_cnt u32s and outlives the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut count = [0u8; 4];
    count.copy_from_slice(&attr[24..28]);
    let count = (u32::from_ne_bytes(count) as usize).min(MAX_QUERY);
    Ok(ids[..count].to_vec())
}
