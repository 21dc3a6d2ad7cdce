//! Finding the outside tools the suites drive: the project-local Python venv that
//! `cargo xtask setup` makes (`target/pyenv/bin`: moto_server, yamllint, kubernetes-validate and a
//! python3 with PyYAML) first, then PATH.

use std::{
    env,
    path::{Path, PathBuf},
};

/// `target/pyenv/bin` of this workspace.
pub fn pyenv_bin() -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("pyenv/bin")
}

/// `program` from the venv, else from PATH.
pub fn find_tool(program: &str) -> Option<PathBuf> {
    let venv = pyenv_bin().join(program);
    if venv.is_file() {
        return Some(venv);
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
