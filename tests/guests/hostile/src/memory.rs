//! Attacks on linear memory: growing it without bound, one huge allocation, and a writer/reader
//! pair that checks whether an instance can see bytes another instance left behind.

use std::hint::black_box;

use serde_json::json;

use crate::bindings::airlock::connector::log::{Level, write as log};
use crate::bindings::airlock::connector::types::ErrorKind;
use crate::input::Input;
use crate::{Outcome, error};
use linear::{memory_grow, memory_size};

const PAGE: usize = 64 * 1024;
const DEFAULT_PATTERN: &str = "AIRLOCK-PATTERN!";

/// Grows memory 0 by `step_pages` (default 16) wasm pages at a time until a growth is refused,
/// then reports the size reached. A host that traps on growth instead of refusing it ends the
/// call here; the progress logged every 16 MiB then shows how far it got.
pub(crate) fn grow_memory(input: &Input) -> Outcome {
    let step = input.usize("step_pages", 16)?.max(1);
    let start = memory_size(0);
    let mut logged_at = start;
    while memory_grow(0, step) != usize::MAX {
        let pages = memory_size(0);
        if pages - logged_at >= 256 {
            log(Level::Info, &format!("grow_memory: {pages} pages"));
            logged_at = pages;
        }
    }
    let pages = memory_size(0);
    Ok(json!({
        "pages": pages,
        "start_pages": start,
        "grown_pages": pages - start,
        "bytes": pages as u64 * PAGE as u64,
    })
    .to_string())
}

/// Allocates `bytes` (default `isize::MAX`, 2 GiB - 1, the largest allocation Rust allows on
/// wasm32) zeroed bytes and writes one byte per 4 KiB so the host has to commit them. When
/// the allocator cannot grow memory, Rust aborts: a trap. Above `isize::MAX` the `Vec` panics
/// with "capacity overflow" (also a trap) before asking for memory.
pub(crate) fn alloc_huge(input: &Input) -> Outcome {
    let bytes = input.usize("bytes", isize::MAX as usize)?;
    log(
        Level::Info,
        &format!("alloc_huge: allocating {bytes} bytes"),
    );
    let mut block = vec![0u8; bytes];
    let mut touched = 0u64;
    for i in (0..bytes).step_by(4096) {
        block[i] = 1;
        touched += 1;
    }
    black_box(&mut block);
    Ok(json!({ "allocated": bytes, "touched_pages": touched }).to_string())
}

/// Fills `bytes` (default 8 MiB) of freshly allocated heap with `pattern` (default
/// "AIRLOCK-PATTERN!") repeated, and leaks it so it stays live until the instance is dropped.
///
/// The bytes written are the bitwise complement of the pattern, and `read_pattern` looks for
/// that complement: the reading instance holds the pattern itself in its input, and must never
/// find its own copy. Tests simply pass the same `pattern` to both actions.
pub(crate) fn write_pattern(input: &Input) -> Outcome {
    let pattern = pattern(input)?;
    let bytes = input.usize("bytes", 8 * 1024 * 1024)?;
    let written: &'static mut [u8] = complement_fill(pattern, bytes).leak();
    black_box(written);
    Ok(json!({ "written": bytes }).to_string())
}

/// Allocates `bytes` (default 8 MiB) of fresh heap and grows memory by `grow_pages` (default
/// 128, 8 MiB) more, then scans every byte of linear memory (all of it, from address 1 to
/// `memory.size`, which covers both) for the complement of `pattern` (see `write_pattern`).
/// `plant: true` first writes one copy itself: the positive control proving the scan works.
pub(crate) fn read_pattern(input: &Input) -> Outcome {
    let pattern = pattern(input)?;
    let bytes = input.usize("bytes", 8 * 1024 * 1024)?;
    let grow_pages = input.usize("grow_pages", 128)?;
    let plant = input.bool("plant", false)?;

    let fresh: Vec<u8> = Vec::with_capacity(bytes);
    black_box(&fresh);
    let grew = grow_pages > 0 && memory_grow(0, grow_pages) != usize::MAX;
    let planted = plant.then(|| complement_fill(pattern, pattern.len() * 4));
    black_box(&planted);

    let end = memory_size(0) * PAGE;
    let found_at = scan::find_complement(pattern, 1, end);
    Ok(json!({
        "found": found_at.is_some(),
        "found_at": found_at,
        "scanned_bytes": end - 1,
        "memory_bytes": end,
        "grew": grew,
    })
    .to_string())
}

fn pattern(
    input: &Input,
) -> Result<&[u8], crate::bindings::airlock::connector::types::ConnectorError> {
    let pattern = input.str("pattern", DEFAULT_PATTERN)?.as_bytes();
    if pattern.is_empty() {
        return Err(error(ErrorKind::InvalidInput, "pattern must not be empty"));
    }
    Ok(pattern)
}

fn complement_fill(pattern: &[u8], bytes: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(bytes);
    block.extend(pattern.iter().map(|b| !b).cycle().take(bytes));
    block
}

/// Memory 0's `memory.size` and `memory.grow` instructions.
#[cfg(target_arch = "wasm32")]
mod linear {
    pub(super) use core::arch::wasm32::{memory_grow, memory_size};
}

/// Off wasm (a host-side `cargo clippy --workspace`) there is no linear memory: nothing to
/// grow and nothing to scan. The guest only ever runs as wasm32.
#[cfg(not(target_arch = "wasm32"))]
mod linear {
    pub(super) fn memory_size(_memory: u32) -> usize {
        0
    }

    pub(super) fn memory_grow(_memory: u32, _pages: usize) -> usize {
        usize::MAX
    }
}

#[allow(
    unsafe_code,
    reason = "the probe reads linear memory it does not own, by address: that is the attack"
)]
mod scan {
    /// The first address in `start..end` where the complement of `pattern` begins.
    ///
    /// Each byte is complemented as it is read and compared with the pattern held as is, so
    /// the complement is never materialised in this instance's memory.
    pub(super) fn find_complement(pattern: &[u8], start: usize, end: usize) -> Option<usize> {
        let (&first, rest) = pattern.split_first()?;
        let last = end.checked_sub(pattern.len())?;
        (start..=last).find(|&addr| {
            !read(addr) == first
                && rest
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| !read(addr + 1 + i) == b)
        })
    }

    fn read(addr: usize) -> u8 {
        // SAFETY: callers pass 0 < addr < memory.size * 64 KiB, so this is an in-bounds,
        // non-null load of linear memory and cannot trap. The byte may be uninitialised or
        // belong to another Rust object; Rust promises nothing about its value, which is why the
        // read is volatile (it compiles to one plain `i32.load8_u`) and only compared, never
        // used to build a reference.
        unsafe { core::ptr::with_exposed_provenance::<u8>(addr).read_volatile() }
    }
}
