//! Pinned maps and links under `<root>/v<SCHEMA>`, so a restarted (or upgraded) agent adopts the
//! running counters instead of starting over: maps are reused by path, and each pinned link gets
//! the new program swapped in atomically (`BPF_LINK_UPDATE`) — no moment without a program, and
//! no moment with two. A directory of another schema version is never read: it is removed.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use agent_common::SCHEMA_VERSION;

pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/azflow";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("--pin-path {0}: not on a BPF filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or pass --pin-path under it")]
    NotBpffs(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: io::Error },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError {
    let path = path.display().to_string();
    move |source| PinError::Io { what, path, source }
}

/// The pin directory of this schema version.
#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
    dir: PathBuf,
}

impl PinDir {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf(), dir: root.join(format!("v{SCHEMA_VERSION}")) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link_path(&self, program: &str) -> PathBuf {
        self.dir.join(format!("link_{program}"))
    }

    /// Checks the filesystem, removes pins of other schema versions (they are never read), and
    /// creates this version's directory. Returns the directories removed.
    pub fn prepare(&self) -> Result<Vec<PathBuf>, PinError> {
        let parent = self.root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        if !is_bpffs(parent) {
            return Err(PinError::NotBpffs(self.root.display().to_string()));
        }
        let mut removed = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let p = e.path();
                if p != self.dir && is_version_dir(&p) {
                    remove_dir(&p)?;
                    removed.push(p);
                }
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        Ok(removed)
    }

    /// Forgets the pinned maps (not the links): the next load creates fresh ones.
    pub fn remove_maps(&self, names: &[&str]) -> Result<(), PinError> {
        for name in names {
            let p = self.map_path(name);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing", &p)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `azflow uninstall`: removes every version's pins; links go with their last reference, which
/// detaches the programs. Returns the directories removed.
pub fn remove_all(root: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(removed) };
    for e in entries.flatten() {
        let p = e.path();
        if is_version_dir(&p) {
            remove_dir(&p)?;
            removed.push(p);
        }
    }
    let _ = std::fs::remove_dir(root);
    Ok(removed)
}

fn is_version_dir(p: &Path) -> bool {
    p.is_dir()
        && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.strip_prefix('v').is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn remove_dir(dir: &Path) -> Result<(), PinError> {
    for e in std::fs::read_dir(dir).map_err(io_err("listing", dir))?.flatten() {
        std::fs::remove_file(e.path()).map_err(io_err("removing", &e.path()))?;
    }
    std::fs::remove_dir(dir).map_err(io_err("removing", dir))
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == BPF_FS_MAGIC
}

pub(crate) fn sys_bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the given size for `cmd`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Opens a pinned BPF object (here: a link).
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = [0u8; 16];
    attr[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Swaps the program of a link, atomically.
pub fn link_update(link: &OwnedFd, new_prog: RawFd) -> io::Result<()> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(link.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(new_prog as u32).to_ne_bytes());
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// The cgroup id a cgroup link is attached to (the cgroup directory's inode number).
pub fn link_cgroup_id(link: &OwnedFd) -> io::Result<u64> {
    // struct bpf_link_info: type u32, id u32, prog_id u32, pad, then cgroup { cgroup_id u64, … }.
    let mut info = [0u8; 64];
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(link.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&info[16..24]);
    Ok(u64::from_ne_bytes(id))
}

/// The id of a cgroup v2 directory (its inode number).
pub fn cgroup_id(cgroup: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(cgroup)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_schema_directories_are_touched() {
        let d = std::env::temp_dir().join(format!("azflow-pin-{}", std::process::id()));
        for n in ["v1", "v22", "vx", "other", "v"] {
            std::fs::create_dir_all(d.join(n)).expect("mkdir");
        }
        let mut found: Vec<bool> = ["v1", "v22", "vx", "other", "v"].iter().map(|n| is_version_dir(&d.join(n))).collect();
        assert_eq!(found, vec![true, true, false, false, false]);
        found.clear();
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(PinDir::new(Path::new("/sys/fs/bpf/azflow")).link_path("azflow_egress"), PathBuf::from(format!("/sys/fs/bpf/azflow/v{SCHEMA_VERSION}/link_azflow_egress")));
    }
}
