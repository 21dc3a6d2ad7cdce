//! The image's one layer as a tree of directories, files and symlinks, written as a tar with
//! fixed owners and times, in path order, so the same inputs give the same digest.

use std::{
    collections::{BTreeMap, VecDeque},
    ffi::OsString,
    os::unix::fs::PermissionsExt as _,
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// Every entry's mtime: the layer's digest must not depend on when it was built.
const MTIME: u64 = 0;
/// More symlinks than this while resolving one path means a loop.
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: PathBuf },
}

/// Paths are kept relative to the root ("usr/lib"), as tar layers name them.
#[derive(Debug, Default)]
pub struct RootFs {
    entries: BTreeMap<PathBuf, Entry>,
}

impl RootFs {
    /// A directory (and its parents, 0755).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.insert(&relative(Path::new(path))?, Entry::Dir { mode })
    }

    /// A file with the given contents.
    pub fn add_bytes(&mut self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        self.insert(
            &relative(Path::new(path))?,
            Entry::File {
                data: data.to_vec(),
                mode,
            },
        )
    }

    /// The host file `src`, placed at `dest`.
    pub fn add_host_file_as(&mut self, src: &Path, dest: &str, mode: u32) -> Result<()> {
        let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        self.add_bytes(dest, &data, mode)
    }

    /// The host path as the host resolves it: each symlink on the way (Debian's `/lib ->
    /// usr/lib`, the loader's `/lib64/…` link) is kept as a symlink and followed, so the file
    /// lands where the links lead and every path the loader may use works in the image.
    pub fn add_host_path(&mut self, path: &Path) -> Result<()> {
        let mut pending: VecDeque<OsString> = path.components().filter_map(normal).collect();
        let mut cur = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&part);
            let meta = std::fs::symlink_metadata(&next)
                .with_context(|| format!("stat {}", next.display()))?;
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    bail!(
                        "{}: more than {MAX_LINKS} symlinks (a loop?)",
                        path.display()
                    );
                }
                let target = std::fs::read_link(&next)
                    .with_context(|| format!("readlink {}", next.display()))?;
                self.insert(
                    &relative(&next)?,
                    Entry::Symlink {
                        target: target.clone(),
                    },
                )?;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                for part in target.components().rev().filter_map(normal) {
                    pending.push_front(part);
                }
            } else if meta.is_dir() {
                self.insert(
                    &relative(&next)?,
                    Entry::Dir {
                        mode: meta.permissions().mode() & 0o7777,
                    },
                )?;
                cur = next;
            } else if meta.is_file() && pending.is_empty() {
                let data =
                    std::fs::read(&next).with_context(|| format!("reading {}", next.display()))?;
                self.insert(
                    &relative(&next)?,
                    Entry::File {
                        data,
                        mode: meta.permissions().mode() & 0o7777,
                    },
                )?;
            } else {
                bail!(
                    "{}: {} is neither a directory, a file nor a symlink",
                    path.display(),
                    next.display()
                );
            }
        }
        Ok(())
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e, Entry::File { .. }))
            .count()
    }

    /// The layer: an uncompressed tar, parents before children, owner 0:0, mtime 0.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            match entry {
                Entry::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    tar.append_data(&mut h, path, std::io::empty())?;
                }
                Entry::File { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)?;
                }
            }
        }
        Ok(tar.into_inner()?)
    }

    /// Adds `entry` at `path`, its parents as directories first. The same entry twice is fine
    /// (two libraries share a directory); a different one at a taken path, or anything below a
    /// symlink, is a bug in the caller.
    fn insert(&mut self, path: &Path, entry: Entry) -> Result<()> {
        let mut parent = PathBuf::new();
        for part in path.parent().into_iter().flat_map(Path::components) {
            parent.push(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(other) => bail!(
                    "{}: its parent {} is {other:?}, not a directory",
                    path.display(),
                    parent.display()
                ),
            }
        }
        match self.entries.get(path) {
            None => {
                self.entries.insert(path.to_path_buf(), entry);
            }
            // A directory first made as someone's parent takes its real mode.
            Some(Entry::Dir { .. }) if matches!(entry, Entry::Dir { .. }) => {
                self.entries.insert(path.to_path_buf(), entry);
            }
            Some(old) if *old == entry => {}
            Some(old) => bail!(
                "{} added twice, as {old:?} and as something else",
                path.display()
            ),
        }
        Ok(())
    }
}

fn normal(c: Component<'_>) -> Option<OsString> {
    match c {
        Component::Normal(p) => Some(p.to_os_string()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    }
}

/// "/usr/lib" → "usr/lib"; the root itself is not an entry.
fn relative(path: &Path) -> Result<PathBuf> {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rel.as_os_str().is_empty() || path.components().any(|c| c == Component::ParentDir) {
        bail!("{}: not a path below the root", path.display());
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn names(tar: &[u8]) -> Vec<(String, tar::EntryType, u64)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.entry_type(),
                    h.uid().expect("uid"),
                )
            })
            .collect()
    }

    #[test]
    fn host_symlinks_are_kept_and_followed_to_the_file() {
        let dir = std::env::temp_dir().join(format!("xtask-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/lib/gnu")).expect("mkdir");
        std::fs::write(dir.join("usr/lib/gnu/libc.so.6"), b"elf").expect("write");
        symlink("usr/lib", dir.join("lib")).expect("symlink");
        std::fs::create_dir_all(dir.join("usr/lib64")).expect("mkdir");
        // Absolute, as Debian's /usr/lib64/ld-linux-x86-64.so.2 is; resolved against the host.
        symlink(dir.join("lib/gnu/libc.so.6"), dir.join("usr/lib64/ld.so")).expect("symlink");
        let mut root = RootFs::default();
        root.add_host_path(&dir.join("usr/lib64/ld.so"))
            .expect("adds");
        root.add_host_path(&dir.join("lib/gnu/libc.so.6"))
            .expect("adds the same file again");
        let d = relative(&dir).expect("relative").display().to_string();
        let got = names(&root.to_tar().expect("tar"));
        let file = got
            .iter()
            .find(|(p, ..)| *p == format!("{d}/usr/lib/gnu/libc.so.6"))
            .expect("the file");
        assert_eq!((file.1, file.2), (tar::EntryType::Regular, 0));
        for link in ["lib", "usr/lib64/ld.so"] {
            assert!(
                got.iter()
                    .any(|(p, t, _)| *p == format!("{d}/{link}") && *t == tar::EntryType::Symlink),
                "{link} is a symlink in {got:?}"
            );
        }
        let pos = |p: &str| got.iter().position(|(n, ..)| n == p).expect(p);
        assert!(
            pos(&format!("{d}/usr")) < pos(&format!("{d}/usr/lib/gnu/libc.so.6")),
            "parents first"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_and_conflicts_are_errors() {
        let build = || {
            let mut r = RootFs::default();
            r.add_bytes("/etc/passwd", b"root:x:0:0::/root:/sbin/nologin\n", 0o644)
                .expect("file");
            r.add_dir("/tmp", 0o1777).expect("dir");
            r.to_tar().expect("tar")
        };
        assert_eq!(build(), build());
        let mut r = RootFs::default();
        r.add_bytes("/etc/passwd", b"a", 0o644).expect("file");
        assert!(r.add_bytes("/etc/passwd", b"b", 0o644).is_err());
        assert!(r.add_bytes("/etc/passwd/x", b"b", 0o644).is_err());
    }
}
