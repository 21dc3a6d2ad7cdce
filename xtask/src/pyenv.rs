//! The PyPI tools the tests drive, in a project-local venv (`target/pyenv`), so a fresh clone
//! needs neither a global `pip install` nor root for them. The tests look there after PATH
//! (`azflow_tests::find_tool`), and `cargo xtask test` puts its `bin/` first on PATH.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::toolchain::run;

/// Debian's interpreter (with python3-venv), not whatever `python3` PATH finds first.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// What the tests run from the venv (executable in `bin/`, the requirement that provides it).
/// moto_server is the EC2 API and IMDS peer; yamllint and kubernetes-validate check manifests;
/// yamllint brings PyYAML, which the manifest tests import.
const TOOLS: &[(&str, &str)] = &[
    ("moto_server", "moto[server]"),
    ("yamllint", "yamllint"),
    ("kubernetes-validate", "kubernetes-validate"),
];

pub fn dir() -> PathBuf {
    crate::workspace_root().join("target/pyenv")
}

pub fn bin() -> PathBuf {
    dir().join("bin")
}

pub fn ensure() -> Result<()> {
    let python = bin().join("python3");
    if !python.is_file() {
        println!("xtask setup: creating the Python venv {}", dir().display());
        run(Command::new(SYSTEM_PYTHON).args(["-m", "venv"]).arg(dir()))?;
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(exe, _)| !bin().join(exe).is_file())
        .map(|(_, req)| *req)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask setup: installing {} into {}",
        missing.join(" "),
        dir().display()
    );
    run(Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(&missing))
}
