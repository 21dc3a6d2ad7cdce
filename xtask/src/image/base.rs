//! The parts of distroless/cc-debian12 the agent uses beyond its libraries: users, name
//! service configuration, CA certificates, a /tmp, and the base's environment.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::rootfs::RootFs;

/// Debian's CA bundle (package ca-certificates), which distroless ships at the same path.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The base image's environment.
pub const ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];

/// distroless's users: root (the DaemonSet's runAsUser 0), nobody, nonroot.
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n";
/// glibc reads it for getaddrinfo (OTLP and AWS endpoints by name): files, then DNS.
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";

pub fn add(root: &mut RootFs) -> Result<()> {
    root.add_host_path(Path::new(CA_BUNDLE))
        .with_context(|| format!("adding the CA bundle {CA_BUNDLE} (Debian ca-certificates)"))?;
    root.add_bytes("/etc/passwd", PASSWD.as_bytes(), 0o644)?;
    root.add_bytes("/etc/group", GROUP.as_bytes(), 0o644)?;
    root.add_bytes("/etc/nsswitch.conf", NSSWITCH.as_bytes(), 0o644)?;
    root.add_dir("/root", 0o700)?;
    root.add_dir("/home/nonroot", 0o700)?;
    root.add_dir("/tmp", 0o1777)
}
