//! Test-bed names: unique across threads and processes, and traceable to the owning process so a
//! sweeper can tell a crashed run's leftovers from a bed that a concurrent test is still using.
//!
//! A bed id looks like `azft-<pid>-<start>-<seq>`: the owner's pid, the owner's start time (clock
//! ticks since boot, base 36, so a reused pid is not mistaken for the owner) and a per-process
//! sequence number. Network namespaces append `-<host>` (or `-r` for the router) and the cgroup
//! directory is the bare id.

use std::{
    fmt, fs,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};

/// The prefix of every name a test bed creates (network namespaces, cgroup directories).
pub const PREFIX: &str = "azft-";

static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// The identity of one test bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BedId {
    pid: u32,
    start: u64,
    seq: u32,
}

impl BedId {
    /// A fresh id owned by the calling process.
    pub fn new() -> Result<BedId> {
        let pid = std::process::id();
        let start = process_start_time(pid)?
            .with_context(|| format!("own process {pid} is missing from /proc"))?;
        Ok(BedId {
            pid,
            start,
            seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// An id with an explicit owner, e.g. to fabricate a stale bed in a test of the sweeper.
    pub fn with_owner(pid: u32, start_time: u64, seq: u32) -> BedId {
        BedId {
            pid,
            start: start_time,
            seq,
        }
    }

    /// The pid of the process that created the bed.
    pub fn owner_pid(&self) -> u32 {
        self.pid
    }

    /// Parses a name that starts with a bed id (`azft-<pid>-<start>-<seq>[-<suffix>]`), returning
    /// the id and the suffix after it (without the dash; empty for a bare id).
    pub fn parse(name: &str) -> Option<(BedId, &str)> {
        let rest = name.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(4, '-');
        let pid = parts.next()?.parse().ok()?;
        let start = u64::from_str_radix(parts.next()?, 36).ok()?;
        let seq = parts.next()?.parse().ok()?;
        let suffix = parts.next().unwrap_or("");
        Some((BedId { pid, start, seq }, suffix))
    }

    /// Whether the owning process still runs (same pid and same start time, not a zombie).
    pub fn owner_alive(&self) -> Result<bool> {
        Ok(process_start_time(self.pid)? == Some(self.start))
    }
}

impl fmt::Display for BedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}-{}-{}",
            self.pid,
            to_base36(self.start),
            self.seq
        )
    }
}

fn to_base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[usize::try_from(n % 36).expect("a digit below 36 fits usize")]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base-36 digits are ASCII")
}

/// The start time (field 22 of /proc/PID/stat) of a live process, or None if there is no such
/// process or it is a zombie.
pub fn process_start_time(pid: u32) -> Result<Option<u64>> {
    let path = format!("/proc/{pid}/stat");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // ESRCH: the process exited between the open and the read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {path}")),
    };
    parse_stat_start_time(&text).with_context(|| format!("parsing {path}: {text:?}"))
}

/// The start time from the text of /proc/PID/stat, or None for a zombie.
fn parse_stat_start_time(stat: &str) -> Result<Option<u64>> {
    // The command name (field 2) is in parentheses and may itself contain spaces or parentheses.
    let Some((_, after_comm)) = stat.rsplit_once(')') else {
        bail!("no ')' after the command name");
    };
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    let state = fields.first().context("no state field")?;
    if *state == "Z" || *state == "X" {
        return Ok(None);
    }
    let start = fields.get(19).context("no starttime field")?;
    Ok(Some(start.parse().context("starttime is not a number")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_suffix() {
        let id = BedId::with_owner(4242, 123_456_789, 7);
        let name = format!("{id}-a1");
        assert_eq!(name, "azft-4242-21i3v9-7-a1");
        assert_eq!(BedId::parse(&name), Some((id, "a1")));
        assert_eq!(BedId::parse(&id.to_string()), Some((id, "")));
    }

    #[test]
    fn rejects_foreign_names() {
        for name in [
            "azft-proto-r",
            "azft-",
            "other-1-2-3",
            "azft-1-zz",
            "azft-x-1-2",
        ] {
            assert_eq!(BedId::parse(name), None, "{name}");
        }
    }

    #[test]
    fn own_process_is_alive_and_fresh_ids_differ() {
        let a = BedId::new().expect("own id");
        let b = BedId::new().expect("own id");
        assert_ne!(a, b);
        assert!(a.owner_alive().expect("read /proc"));
        let fake = BedId::with_owner(a.pid, a.start + 1, 0);
        assert!(!fake.owner_alive().expect("read /proc"));
    }

    #[test]
    fn stat_with_parentheses_in_name() {
        let stat = "123 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20";
        assert_eq!(parse_stat_start_time(stat).expect("parses"), Some(999));
        let zombie = "123 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20";
        assert_eq!(parse_stat_start_time(zombie).expect("parses"), None);
    }
}
