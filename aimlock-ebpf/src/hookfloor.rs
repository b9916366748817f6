//! The floor for benchmarks: empty programs on the hooks aimlock uses for lock events and exits,
//! as BTF tracepoints (the cheapest kind of hook) and as classic tracepoints. What a traced lock
//! operation costs under them is what the hooks alone cost, whatever a program does.
//! `hookfloor` in aimlock-tests loads them. They are an object of their own, so the one aimlock
//! embeds carries only its own programs.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};

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
