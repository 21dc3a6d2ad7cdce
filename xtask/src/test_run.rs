//! `cargo xtask test`: builds the release binary and its image (`cargo xtask image`, named to the
//! tests in `AZFLOW_IMAGE_TAR`), then runs `cargo test` over the workspace with its output passed
//! through, summed from libtest's own `test result:` lines into one final line, e.g.
//! `xtask test: 412 passed, 0 failed, 3 ignored, 0 skipped`. As root, a skipped test is a
//! failure (`AZFLOW_REQUIRE_EBPF=1`, as in CI): the tests then panic instead of skipping, and a
//! `SKIPPED:` line that still gets through fails the run here.

use std::{
    io::{BufRead as _, BufReader, Read},
    process::Stdio,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result, bail};

const REQUIRE_ENV: &str = "AZFLOW_REQUIRE_EBPF";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub skipped: u64,
}

impl Tally {
    /// Adds what one line says: a libtest summary, or a test's own `SKIPPED:` line.
    pub fn read_line(&mut self, line: &str) {
        if line.starts_with("SKIPPED:") {
            self.skipped += 1;
        }
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        // "ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        let rest = rest.split_once(". ").map_or(rest, |(_, r)| r);
        for part in rest.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (
                words.next().and_then(|n| n.parse::<u64>().ok()),
                words.next(),
            ) else {
                continue;
            };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn test(extra: &[String]) -> Result<()> {
    crate::toolchain::setup()?;
    // The image suite runs the release binary's image, as the DaemonSet does: build both first.
    let image = crate::build_image(&crate::image::default_output())?;
    let mut cmd = crate::toolchain::cargo();
    cmd.current_dir(crate::workspace_root())
        .args(["test", "--no-fail-fast"])
        .args(extra); // default-members: all but the eBPF crate
    let require = crate::toolchain::is_root() || std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    if require {
        cmd.env(REQUIRE_ENV, "1");
    }
    cmd.env(crate::image::TAR_ENV, &image);
    // The venv's tools (moto_server, yamllint, kubernetes-validate, its python3) come first.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(crate::pyenv::bin()).chain(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).context("joining PATH")?);

    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stdout = child.stdout.take().context("stdout is piped")?;
    let stderr = child.stderr.take().context("stderr is piped")?;
    let (t1, t2) = (tally.clone(), tally.clone());
    let out = std::thread::spawn(move || pass_through(stdout, std::io::stdout(), &t1));
    let err = std::thread::spawn(move || pass_through(stderr, std::io::stderr(), &t2));
    let status = child.wait().context("waiting for cargo test")?;
    let _ = out.join();
    let _ = err.join();
    let t = *tally
        .lock()
        .map_err(|_| anyhow::anyhow!("tally lock poisoned"))?;
    println!(
        "xtask test: {} passed, {} failed, {} ignored, {} skipped",
        t.passed, t.failed, t.ignored, t.skipped
    );
    if !status.success() || t.failed > 0 {
        bail!("cargo test failed ({status})");
    }
    if require && t.skipped > 0 {
        bail!(
            "{} tests were SKIPPED with {REQUIRE_ENV}=1; install what they name (cargo xtask setup)",
            t.skipped
        );
    }
    if t.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn pass_through(from: impl Read, mut to: impl std::io::Write, tally: &Mutex<Tally>) {
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        if let Ok(mut t) = tally.lock() {
            t.read_line(&line);
        }
        let _ = writeln!(to, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_summaries_and_skipped_lines() {
        let mut t = Tally::default();
        for line in [
            "running 12 tests",
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "SKIPPED: deploy::x: `promtool` is not installed (Debian prometheus) (set AZFLOW_REQUIRE_EBPF=1 to make this a failure)",
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 9.99s",
            "test x ... ok",
            "   Doc-tests azflow",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            t.read_line(line);
        }
        assert_eq!(
            t,
            Tally {
                passed: 15,
                failed: 2,
                ignored: 1,
                skipped: 1
            }
        );
    }
}
