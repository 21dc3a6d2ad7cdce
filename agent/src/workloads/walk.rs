//! Walking the cgroup v2 tree: every cgroup directory's id and path.
//!
//! A cgroup's id, the one `bpf_get_current_cgroup_id`/`bpf_skb_cgroup_id` return, is the inode
//! number of its directory in the cgroup2 filesystem (kernfs), so a plain `stat` gives it and a
//! temp dir of ordinary directories stands in for the tree in tests.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// One cgroup: its id and its path relative to the cgroup2 root (`""` for the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    pub id: u64,
    pub path: String,
}

/// One pass over the tree.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub entries: Vec<CgroupEntry>,
    /// Directories that could not be read (not counting those removed during the walk).
    pub errors: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("reading the cgroup2 tree at {}: {source}; the agent needs the host's cgroup2 mount (in a pod, mount the host's /sys/fs/cgroup)", root.display())]
pub struct WalkError {
    pub root: PathBuf,
    pub source: std::io::Error,
}

/// Where cgroups come from, so the registry can be driven by any tree.
pub trait CgroupTree {
    fn scan(&self) -> Result<Scan, WalkError>;
}

/// A cgroup2 hierarchy (or any directory tree) on disk.
#[derive(Debug, Clone)]
pub struct CgroupDir {
    root: PathBuf,
    max_depth: usize,
}

/// Deeper than any real hierarchy (systemd + kubelet + runtime nest about 6 deep); a bound keeps a
/// pathological tree from costing unbounded time per walk.
pub const MAX_DEPTH: usize = 32;

impl CgroupDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupDir {
            root: root.into(),
            max_depth: MAX_DEPTH,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl CgroupTree for CgroupDir {
    fn scan(&self) -> Result<Scan, WalkError> {
        let meta = fs::metadata(&self.root).map_err(|source| WalkError {
            root: self.root.clone(),
            source,
        })?;
        let mut scan = Scan {
            entries: vec![CgroupEntry {
                id: meta.ino(),
                path: String::new(),
            }],
            errors: 0,
        };
        let mut stack = vec![(self.root.clone(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // A cgroup removed between its parent's listing and now: not an error.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(_) => {
                    scan.errors += 1;
                    continue;
                }
            };
            for entry in entries.flatten() {
                // file_type() does not follow symlinks; cgroup2 has none, a test tree might.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                scan.entries.push(CgroupEntry {
                    id: meta.ino(),
                    path: path.clone(),
                });
                if depth + 1 < self.max_depth {
                    stack.push((entry.path(), path, depth + 1));
                }
            }
        }
        Ok(scan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::test_dir::TestDir;

    #[test]
    fn every_directory_with_its_inode() {
        let dir = TestDir::new("walk");
        dir.mkdir("system.slice/nginx.service");
        dir.mkdir("k8s.io/abc");
        dir.write("system.slice/cgroup.procs", "");
        let scan = CgroupDir::new(dir.path())
            .scan()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut paths: Vec<&str> = scan.entries.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "",
                "k8s.io",
                "k8s.io/abc",
                "system.slice",
                "system.slice/nginx.service"
            ]
        );
        let nginx = scan
            .entries
            .iter()
            .find(|e| e.path == "system.slice/nginx.service")
            .map(|e| e.id);
        assert_eq!(nginx, Some(dir.ino("system.slice/nginx.service")));
        assert_eq!(scan.errors, 0);
    }

    #[test]
    fn a_missing_root_is_an_error_that_names_it() {
        let e = CgroupDir::new("/nonexistent/azflow-cgroup")
            .scan()
            .map(|_| ())
            .err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("/nonexistent/azflow-cgroup") && text.contains("cgroup2 mount"),
            "{text}"
        );
    }
}
