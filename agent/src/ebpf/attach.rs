//! Attaching the programs to a cgroup. Unpinned, links detach when the loaded object is dropped.
//! Pinned, each link lives in the pin directory: an existing one (from the previous agent) gets
//! the new program swapped in atomically, a missing one is created and pinned.

use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use agent_common::prog_names;
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, SockOps, links::FdLink},
};

use super::pin::{self, PinDir};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("opening cgroup {path}: {source}; pass --cgroup with a cgroup v2 directory")]
    OpenCgroup { path: String, source: std::io::Error },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("program {name}: {}", chain(source))]
    Program { name: &'static str, source: ProgramError },
    #[error("pinned link of {name} at {path}: {source}")]
    Pin { name: &'static str, path: String, source: std::io::Error },
}

/// Where the programs are attached and how.
#[derive(Debug)]
pub struct Attached {
    pub cgroup: String,
    /// Links that existed and got the new programs (a restart adopting the previous agent's).
    pub adopted_links: usize,
}

enum Kind {
    Skb(CgroupSkbAttachType),
    SockOps,
}

pub fn attach(ebpf: &mut Ebpf, cgroup: &Path, pins: Option<&PinDir>) -> Result<Attached, AttachError> {
    let path = cgroup.display().to_string();
    let file = File::open(cgroup).map_err(|source| AttachError::OpenCgroup { path: path.clone(), source })?;
    let mut adopted_links = 0;
    for (name, kind) in [
        (prog_names::EGRESS, Kind::Skb(CgroupSkbAttachType::Egress)),
        (prog_names::INGRESS, Kind::Skb(CgroupSkbAttachType::Ingress)),
        (prog_names::SOCK_OPS, Kind::SockOps),
    ] {
        if attach_one(ebpf, name, kind, &file, cgroup, pins)? {
            adopted_links += 1;
        }
    }
    Ok(Attached { cgroup: path, adopted_links })
}

/// Returns whether an existing pinned link was adopted.
fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    kind: Kind,
    file: &File,
    cgroup: &Path,
    pins: Option<&PinDir>,
) -> Result<bool, AttachError> {
    let prog_err = |source| AttachError::Program { name, source };
    let program = ebpf.program_mut(name).ok_or(AttachError::MissingProgram(name))?;
    // On kernels with BPF links (≥ 5.7) a link always coexists with other programs on the
    // cgroup and the kernel rejects any flag; `Single` is aya's "no flag".
    let mode = CgroupAttachMode::Single;
    match kind {
        Kind::Skb(_) => <&mut CgroupSkb>::try_from(&mut *program).map_err(prog_err)?.load().map_err(prog_err)?,
        Kind::SockOps => <&mut SockOps>::try_from(&mut *program).map_err(prog_err)?.load().map_err(prog_err)?,
    }
    let Some(pins) = pins else {
        // The program keeps the link; it detaches when the loaded object is dropped.
        match kind {
            Kind::Skb(t) => {
                <&mut CgroupSkb>::try_from(program).map_err(prog_err)?.attach(file, t, mode).map_err(prog_err)?;
            }
            Kind::SockOps => {
                <&mut SockOps>::try_from(program).map_err(prog_err)?.attach(file, mode).map_err(prog_err)?;
            }
        }
        return Ok(false);
    };
    let link_path = pins.link_path(name);
    let pin_err = |source| AttachError::Pin { name, path: link_path.display().to_string(), source };
    if link_path.exists() {
        let link = pin::open_pinned(&link_path).map_err(pin_err)?;
        let same_cgroup = pin::link_cgroup_id(&link).ok() == pin::cgroup_id(cgroup).ok();
        if same_cgroup {
            let fd = program.fd().map_err(prog_err)?.as_fd().as_raw_fd();
            pin::link_update(&link, fd).map_err(pin_err)?;
            return Ok(true);
        }
        // Pinned for another cgroup: that link goes (its programs detach), a new one is made.
        tracing::warn!(link = %link_path.display(), "pinned link belongs to another cgroup; replacing it");
        std::fs::remove_file(&link_path).map_err(pin_err)?;
    }
    let link: FdLink = match kind {
        Kind::Skb(t) => {
            let p = <&mut CgroupSkb>::try_from(program).map_err(prog_err)?;
            let id = p.attach(file, t, mode).map_err(prog_err)?;
            FdLink::try_from(p.take_link(id).map_err(prog_err)?).map_err(|e| pin_err(std::io::Error::other(e)))?
        }
        Kind::SockOps => {
            let p = <&mut SockOps>::try_from(program).map_err(prog_err)?;
            let id = p.attach(file, mode).map_err(prog_err)?;
            FdLink::try_from(p.take_link(id).map_err(prog_err)?).map_err(|e| pin_err(std::io::Error::other(e)))?
        }
    };
    link.pin(&link_path).map_err(|e| pin_err(std::io::Error::other(e)))?;
    Ok(false)
}

/// The benchmark's baseline: the do-nothing program on both directions.
pub fn attach_bench_baseline(ebpf: &mut Ebpf, cgroup: &Path) -> Result<Attached, AttachError> {
    let name = prog_names::BENCH_EMPTY;
    let program: &mut CgroupSkb = ebpf
        .program_mut(name)
        .ok_or(AttachError::MissingProgram(name))?
        .try_into()
        .map_err(|source| AttachError::Program { name, source })?;
    program.load().map_err(|source| AttachError::Program { name, source })?;
    let path = cgroup.display().to_string();
    let file = File::open(cgroup).map_err(|source| AttachError::OpenCgroup { path: path.clone(), source })?;
    for kind in [CgroupSkbAttachType::Egress, CgroupSkbAttachType::Ingress] {
        program
            .attach(&file, kind, CgroupAttachMode::Single)
            .map_err(|source| AttachError::Program { name, source })?;
    }
    Ok(Attached { cgroup: path, adopted_links: 0 })
}

/// An error and its causes on one line ("`bpf_link_create` failed: Invalid argument").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
