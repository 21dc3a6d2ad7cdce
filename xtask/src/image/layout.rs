//! An OCI image layout (image-spec v1.1: `oci-layout`, `index.json`, `blobs/sha256/…`) holding
//! one single-layer image, as one tar — the form `ctr image import` and registries' tools read.

use std::io::Write as _;

use anyhow::Result;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What the Dockerfile's ENTRYPOINT and CMD, and the base's ENV, put in the image config.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// OCI's name for this machine's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The layout tar of an image with `layer` (an uncompressed tar) as its only layer, named
/// `name` (containerd's annotation) with tag `tag` (the OCI ref name).
pub fn image_tar(layer: &[u8], config: &ImageConfig, name: &str, tag: &str) -> Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(layer)?;
    let layer_gz = gz.finish()?;
    let config_json = serde_json::to_vec(&json!({
        "architecture": architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": config.entrypoint,
            "Cmd": config.cmd,
            "Env": config.env,
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(layer))] },
        "history": [{ "created_by": "cargo xtask image (deploy/container/Dockerfile)" }],
    }))?;
    let manifest_json = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, &config_json),
        "layers": [descriptor(LAYER_TYPE, &layer_gz)],
    }))?;
    let mut manifest_desc = descriptor(MANIFEST_TYPE, &manifest_json);
    manifest_desc["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    });
    let index_json =
        serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [manifest_desc] }))?;

    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs", "blobs/sha256"] {
        append(&mut tar, dir, None)?;
    }
    append(
        &mut tar,
        "oci-layout",
        Some(br#"{"imageLayoutVersion":"1.0.0"}"#),
    )?;
    append(&mut tar, "index.json", Some(&index_json))?;
    for blob in [&config_json, &manifest_json, &layer_gz] {
        append(
            &mut tar,
            &format!("blobs/sha256/{}", sha256_hex(blob)),
            Some(blob),
        )?;
    }
    Ok(tar.into_inner()?)
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": format!("sha256:{}", sha256_hex(blob)), "size": blob.len() })
}

/// A file (`Some`) or directory (`None`), owner 0:0, mtime 0.
fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: Option<&[u8]>) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    match data {
        Some(data) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, path, data)?;
        }
        None => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, path, std::io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, io::Read as _};

    use super::*;

    fn files(tar: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(tar);
        let mut out = HashMap::new();
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            out.insert(e.path().expect("path").display().to_string(), data);
        }
        out
    }

    fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, desc: &Value) -> &'a [u8] {
        let digest = desc["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let data = files
            .get(&format!("blobs/sha256/{digest}"))
            .expect("the blob is in the layout");
        assert_eq!(sha256_hex(data), digest, "a blob's name is its digest");
        assert_eq!(desc["size"].as_u64(), Some(data.len() as u64));
        data
    }

    #[test]
    fn index_manifest_config_and_layer_point_at_each_other_by_digest() {
        let layer = b"pretend this is a tar".repeat(100);
        let config = ImageConfig {
            entrypoint: vec!["/usr/local/bin/azflow".into()],
            cmd: vec!["run".into(), "--pin".into()],
            env: vec!["PATH=/bin".into()],
        };
        let tar = image_tar(
            &layer,
            &config,
            "registry.example.com/azflow/azflow:0.1.0",
            "0.1.0",
        )
        .expect("builds");
        let f = files(&tar);
        let index: Value = serde_json::from_slice(&f["index.json"]).expect("index");
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"]["io.containerd.image.name"],
            "registry.example.com/azflow/azflow:0.1.0"
        );
        let manifest: Value = serde_json::from_slice(blob(&f, desc)).expect("manifest");
        let cfg: Value = serde_json::from_slice(blob(&f, &manifest["config"])).expect("config");
        assert_eq!(
            cfg["config"]["Entrypoint"],
            json!(["/usr/local/bin/azflow"])
        );
        assert_eq!(cfg["config"]["Cmd"], json!(["run", "--pin"]));
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(blob(&f, &manifest["layers"][0]))
            .read_to_end(&mut unzipped)
            .expect("gunzip");
        assert_eq!(unzipped, layer);
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&layer)),
            "diff_id is the uncompressed layer's"
        );
        assert_eq!(
            tar,
            image_tar(
                &layer,
                &config,
                "registry.example.com/azflow/azflow:0.1.0",
                "0.1.0"
            )
            .expect("again"),
            "reproducible"
        );
    }
}
