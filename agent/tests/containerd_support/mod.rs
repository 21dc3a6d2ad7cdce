//! A private containerd for one test: its own root, state and socket under a temp dir, the CRI
//! plugin on, cgroupfs driver, native snapshotter, and a one-layer busybox image built here.
//! Everything it starts (tasks, shims, pods, cgroups, mounts) is removed on drop.

#![allow(dead_code, reason = "each suite that includes containerd_support uses a different part")]

pub mod cri;

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The image every container and sandbox runs: busybox sleeping.
pub const IMAGE: &str = "localhost/azflow/busybox:1";
/// Tools the harness runs (Debian: containerd, runc, busybox-static; tar and coreutils).
pub const TOOLS: &[&str] = &["containerd", "ctr", "runc", "tar", "sha256sum"];
const BUSYBOX: &str = "/bin/busybox";

pub fn missing_tool() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = |t: &str| std::env::split_paths(&path).any(|d| d.join(t).is_file());
    if let Some(t) = TOOLS.iter().find(|t| !on_path(t)) {
        return Some(format!(
            "`{t}` is not installed (apt-get install containerd runc busybox-static)"
        ));
    }
    (!Path::new(BUSYBOX).is_file())
        .then(|| format!("{BUSYBOX} is missing (apt-get install busybox-static)"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub struct Containerd {
    pub dir: PathBuf,
    child: Option<Child>,
    /// cgroup directories (relative to each hierarchy's root) to remove, deepest first.
    pub cgroups_to_remove: Vec<String>,
}

impl Containerd {
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("azflow-ctrd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("cni"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let d = dir.display();
        // containerd gives sandboxes oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which
        // a test machine that is itself a container may lack (runc's init then dies mid-create).
        let restrict_oom = !has_capability(CAP_SYS_RESOURCE);
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = {restrict_oom}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
"#
        );
        fs::write(dir.join("config.toml"), config)
            .unwrap_or_else(|e| panic!("writing config: {e}"));
        let log = fs::File::create(dir.join("containerd.log"))
            .unwrap_or_else(|e| panic!("creating log: {e}"));
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting containerd: {e}"));
        let mut me = Containerd {
            dir,
            child: Some(child),
            cgroups_to_remove: Vec::new(),
        };
        me.wait_ready();
        me
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = Command::new("ctr")
                .args(["-a"])
                .arg(self.socket())
                .args(["plugins", "ls"])
                .output();
            if let Ok(out) = ok
                && out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.contains(" cri ") && l.trim_end().ends_with("ok"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        panic!("containerd's CRI plugin did not come up within 30 s; log:\n{log}");
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        run_ok(
            Command::new("ctr")
                .arg("-a")
                .arg(self.socket())
                .args(["-n", namespace])
                .args(args),
        )
    }

    /// Builds the OCI image (one layer: busybox and its applet links) and imports it.
    pub fn import_image(&self, namespaces: &[&str]) {
        let tar = build_image(&self.dir.join("image"));
        for ns in namespaces {
            run_ok(
                Command::new("ctr")
                    .arg("-a")
                    .arg(self.socket())
                    .args(["-n", ns, "image", "import", "--snapshotter", "native"])
                    .arg(&tar),
            );
        }
    }

    /// The pid of a task's init process, from the runtime's bundle.
    pub fn task_pid(&self, namespace: &str, id: &str) -> u32 {
        let p = self
            .state()
            .join("io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id)
            .join("init.pid");
        let text =
            fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", p.display()))
    }

    /// Kills and deletes every task and container of `namespace`.
    fn clear(&self, namespace: &str) {
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("-a")
                .arg(self.socket())
                .args(["-n", namespace])
                .args(args)
                .output()
                .ok()
        };
        let ids = |args: &[&str]| {
            ctr(args)
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        for id in ids(&["tasks", "ls", "-q"]) {
            ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
        }
        std::thread::sleep(Duration::from_millis(300));
        for id in ids(&["tasks", "ls", "-q"]) {
            ctr(&["tasks", "delete", "-f", &id]);
        }
        for id in ids(&["containers", "ls", "-q"]) {
            ctr(&["containers", "delete", &id]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What containerd said is the first thing needed to understand a failed run.
            let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("containerd.log (last lines):");
            tail.iter().rev().for_each(|l| eprintln!("  {l}"));
            let tasks = self.state().join("io.containerd.runtime.v2.task/k8s.io");
            for task in fs::read_dir(tasks).into_iter().flatten().flatten() {
                let runc = fs::read_to_string(task.path().join("log.json")).unwrap_or_default();
                eprintln!(
                    "runc log of {}:\n{runc}",
                    task.file_name().to_string_lossy()
                );
            }
        }
        for ns in ["k8s.io", "azflow-test"] {
            self.clear(ns);
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount_below(&self.dir);
        remove_cgroups(&self.cgroups_to_remove);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

const CAP_SYS_RESOURCE: u32 = 24;

fn has_capability(bit: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    eff.is_some_and(|caps| caps & (1 << bit) != 0)
}

fn unmount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// Removes cgroup directories (empty ones only: rmdir) in every mounted hierarchy.
fn remove_cgroups(rel: &[String]) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let roots: Vec<PathBuf> = info
        .lines()
        .filter(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, post)| post.starts_with("cgroup"))
        })
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .collect();
    for r in rel {
        for root in &roots {
            let _ = fs::remove_dir(root.join(r.trim_start_matches('/')));
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Adds a file to the OCI layout's blobs; returns its digest and size.
fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let digest = sha256(file);
    fs::copy(file, layout.join("blobs/sha256").join(&digest))
        .unwrap_or_else(|e| panic!("copying blob: {e}"));
    let size = fs::metadata(file)
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("stat blob: {e}"));
    (digest, size)
}

/// An OCI image layout tar holding one layer with /bin/busybox and links to its applets.
fn build_image(work: &Path) -> PathBuf {
    let rootfs = work.join("rootfs");
    let layout = work.join("layout");
    fs::create_dir_all(rootfs.join("bin")).unwrap_or_else(|e| panic!("mkdir rootfs: {e}"));
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap_or_else(|e| panic!("mkdir layout: {e}"));
    fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copying busybox: {e}"));
    for applet in ["sh", "sleep", "cat", "nc", "wget"] {
        symlink("busybox", rootfs.join("bin").join(applet))
            .unwrap_or_else(|e| panic!("linking {applet}: {e}"));
    }
    let layer = work.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    );
    let (layer_digest, layer_size) = add_blob(&layout, &layer);
    let config = work.join("config.json");
    let text = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sleep","100000"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_digest}"]}}}}"#
    );
    fs::write(&config, text).unwrap_or_else(|e| panic!("writing image config: {e}"));
    let (config_digest, config_size) = add_blob(&layout, &config);
    let manifest = work.join("manifest.json");
    let text = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_digest}","size":{layer_size}}}]}}"#
    );
    fs::write(&manifest, text).unwrap_or_else(|e| panic!("writing manifest: {e}"));
    let (manifest_digest, manifest_size) = add_blob(&layout, &manifest);
    let mut index = String::new();
    let _ = write!(
        index,
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{manifest_size},"annotations":{{"io.containerd.image.name":"{IMAGE}","org.opencontainers.image.ref.name":"1"}}}}]}}"#
    );
    fs::write(layout.join("index.json"), index).unwrap_or_else(|e| panic!("writing index: {e}"));
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap_or_else(|e| panic!("writing oci-layout: {e}"));
    let tar = work.join("image.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    tar
}
