//! Batched hash-map operations (`BPF_MAP_{UPDATE,DELETE,LOOKUP}_BATCH`) through the raw
//! `bpf(2)` syscall: aya 0.14 has no batch API, and one syscall per entry makes a 1M
//! entry load syscall-bound (see the `sync_*` benchmarks for the two side by side).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use bytemuck::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Entries per syscall: large enough to amortize the call, small enough that one call
/// never holds the CPU for long.
pub const CHUNK: usize = 16 * 1024;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a live `repr(C)` `bpf_attr.batch`; its pointers are 0 or point
    // into slices the caller keeps alive for the call, sized for `count` entries (and
    // writable where the kernel writes: lookups).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Inserts or replaces `keys[i] → values[i]`.
pub fn update<K: Pod, V: Pod>(map: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    if keys.len() != values.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "keys and values differ in length",
        ));
    }
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    }
    Ok(())
}

/// Deletes `keys`; keys already absent are not an error. Returns how many were deleted.
pub fn delete<K: Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(CHUNK)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => {
                deleted += chunk.len();
                rest = &rest[chunk.len()..];
            }
            // The kernel stops at the first absent key; `count` says how far it got.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let done = attr.count as usize;
                deleted += done;
                rest = &rest[(done + 1).min(rest.len())..];
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Every entry of a hash map.
pub fn lookup_all<K: Pod, V: Pod>(map: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys = vec![K::zeroed(); CHUNK];
    let mut values = vec![V::zeroed(); CHUNK];
    // For hash maps the batch token is a bucket index (u32); 8 bytes leaves room.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match result {
            Ok(()) => {}
            // ENOENT: the walk reached the end.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use aya::maps::{HashMap, IterableMap, MapData};

    use super::*;

    #[test]
    fn update_lookup_delete_round_trip() {
        let mut map: HashMap<MapData, u64, u64> = HashMap::create(100_000, 0).unwrap();
        let fd = map.map().fd().as_fd();
        let keys: Vec<u64> = (0..50_000).collect();
        let values: Vec<u64> = keys.iter().map(|k| k * 3).collect();
        update(fd, &keys, &values).unwrap();
        let mut all: Vec<(u64, u64)> = lookup_all(fd).unwrap();
        all.sort_unstable();
        assert_eq!(all.len(), 50_000);
        assert!(all.iter().all(|&(k, v)| v == k * 3));
        // Absent keys (1_000_000) in the middle do not stop the deletion.
        let doomed = [1u64, 2, 1_000_000, 3, 1_000_001];
        assert_eq!(delete(fd, &doomed).unwrap(), 3);
        assert_eq!(lookup_all::<u64, u64>(fd).unwrap().len(), 49_997);
        assert!(map.get(&2, 0).is_err());
        map.insert(2u64, 6u64, 0).unwrap();
        assert_eq!(map.get(&2, 0).unwrap(), 6);
    }
}
