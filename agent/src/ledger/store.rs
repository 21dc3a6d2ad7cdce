//! The ledger's pinned map: a BPF hash map (no preallocation, so it costs only what it holds) of
//! 4 KiB chunks, created and read with plain `bpf(2)` calls — no program uses it.
//!
//! Each record is written whole into the buffer not in use, then the record's header is switched
//! to it in one element update; a reader follows the header and checks length and checksum. So a
//! crash mid-write leaves the previous record intact, never a torn one.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use crate::ebpf::pin::{open_pinned, sys_bpf};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_F_NO_PREALLOC: u32 = 1;

const CHUNK: usize = 4096;
/// Chunks per record and buffer: 16 MiB, far above a host's needs (a few pages per thousand
/// busy subnets); a larger record is refused, and the previous one stays.
const MAX_CHUNKS: usize = 4096;
const MAX_ENTRIES: u32 = 2 * 2 * MAX_CHUNKS as u32 + 2;
const MAGIC: u32 = 0x415a_4c47;

/// The two records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Table = 0,
    Acc = 1,
}

fn header_key(r: Record) -> u32 {
    0xffff_0000 | r as u32
}

fn chunk_key(r: Record, buffer: u32, idx: usize) -> u32 {
    ((r as u32) << 24) | (buffer << 20) | idx as u32
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: io::Error },
    #[error("the {0:?} record is {1} bytes, over the ledger's {max} bytes", max = MAX_CHUNKS * CHUNK)]
    TooLarge(Record, usize),
}

/// A record's header: which buffer holds it, its length and checksum, and a write sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    buffer: u32,
    len: u64,
    checksum: u64,
}

impl Header {
    fn to_chunk(self) -> [u8; CHUNK] {
        let mut v = [0u8; CHUNK];
        v[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        v[4..8].copy_from_slice(&self.buffer.to_le_bytes());
        v[8..16].copy_from_slice(&self.len.to_le_bytes());
        v[16..24].copy_from_slice(&self.checksum.to_le_bytes());
        v
    }

    fn from_chunk(v: &[u8; CHUNK]) -> Option<Self> {
        let u32_at = |o: usize| u32::from_le_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        (u32_at(0) == MAGIC && u32_at(4) < 2).then(|| Header { buffer: u32_at(4), len: u64_at(8), checksum: u64_at(16) })
    }
}

/// FNV-1a: a torn or stale record must not pass for a whole one; no adversary writes this map.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub struct LedgerStore {
    fd: OwnedFd,
    path: PathBuf,
    /// Chunks each (record, buffer) held after our last write there; unknown (probed) at first.
    held: [[Option<usize>; 2]; 2],
}

impl LedgerStore {
    /// Opens the pinned ledger at `path`, or creates and pins an empty one.
    pub fn open_or_create(path: &Path) -> Result<Self, StoreError> {
        if let Some(store) = Self::open(path)? {
            return Ok(store);
        }
        let io = |what| {
            let path = path.display().to_string();
            move |source| StoreError::Io { what, path, source }
        };
        let mut attr = [0u8; 72];
        attr[0..4].copy_from_slice(&BPF_MAP_TYPE_HASH.to_ne_bytes());
        attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
        attr[8..12].copy_from_slice(&(CHUNK as u32).to_ne_bytes());
        attr[12..16].copy_from_slice(&MAX_ENTRIES.to_ne_bytes());
        attr[16..20].copy_from_slice(&BPF_F_NO_PREALLOC.to_ne_bytes());
        attr[28..38].copy_from_slice(b"azf_ledger");
        let fd = sys_bpf(BPF_MAP_CREATE, &mut attr).map_err(io("creating the ledger map for"))?;
        // SAFETY: the kernel returned a new fd we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io("pinning")(io::ErrorKind::InvalidInput.into()))?;
        let mut attr = [0u8; 16];
        attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
        attr[8..12].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
        sys_bpf(BPF_OBJ_PIN, &mut attr).map_err(io("pinning"))?;
        Ok(Self { fd, path: path.to_path_buf(), held: [[Some(0); 2]; 2] })
    }

    /// The pinned ledger at `path`, if there is one.
    pub fn open(path: &Path) -> Result<Option<Self>, StoreError> {
        match open_pinned(path) {
            Ok(fd) => Ok(Some(Self { fd, path: path.to_path_buf(), held: [[None; 2]; 2] })),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::InvalidInput) => Ok(None),
            Err(source) => Err(StoreError::Io { what: "opening the ledger", path: path.display().to_string(), source }),
        }
    }

    fn io_err(&self, what: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        let path = self.path.display().to_string();
        move |source| StoreError::Io { what, path, source }
    }

    /// Replaces record `r` with `bytes`; on error the previous record stays readable.
    pub fn write(&mut self, r: Record, bytes: &[u8]) -> Result<(), StoreError> {
        let chunks = bytes.len().div_ceil(CHUNK);
        if chunks > MAX_CHUNKS {
            return Err(StoreError::TooLarge(r, bytes.len()));
        }
        let buffer = self.header(r)?.map_or(0, |h| 1 - h.buffer);
        let mut value = [0u8; CHUNK];
        for (idx, part) in bytes.chunks(CHUNK).enumerate() {
            value[..part.len()].copy_from_slice(part);
            value[part.len()..].fill(0);
            self.update(chunk_key(r, buffer, idx), &value).map_err(self.io_err("writing the ledger"))?;
        }
        let header = Header { buffer, len: bytes.len() as u64, checksum: checksum(bytes) };
        self.update(header_key(r), &header.to_chunk()).map_err(self.io_err("writing the ledger"))?;
        // Chunks of an earlier, longer record in this buffer: dropped so the map holds only what
        // is current. Unknown after a restart, so probed until the first gap.
        let before = self.held[r as usize][buffer as usize];
        let mut idx = chunks;
        while before.is_none_or(|b| idx < b) && idx < MAX_CHUNKS {
            if !self.delete(chunk_key(r, buffer, idx)) && before.is_none() {
                break;
            }
            idx += 1;
        }
        self.held[r as usize][buffer as usize] = Some(chunks);
        Ok(())
    }

    /// Record `r` as last written whole; `None` when there is none or it does not check out.
    pub fn read(&self, r: Record) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(h) = self.header(r)? else { return Ok(None) };
        let len = usize::try_from(h.len).unwrap_or(usize::MAX);
        if len.div_ceil(CHUNK) > MAX_CHUNKS {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(len);
        let mut idx = 0;
        while out.len() < len {
            let Some(v) = self.lookup(chunk_key(r, h.buffer, idx)).map_err(self.io_err("reading the ledger"))? else {
                return Ok(None);
            };
            let take = (len - out.len()).min(CHUNK);
            out.extend_from_slice(&v[..take]);
            idx += 1;
        }
        Ok((checksum(&out) == h.checksum).then_some(out))
    }

    fn header(&self, r: Record) -> Result<Option<Header>, StoreError> {
        Ok(self.lookup(header_key(r)).map_err(self.io_err("reading the ledger"))?.and_then(|v| Header::from_chunk(&v)))
    }

    fn lookup(&self, key: u32) -> io::Result<Option<Box<[u8; CHUNK]>>> {
        let mut value = Box::new([0u8; CHUNK]);
        let mut attr = elem_attr(&self.fd, &key, value.as_mut_ptr());
        match sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn update(&self, key: u32, value: &[u8; CHUNK]) -> io::Result<()> {
        let mut attr = elem_attr(&self.fd, &key, value.as_ptr().cast_mut());
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Whether an element was there to delete.
    fn delete(&self, key: u32) -> bool {
        let mut attr = elem_attr(&self.fd, &key, std::ptr::null_mut());
        sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr).is_ok()
    }
}

/// `bpf_attr` for the element commands: map fd, key pointer, value pointer, flags 0.
fn elem_attr(fd: &OwnedFd, key: &u32, value: *mut u8) -> [u8; 32] {
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(std::ptr::from_ref(key) as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(value as u64).to_ne_bytes());
    attr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_checksums() {
        let h = Header { buffer: 1, len: 70_000, checksum: checksum(b"abc") };
        assert_eq!(Header::from_chunk(&h.to_chunk()), Some(h));
        assert_eq!(Header::from_chunk(&[0u8; CHUNK]), None);
        assert_ne!(checksum(b"abc"), checksum(b"abd"));
        assert_ne!(chunk_key(Record::Table, 1, 0), chunk_key(Record::Acc, 1, 0));
        assert_ne!(chunk_key(Record::Acc, 0, 5), chunk_key(Record::Acc, 1, 5));
        assert!(chunk_key(Record::Acc, 1, MAX_CHUNKS - 1) < header_key(Record::Table));
    }

    /// Against the kernel (root): a record survives being rewritten shorter and longer, and a
    /// second handle opened by path (a new agent) reads what the first wrote.
    #[test]
    fn records_round_trip_through_a_pinned_map() {
        let bpffs = Path::new("/sys/fs/bpf");
        let pin = bpffs.join(format!("azflow-ledger-test-{}", std::process::id()));
        let mut store = match LedgerStore::open_or_create(&pin) {
            Ok(s) => s,
            Err(e) if std::env::var_os("AZFLOW_REQUIRE_EBPF").is_none() && !nix_is_root() => {
                eprintln!("SKIPPED: no BPF here ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let long: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        store.write(Record::Acc, &long).expect("write");
        store.write(Record::Acc, b"short").expect("write");
        store.write(Record::Table, &long).expect("write");
        let again = LedgerStore::open(&pin).expect("open").expect("pinned");
        assert_eq!(again.read(Record::Acc).expect("read").as_deref(), Some(&b"short"[..]));
        assert_eq!(again.read(Record::Table).expect("read"), Some(long.clone()));
        drop(again);
        let mut again = LedgerStore::open(&pin).expect("open").expect("pinned");
        again.write(Record::Acc, &long).expect("write");
        assert_eq!(store.read(Record::Acc).expect("read"), Some(long));
        let _ = std::fs::remove_file(&pin);
    }

    fn nix_is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
