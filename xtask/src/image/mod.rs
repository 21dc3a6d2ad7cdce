//! `cargo xtask image`: the agent's OCI image as an OCI image-layout tar, built without a
//! container daemon, holding what `deploy/container/Dockerfile` describes: the release binary at
//! /usr/local/bin/azflow on a distroless-cc-like base, with its entry point and default command.
//!
//! The Dockerfile's base (`gcr.io/distroless/cc-debian12`) cannot be pulled here, so the one
//! layer carries, from this Debian host, what that base provides and the binary uses:
//! - the dynamic loader and every shared library `ldd` resolves for the binary (glibc's libc,
//!   libm, libgcc_s), at the paths the loader searches, with Debian's merged-/usr symlinks;
//! - the CA bundle, `/etc/ssl/certs/ca-certificates.crt` (rustls-native-certs reads it for
//!   HTTPS to AWS and OTLP backends), and `SSL_CERT_FILE` naming it, as distroless sets it;
//! - `/etc/passwd`, `/etc/group` (root, nobody, nonroot as distroless has them),
//!   `/etc/nsswitch.conf` (glibc's resolver reads it for host lookups), an empty sticky `/tmp`.
//!
//! No shell, no package manager, nothing else: the DaemonSet runs it with a read-only root.

mod base;
mod layout;
mod libs;
mod rootfs;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

pub use layout::ImageConfig;
use rootfs::RootFs;

/// Where the Dockerfile copies the binary; the entry point.
pub const BINARY_PATH: &str = "/usr/local/bin/azflow";
/// The Dockerfile's CMD (the DaemonSet passes the same as args).
pub const DEFAULT_CMD: &[&str] = &["run", "--pin"];
/// The image name the manifests and the chart's defaults pull.
pub const REPOSITORY: &str = "registry.example.com/azflow/azflow";
/// Environment variable naming the image tar for the tests (`cargo xtask test` sets it).
pub const TAR_ENV: &str = "AZFLOW_IMAGE_TAR";

/// The tag: the workspace version, as the Helm chart's appVersion.
pub fn tag() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `target/azflow-oci.tar` in the workspace.
pub fn default_output() -> PathBuf {
    crate::workspace_root().join("target/azflow-oci.tar")
}

/// Builds the image of `binary` into `out`; returns a one-line summary.
pub fn build(binary: &Path, out: &Path) -> Result<String> {
    let mut root = RootFs::default();
    root.add_host_file_as(binary, BINARY_PATH, 0o755)
        .with_context(|| format!("adding {}", binary.display()))?;
    let needed = libs::shared_libraries(binary)?;
    for lib in &needed {
        root.add_host_path(lib)
            .with_context(|| format!("adding {}", lib.display()))?;
    }
    base::add(&mut root)?;
    let layer = root.to_tar().context("writing the layer")?;
    let config = ImageConfig {
        entrypoint: vec![BINARY_PATH.to_owned()],
        cmd: DEFAULT_CMD.iter().map(|s| (*s).to_owned()).collect(),
        env: base::ENV.iter().map(|s| (*s).to_owned()).collect(),
    };
    let name = format!("{REPOSITORY}:{}", tag());
    let tar = layout::image_tar(&layer, &config, &name, tag())?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &tar).with_context(|| format!("writing {}", out.display()))?;
    Ok(format!(
        "{name}: {} ({} files, {} KiB layer uncompressed; libraries: {})",
        out.display(),
        root.file_count(),
        layer.len() / 1024,
        needed
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(path: &str) -> String {
        let p = crate::workspace_root().join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    /// The builder and the Dockerfile describe one image; a change to either must reach both.
    #[test]
    fn the_dockerfile_says_what_the_builder_does() {
        let docker = repo_file("deploy/container/Dockerfile");
        let json_list = |v: &[&str]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        for line in [
            format!("COPY target/release/azflow {BINARY_PATH}"),
            format!("ENTRYPOINT {}", json_list(&[BINARY_PATH])),
            format!("CMD {}", json_list(DEFAULT_CMD)),
            "FROM gcr.io/distroless/cc-debian12".to_owned(),
        ] {
            assert!(
                docker.lines().any(|l| l.trim() == line),
                "deploy/container/Dockerfile has no line {line:?}"
            );
        }
        let instructions = docker
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(
            instructions, 4,
            "the Dockerfile gained an instruction the builder does not follow"
        );
    }

    #[test]
    fn the_manifests_pull_the_image_the_builder_names() {
        let image = format!("image: {REPOSITORY}:{}", tag());
        assert!(
            repo_file("deploy/kubernetes/daemonset.yaml")
                .lines()
                .any(|l| l.trim() == image),
            "daemonset.yaml has no {image:?}"
        );
        let chart = repo_file("deploy/helm/azflow/Chart.yaml");
        assert!(
            chart
                .lines()
                .any(|l| l.trim() == format!("appVersion: \"{}\"", tag())
                    || l.trim() == format!("appVersion: {}", tag())),
            "Chart.yaml's appVersion is not {}",
            tag()
        );
        assert!(
            repo_file("deploy/helm/azflow/values.yaml")
                .lines()
                .any(|l| l.trim() == format!("repository: {REPOSITORY}"))
        );
    }
}
