//! The static release's allocator. musl's own malloc is slow on the tracer's many small
//! allocations: mimalloc takes its place there (built without transparent huge pages, see the
//! workspace's Cargo.toml).

use libmimalloc_sys::{
    mi_option_eager_commit_delay, mi_option_set, mi_option_t, mi_option_use_numa_nodes,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h, which the bindings name no constant for: the option
/// between the two below.
const PURGE_DELAY: mi_option_t = 15;
const _: () = assert!(
    mi_option_eager_commit_delay + 1 == PURGE_DELAY && PURGE_DELAY + 1 == mi_option_use_numa_nodes
);

/// Pages freed go back to the kernel at once rather than 10 ms later: what a long-running tracer
/// costs is its resident memory, and pages kept for reuse while a burst allocates others raised
/// its peak by a fifth (100,000 locks held: 62 to 67 MiB against 52 to 55). Called before the
/// tracer starts any thread: mimalloc's options are not thread-safe.
pub fn give_memory_back_at_once() {
    // SAFETY: an option setter, called while the process has one thread.
    unsafe { mi_option_set(PURGE_DELAY, 0) };
}

/// Pages freed go back to the kernel 100 ms after they are freed rather than 10: a report frees
/// a piece's memory and allocates the next's within that time. With the default, a whole report
/// of a 1 GB log on one core faulted 287,000 to 297,000 pages in, zeroed, against 208,000 to
/// 211,000, and took 5.4 to 5.7 s against 5.1 to 5.5 s; a span query's peak grew from 112 to
/// 123 MiB (pages never given back, `-1`: 141 MiB). Called before the report starts any
/// thread.
pub fn give_memory_back_after_a_while() {
    // SAFETY: an option setter, called while the process has one thread.
    unsafe { mi_option_set(PURGE_DELAY, 100) };
}
