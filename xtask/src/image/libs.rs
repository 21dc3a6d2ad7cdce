//! The shared libraries the binary loads, as this host's loader resolves them (`ldd`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Every file `ldd` names for `binary`: the loader and each resolved library. A library the
/// host cannot resolve is an error, as the image would not start.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian libc-bin)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {}", binary.display(), text.trim());
    }
    parse_ldd(&text).with_context(|| format!("reading ldd's output for {}", binary.display()))
}

/// The absolute paths in ldd's output; the vDSO (no file) is left out.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let target = line.split_once("=>").map_or(line, |(_, t)| t).trim();
        if target.starts_with("not found") {
            bail!("{line}: a library the binary needs is not installed");
        }
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    if paths.is_empty() {
        bail!("no library paths in {text:?}");
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolved_libraries_and_the_loader_and_skips_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5a1f2000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c2a0000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c000000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c2e0000)\n";
        let got = parse_ldd(text).expect("parses");
        assert_eq!(
            got,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").expect_err("must fail");
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
    }
}
