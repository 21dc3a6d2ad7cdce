//! The bed's cgroup v2 directory: where the monitored host's processes run, and where an agent
//! attaches its cgroup programs.

use std::{
    ffi::CString,
    fs,
    io::ErrorKind,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::process::wait_until;

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mountinfo.
pub fn cgroup2_root() -> Result<PathBuf> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    parse_cgroup2_mount(&text).context("no cgroup2 filesystem in /proc/self/mountinfo")
}

/// The first cgroup2 mount point in the text of a mountinfo file.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional…] - fstype source options
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(unescape_mountinfo)
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if octal {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Creates `<root>/<name>`.
pub(crate) fn create(root: &Path, name: &str) -> Result<PathBuf> {
    let path = root.join(name);
    fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
    Ok(path)
}

/// The pids in a cgroup (its cgroup.procs).
pub fn procs(cgroup: &Path) -> Result<Vec<u32>> {
    let file = cgroup.join("cgroup.procs");
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .map(|l| {
            l.trim()
                .parse()
                .with_context(|| format!("bad pid {l:?} in {}", file.display()))
        })
        .collect()
}

/// Kills every process in the cgroup, waits until it is empty, and removes the directory.
/// A cgroup that does not exist is fine.
pub fn remove(cgroup: &Path, timeout: Duration) -> Result<()> {
    if !cgroup.exists() {
        return Ok(());
    }
    let kill_file = cgroup.join("cgroup.kill");
    match fs::write(&kill_file, "1") {
        Ok(()) => {}
        // Removed meanwhile (say, by a concurrent sweeper): nothing left to do.
        Err(e) if e.kind() == ErrorKind::NotFound && !cgroup.exists() => return Ok(()),
        // Kernels before 5.14 have no cgroup.kill.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            for pid in procs(cgroup)? {
                crate::netns::kill(pid);
            }
        }
        Err(e) => return Err(e).with_context(|| format!("writing {}", kill_file.display())),
    }
    wait_until(
        &format!("cgroup {} to be removable", cgroup.display()),
        timeout,
        || match fs::remove_dir(cgroup) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            // EBUSY while dying processes are still accounted to it, or while it has child
            // cgroups (a test killed before it removed the ones it made: cgroup.kill emptied
            // them, their directories remain).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                for pid in procs(cgroup).unwrap_or_default() {
                    crate::netns::kill(pid);
                }
                remove_children(cgroup);
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("removing cgroup {}", cgroup.display())),
        },
    )
}

/// Removes the (emptied) child cgroups below `cgroup`, deepest first; failures are left for the
/// caller's next attempt.
fn remove_children(cgroup: &Path) {
    let Ok(entries) = fs::read_dir(cgroup) else { return };
    for child in entries.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        remove_children(&child.path());
        let _ = fs::remove_dir(child.path());
    }
}

/// Makes `cmd`'s child join `cgroup` between fork and exec (its own children inherit it).
pub fn join_on_spawn(cmd: &mut Command, cgroup: &Path) -> Result<()> {
    let procs = cgroup.join("cgroup.procs");
    let path = CString::new(procs.as_os_str().as_bytes())
        .with_context(|| format!("cgroup path {} contains NUL", procs.display()))?;
    if !procs.is_file() {
        bail!("{} does not exist", procs.display());
    }
    // SAFETY: the closure only makes async-signal-safe calls (open, write, close) on memory
    // prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_unified_mount() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn unescapes_and_skips_optional_fields() {
        let text = "29 1 0:26 / /sys/fs/cgroup\\040x rw shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup x"))
        );
        assert_eq!(
            parse_cgroup2_mount("32 31 0:29 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }
}
