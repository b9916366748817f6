//! aimlock's kernel programs.
//!
//! Every program does the same small thing: filter on who is running (pid, comm) and, for lock
//! events, on which inode; then write one fixed-size [`Record`] into the `EVENTS` ring buffer,
//! or count a drop when the ring is full. The tracepoint's own record is copied verbatim and
//! decoded in user space, with field offsets read from the tracepoint's `format` file, so the
//! programs never depend on one kernel's layout.
#![no_std]
#![no_main]

use aimlock_common::{ABSENT, Config, InodeKey, MAX_FILTER_ENTRIES, PAYLOAD_LEN, Record, Source};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;

/// Records for user space. Its size is set at load time (`aimlock trace --ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Per-CPU count of records the ring refused because it was full.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU time of the last record that woke the reader up.
#[map]
static LAST_WAKEUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Wake the reader at most this often per CPU: waking it for every record of a burst would
/// cost more than the record itself. An event after a quiet spell still wakes it at once, and
/// the reader also polls on a short timer.
const WAKEUP_INTERVAL_NS: u64 = 1_000_000;

/// `--pid`: thread group ids to record (children forked by them are added).
#[map]
static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// `--comm`: command names to record, NUL-padded to 16 bytes.
#[map]
static COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// `--path`: inodes to record.
#[map]
static INODES: HashMap<InodeKey, u8> = HashMap::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Field offsets and filter switches, written by user space before load.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::DEFAULT;

macro_rules! config {
    ($($field:tt)+) => {
        // SAFETY: CONFIG is a read-only global; the volatile read stops the compiler from
        // folding in the default value that user space overrides at load time.
        unsafe { core::ptr::read_volatile(&CONFIG.$($field)+) }
    };
}

/// `filelock:flock_lock_inode`, fired at the end of every `flock_lock_inode()` call in
/// fs/locks.c: each flock(2) attempt (granted, refused or deferred), each LOCK_UN, and the
/// release of a file's flock locks on its last close (`locks_remove_flock`, FL_CLOSE).
#[tracepoint(category = "filelock", name = "flock_lock_inode")]
pub fn flock_lock_inode(ctx: TracePointContext) -> u32 {
    let (dev, ino) = (config!(flock.dev), config!(flock.ino));
    emit_lock(&ctx, Source::Flock, dev, ino)
}

/// `filelock:posix_lock_inode`, fired at the end of every `posix_lock_inode()` call: POSIX
/// (fcntl F_SETLK(W), lockf) and OFD (F_OFD_SETLK(W)) attempts, unlocks, and the unlocks that
/// `locks_remove_posix` (any close) and `locks_remove_file` (last close, OFD) issue.
#[tracepoint(category = "filelock", name = "posix_lock_inode")]
pub fn posix_lock_inode(ctx: TracePointContext) -> u32 {
    let (dev, ino) = (config!(posix.dev), config!(posix.ino));
    emit_lock(&ctx, Source::Posix, dev, ino)
}

/// `filelock:fcntl_setlk`, fired once per F_SETLK(W)/F_OFD_SETLK(W) call in `fcntl_setlk()`
/// with its final result. Only failures are recorded: successes are already seen by
/// `posix_lock_inode`, but a wait interrupted by a signal (EINTR) is only visible here.
#[tracepoint(category = "filelock", name = "fcntl_setlk")]
pub fn fcntl_setlk(ctx: TracePointContext) -> u32 {
    let ret_off = usize::from(config!(fcntl.ret));
    // SAFETY: the offset was read from this tracepoint's format file.
    match unsafe { ctx.read_at::<i32>(ret_off) } {
        Ok(ret) if ret < 0 => {}
        Ok(_) => return 0,
        Err(_) => {
            warn!(&ctx, "fcntl_setlk: cannot read ret");
            return 0;
        }
    }
    let (dev, ino) = (config!(fcntl.dev), config!(fcntl.ino));
    emit_lock(&ctx, Source::FcntlFailure, dev, ino)
}

/// `filelock:generic_add_lease`, fired when `generic_add_lease()` starts setting a lease.
#[tracepoint(category = "filelock", name = "generic_add_lease")]
pub fn generic_add_lease(ctx: TracePointContext) -> u32 {
    let (dev, ino) = (config!(lease_add.dev), config!(lease_add.ino));
    emit_lock(&ctx, Source::LeaseAdd, dev, ino)
}

/// `filelock:generic_delete_lease`, fired when `generic_delete_lease()` removes a lease.
#[tracepoint(category = "filelock", name = "generic_delete_lease")]
pub fn generic_delete_lease(ctx: TracePointContext) -> u32 {
    let (dev, ino) = (config!(lease_delete.dev), config!(lease_delete.ino));
    emit_lock(&ctx, Source::LeaseDelete, dev, ino)
}

/// `sched:sched_process_exit`, fired early in `do_exit()` (kernel/exit.c), BEFORE
/// `exit_files()` closes the process's files. Only the exit of a whole thread group is
/// recorded: `group_dead` where the kernel has it, the leader's exit otherwise.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let group_dead = config!(exit.group_dead);
    let whole_group = if group_dead == ABSENT {
        pid_tgid >> 32 == pid_tgid & 0xffff_ffff
    } else {
        // SAFETY: the offset was read from this tracepoint's format file.
        unsafe { ctx.read_at::<u8>(usize::from(group_dead)) }.is_ok_and(|dead| dead != 0)
    };
    if !whole_group {
        return 0;
    }
    emit(&ctx, Source::Exit, pid_tgid);
    0
}

/// `sched:sched_process_fork`, fired in `copy_process()`: with `--pid`, children of traced
/// processes are traced too, since they inherit their parents' open file descriptions.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    if config!(filter_pid) == 0 {
        return 0;
    }
    let (parent_off, child_off) = (config!(fork.parent_pid), config!(fork.child_pid));
    // SAFETY: the offsets were read from this tracepoint's format file.
    let pids = unsafe {
        (
            ctx.read_at::<u32>(usize::from(parent_off)),
            ctx.read_at::<u32>(usize::from(child_off)),
        )
    };
    if let (Ok(parent), Ok(child)) = pids {
        // SAFETY: the value is only tested for presence.
        if unsafe { PIDS.get(parent) }.is_some() && PIDS.insert(child, 1, 0).is_err() {
            warn!(
                &ctx,
                "pid filter full: child {} of {} is not traced", child, parent
            );
        }
    }
    0
}

fn emit_lock(ctx: &TracePointContext, source: Source, dev_off: u16, ino_off: u16) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if config!(filter_inode) != 0 {
        // SAFETY: the offsets were read from this tracepoint's format file.
        let key = unsafe {
            match (
                ctx.read_at::<u32>(usize::from(dev_off)),
                ctx.read_at::<u64>(usize::from(ino_off)),
            ) {
                (Ok(dev), Ok(ino)) => InodeKey { dev, _pad: 0, ino },
                _ => return 0,
            }
        };
        // SAFETY: the value is only tested for presence.
        if unsafe { INODES.get(key) }.is_none() {
            return 0;
        }
    }
    emit(ctx, source, pid_tgid);
    0
}

/// Applies the process filters, then writes one record (or counts a drop).
fn emit(ctx: &TracePointContext, source: Source, pid_tgid: u64) {
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence.
    if config!(filter_pid) != 0 && unsafe { PIDS.get(pid) }.is_none() {
        return;
    }
    let comm = bpf_get_current_comm().unwrap_or_default();
    // SAFETY: the value is only tested for presence.
    if config!(filter_comm) != 0 && unsafe { COMMS.get(comm) }.is_none() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Record>(0) else {
        if let Some(drops) = DROPS.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot, only written by this CPU with preemption disabled.
            unsafe { *drops += 1 };
        }
        return;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring memory the size of a Record; every field is
    // written before the entry is submitted.
    unsafe {
        (*record).ts_ns = now;
        (*record).pid = pid;
        (*record).tid = pid_tgid as u32;
        (*record).source = source as u8;
        (*record)._pad = [0; 7];
        (*record).comm = comm;
        let payload: &mut [u8; PAYLOAD_LEN] = &mut (*record).payload;
        if bpf_probe_read_kernel_buf(ctx.as_ptr().cast(), payload).is_err() {
            *payload = [0; PAYLOAD_LEN];
        }
    }
    let wakeup = match LAST_WAKEUP.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, only used by this CPU with preemption disabled.
        Some(last) => unsafe {
            if now.wrapping_sub(*last) < WAKEUP_INTERVAL_NS {
                BPF_RB_NO_WAKEUP
            } else {
                *last = now;
                BPF_RB_FORCE_WAKEUP
            }
        },
        None => 0,
    };
    entry.submit(u64::from(wakeup));
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
