//! A throw-away directory tree for the module's tests (real directories, real inode numbers).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

pub struct TestDir(PathBuf);

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestDir {
    pub fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "azflow-workloads-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        TestDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn mkdir(&self, rel: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
    }

    pub fn rmdir(&self, rel: &str) {
        let p = self.0.join(rel);
        std::fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("removing {}: {e}", p.display()));
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }

    pub fn ino(&self, rel: &str) -> u64 {
        let p = self.0.join(rel);
        std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
            .ino()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
