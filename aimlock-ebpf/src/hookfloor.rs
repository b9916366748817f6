//! The floor for benchmarks: empty programs on the hooks aimlock uses for lock events and exits,
//! as BTF tracepoints (the cheapest kind of hook) and as classic tracepoints. What a traced lock
//! operation costs under them is what the hooks alone cost, whatever a program does.
//! The `record_btf_*` programs are the least a tracer that writes one timestamped record per
//! event can do: read the clock and write a 16-byte record (time, pid and tid) to a ring.
//! `hookfloor` in aimlock-tests loads them. They are an object of their own, so the one aimlock
//! embeds carries only its own programs.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, tracepoint},
    maps::RingBuf,
    programs::{BtfTracePointContext, TracePointContext},
};

/// The minimal records; hookfloor drains it without waking up for each.
#[map]
static FLOOR_RECORDS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[inline(always)]
fn record() {
    if let Some(mut entry) = FLOOR_RECORDS.reserve::<[u64; 2]>(0) {
        // SAFETY: a helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        entry.write([now, bpf_get_current_pid_tgid()]);
        entry.submit(u64::from(BPF_RB_NO_WAKEUP));
    }
}

#[btf_tracepoint(function = "flock_lock_inode")]
pub fn record_btf_flock_lock_inode(_ctx: BtfTracePointContext) -> i32 {
    record();
    0
}

#[btf_tracepoint(function = "posix_lock_inode")]
pub fn record_btf_posix_lock_inode(_ctx: BtfTracePointContext) -> i32 {
    record();
    0
}

/// Failures only, as aimlock records them.
#[btf_tracepoint(function = "fcntl_setlk")]
pub fn record_btf_fcntl_setlk(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(2);
    if ret < 0 {
        record();
    }
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn record_btf_sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    record();
    0
}

#[btf_tracepoint(function = "flock_lock_inode")]
pub fn floor_btf_flock_lock_inode(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "posix_lock_inode")]
pub fn floor_btf_posix_lock_inode(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "fcntl_setlk")]
pub fn floor_btf_fcntl_setlk(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn floor_btf_sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[tracepoint(category = "filelock", name = "flock_lock_inode")]
pub fn floor_tp_flock_lock_inode(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "filelock", name = "posix_lock_inode")]
pub fn floor_tp_posix_lock_inode(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "filelock", name = "fcntl_setlk")]
pub fn floor_tp_fcntl_setlk(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn floor_tp_sched_process_exit(_ctx: TracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
