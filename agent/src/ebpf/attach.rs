//! Attaching the cgroup_skb programs; links detach when [`Attached`] is dropped.

use std::{fs::File, path::Path};

use agent_common::prog_names;
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError},
};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("opening cgroup {path}: {source}; pass --cgroup with a cgroup v2 directory")]
    OpenCgroup { path: String, source: std::io::Error },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("program {name}: {}", chain(source))]
    Program { name: &'static str, source: ProgramError },
}

/// Proof of attachment; the programs (and so their links) live in the [`Ebpf`] it borrows from.
#[derive(Debug)]
pub struct Attached {
    pub cgroup: String,
}

pub fn attach(ebpf: &mut Ebpf, cgroup: &Path) -> Result<Attached, AttachError> {
    attach_programs(
        ebpf,
        cgroup,
        &[(prog_names::EGRESS, CgroupSkbAttachType::Egress), (prog_names::INGRESS, CgroupSkbAttachType::Ingress)],
    )
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
    Ok(Attached { cgroup: path })
}

fn attach_programs(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    programs: &[(&'static str, CgroupSkbAttachType)],
) -> Result<Attached, AttachError> {
    let path = cgroup.display().to_string();
    let file = File::open(cgroup).map_err(|source| AttachError::OpenCgroup { path: path.clone(), source })?;
    for &(name, kind) in programs {
        let program: &mut CgroupSkb = ebpf
            .program_mut(name)
            .ok_or(AttachError::MissingProgram(name))?
            .try_into()
            .map_err(|source| AttachError::Program { name, source })?;
        program.load().map_err(|source| AttachError::Program { name, source })?;
        // On kernels with BPF links (≥ 5.7) a link always coexists with other programs on the
        // cgroup and the kernel rejects any flag; `Single` is aya's "no flag".
        program
            .attach(&file, kind, CgroupAttachMode::Single)
            .map_err(|source| AttachError::Program { name, source })?;
    }
    Ok(Attached { cgroup: path })
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
