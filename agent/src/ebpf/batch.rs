//! Whole-map reads of per-CPU arrays with `BPF_MAP_LOOKUP_BATCH` (Linux ≥ 5.6): one system call
//! per chunk of elements instead of one per element. aya 0.16 does not expose it, so this calls
//! bpf(2) on the map's fd. A kernel without it answers EINVAL or ENOTSUPP, and the caller reads
//! element by element instead.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's ENOTSUPP (not in libc: it is internal, but bpf(2) returns it).
const ENOTSUPP: i32 = 524;
/// Elements per call: 1024 × CPUs × 16 B is 1.5 MiB on a 96-CPU host, 32 KiB on two.
const CHUNK: u32 = 1024;

/// Elements `0..len` of a per-CPU array, each summed over the CPUs with `add`. The kernel hands
/// out chunks of `CHUNK` elements with every CPU's value (stride: the value size rounded up to
/// 8 bytes); only the sums are kept, so memory does not grow with the CPU count.
/// `Ok(None)`: this kernel has no batch lookup.
pub fn sum_per_cpu_array<T: aya::Pod>(
    fd: BorrowedFd<'_>,
    len: u32,
    cpus: usize,
    zero: T,
    add: impl Fn(T, T) -> T,
) -> io::Result<Option<Vec<T>>> {
    sum_per_cpu_range(fd, 0, len, cpus, zero, add)
}

/// Elements `start..start + len` of a per-CPU array, as [`sum_per_cpu_array`]: a drain reads
/// the rows it has labels for, not a map sized for every row there could be.
pub fn sum_per_cpu_range<T: aya::Pod>(
    fd: BorrowedFd<'_>,
    start: u32,
    len: u32,
    cpus: usize,
    zero: T,
    add: impl Fn(T, T) -> T,
) -> io::Result<Option<Vec<T>>> {
    let stride = size_of::<T>().next_multiple_of(8);
    let per_element = stride * cpus;
    let room = CHUNK.min(len.max(1)) as usize;
    let mut values = vec![0u8; room * per_element];
    let mut keys = vec![0u32; room];
    let mut sums = Vec::with_capacity(len as usize);
    // The batch token names the last index read: the call after it starts at the next one.
    let mut token: u32 = start.wrapping_sub(1);
    while (sums.len() as u32) < len {
        let want = (room as u32).min(len - sums.len() as u32);
        let mut next: u32 = 0;
        // union bpf_attr, batch: in_batch u64 @0, out_batch u64 @8, keys u64 @16, values u64
        // @24, count u32 @32 (in: room, out: read), map_fd u32 @36, elem_flags u64 @40, flags
        // u64 @48. The batch token is the last index read (a u32); none to start at 0.
        let mut attr = [0u8; 56];
        if !sums.is_empty() || start > 0 {
            attr[..8].copy_from_slice(&(std::ptr::from_ref(&token) as u64).to_ne_bytes());
        }
        attr[8..16].copy_from_slice(&(std::ptr::from_mut(&mut next) as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(keys.as_mut_ptr() as u64).to_ne_bytes());
        attr[24..32].copy_from_slice(&(values.as_mut_ptr() as u64).to_ne_bytes());
        attr[32..36].copy_from_slice(&want.to_ne_bytes());
        attr[36..40].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
        // SAFETY: `attr` is a zero-padded bpf_attr for BPF_MAP_LOOKUP_BATCH; `keys` holds ≥ `want`
        // u32s and `values` ≥ `want` × per_element bytes; in_batch and out_batch point at u32s
        // (an array's key); all outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                attr.as_mut_ptr(),
                attr.len(),
            )
        };
        let mut count = [0u8; 4];
        count.copy_from_slice(&attr[32..36]);
        let got = u32::from_ne_bytes(count).min(want);
        let end = if ret < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The end of the array: `got` elements were still filled in.
                Some(libc::ENOENT) => true,
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if sums.is_empty() => {
                    return Ok(None);
                }
                _ => return Err(e),
            }
        } else {
            got == 0
        };
        for i in 0..got as usize {
            let element = &values[i * per_element..(i + 1) * per_element];
            sums.push(
                element
                    .chunks_exact(stride)
                    .filter_map(read_pod)
                    .fold(zero, &add),
            );
        }
        if end {
            break;
        }
        token = next;
    }
    if sums.len() != len as usize {
        return Err(io::Error::other(format!(
            "batch lookup read {} of {len} elements",
            sums.len()
        )));
    }
    Ok(Some(sums))
}

/// Elements `0..len` of a plain (not per-CPU) array. The kernel packs its values at exactly
/// their size, where per-CPU values are rounded up to 8 bytes: so `T` must be a multiple of 8
/// bytes for the two layouts to agree.
pub fn read_array<T: aya::Pod>(fd: BorrowedFd<'_>, len: u32, zero: T) -> io::Result<Option<Vec<T>>> {
    if !size_of::<T>().is_multiple_of(8) {
        return Err(io::Error::other(format!("{}-byte values: only multiples of 8 are read in batches", size_of::<T>())));
    }
    sum_per_cpu_array(fd, len, 1, zero, |_, v| v)
}

/// A `T` from the start of `cell` (one per-CPU stride, never shorter than `T`).
fn read_pod<T: aya::Pod>(cell: &[u8]) -> Option<T> {
    let bytes = cell.get(..size_of::<T>())?;
    // SAFETY: T is Pod (any bytes are a valid T) and `bytes` holds size_of::<T>() bytes;
    // read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

    use super::*;

    fn sys_bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<libc::c_long> {
        // SAFETY: each caller passes a zero-padded bpf_attr for `cmd` whose pointers outlive the call.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    fn ptr<T>(p: *const T) -> [u8; 8] {
        (p as u64).to_ne_bytes()
    }

    /// A per-CPU array of u64 pairs (as `Counter`), every cell set to a value that names its
    /// element and CPU; the batch sums equal the sums of single lookups, across chunk edges.
    #[test]
    fn batch_reads_equal_single_lookups_across_chunk_boundaries() {
        let Some(_root) = azflow_tests::require_root_or_skip() else {
            return;
        };
        let cpus = aya::util::nr_cpus()
            .map(|n| n.get() as usize)
            .expect("possible CPUs");
        let len: u32 = CHUNK * 2 + 17;
        let mut attr = [0u8; 72];
        attr[..4].copy_from_slice(&6u32.to_ne_bytes()); // BPF_MAP_TYPE_PERCPU_ARRAY
        attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
        attr[8..12].copy_from_slice(&16u32.to_ne_bytes());
        attr[12..16].copy_from_slice(&len.to_ne_bytes());
        let fd = sys_bpf(0, &mut attr).expect("BPF_MAP_CREATE");
        // SAFETY: the kernel returned a new map fd we now own.
        let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let cell = |i: u32, c: usize| {
            [
                u64::from(i) << 8 | c as u64,
                u64::from(i) * 1_000 + c as u64,
            ]
        };
        for i in 0..len {
            let values: Vec<[u64; 2]> = (0..cpus).map(|c| cell(i, c)).collect();
            let mut attr = [0u8; 32];
            attr[..4].copy_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
            attr[8..16].copy_from_slice(&ptr(&i));
            attr[16..24].copy_from_slice(&ptr(values.as_ptr()));
            sys_bpf(2, &mut attr).expect("BPF_MAP_UPDATE_ELEM");
        }
        let sum = |a: agent_common::Counter, b: agent_common::Counter| agent_common::Counter {
            bytes: a.bytes + b.bytes,
            packets: a.packets + b.packets,
        };
        let all = sum_per_cpu_array(
            map.as_fd(),
            len,
            cpus,
            agent_common::Counter::default(),
            sum,
        )
        .expect("batch read")
        .expect("kernel ≥ 5.6 has batch lookup");
        assert_eq!(all.len(), len as usize);
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, len - 1] {
            let mut single = vec![[0u64; 2]; cpus];
            let mut attr = [0u8; 32];
            attr[..4].copy_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
            attr[8..16].copy_from_slice(&ptr(&i));
            attr[16..24].copy_from_slice(&ptr(single.as_mut_ptr()));
            sys_bpf(1, &mut attr).expect("BPF_MAP_LOOKUP_ELEM");
            assert_eq!(
                single,
                (0..cpus).map(|c| cell(i, c)).collect::<Vec<_>>(),
                "element {i}"
            );
            let want = single
                .iter()
                .fold([0u64; 2], |a, c| [a[0] + c[0], a[1] + c[1]]);
            let got = all[i as usize];
            assert_eq!([got.bytes, got.packets], want, "element {i}");
        }
        for (start, n) in [(0, 3), (1, 1), (CHUNK - 3, 10), (CHUNK * 2 - 1, 3), (len - 5, 5)] {
            let range = sum_per_cpu_range(map.as_fd(), start, n, cpus, agent_common::Counter::default(), sum)
                .expect("range read")
                .expect("batch lookup");
            assert_eq!(range, all[start as usize..(start + n) as usize], "elements {start}..{}", start + n);
        }
    }

    /// A plain array of 64-byte values (the slot-seen flags' layout), across chunk edges.
    #[test]
    fn plain_array_batch_reads_equal_what_was_written() {
        let Some(_root) = azflow_tests::require_root_or_skip() else {
            return;
        };
        let len: u32 = CHUNK + 5;
        let mut attr = [0u8; 72];
        attr[..4].copy_from_slice(&2u32.to_ne_bytes()); // BPF_MAP_TYPE_ARRAY
        attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
        attr[8..12].copy_from_slice(&64u32.to_ne_bytes());
        attr[12..16].copy_from_slice(&len.to_ne_bytes());
        let fd = sys_bpf(0, &mut attr).expect("BPF_MAP_CREATE");
        // SAFETY: the kernel returned a new map fd we now own.
        let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let value = |i: u32| -> [u8; 64] { std::array::from_fn(|b| if b as u32 == i % 64 { (i % 251) as u8 + 1 } else { 0 }) };
        for i in (0..len).step_by(7) {
            let v = value(i);
            let mut attr = [0u8; 32];
            attr[..4].copy_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
            attr[8..16].copy_from_slice(&ptr(&i));
            attr[16..24].copy_from_slice(&ptr(v.as_ptr()));
            sys_bpf(2, &mut attr).expect("BPF_MAP_UPDATE_ELEM");
        }
        let all = read_array(map.as_fd(), len, [0u8; 64]).expect("batch read").expect("kernel ≥ 5.6 has batch lookup");
        assert_eq!(all.len(), len as usize);
        for (i, got) in all.iter().enumerate() {
            let want = if i % 7 == 0 { value(i as u32) } else { [0u8; 64] };
            assert_eq!(*got, want, "element {i}");
        }
        assert!(read_array(map.as_fd(), len, [0u8; 4]).is_err(), "a value size the layouts disagree on is refused");
    }
}
