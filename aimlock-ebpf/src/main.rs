//! aimlock's kernel programs.
//!
//! Every program does the same small thing: filter on who is running (pid, comm) and, for lock
//! events, on which inode; then write one fixed-size record, or count a drop when the ring is
//! full. A classic tracepoint's own record is copied verbatim into a [`Record`] and decoded in
//! user space, with field offsets read from the tracepoint's `format` file; the BTF lock programs
//! read the fields at offsets taken from the kernel's BTF. Neither depends on one kernel's layout.
//! A [`Record`] is a ring record of its own; the BTF lock programs' compact records go into their
//! CPU's batch, which reaches the `EVENTS` ring buffer whole (see `emit_btf` and `flush_batch`).
#![no_std]
#![no_main]

use aimlock_common::{
    ABSENT, BATCH_BYTES, BATCH_TRAILER, CLONE_THREAD, Config, ContextRecord, FileName, InodeKey,
    LockRecord, MAX_FILTER_ENTRIES, MAX_HOLDERS, NAME_LEN, PASSED_FDS, PAYLOAD_LEN, PF_EXITING,
    PassedFds, Record, RepeatRecord, SCM_RIGHTS, SOL_SOCKET, Source, btf_payload, task_state,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_get_smp_processor_id},
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
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

/// `--pid`: thread group ids to record. Processes they start are added, processes that are
/// gone are removed; its size is set at load time.
#[map]
static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Per-CPU count of processes started by traced processes that `PIDS`, being full, could not
/// take: they are not traced.
#[map]
static UNTRACED_CHILDREN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Threads whose flock(2) call was queued (`FILE_LOCK_DEFERRED`), with what the record of the
/// wait's end says: a signal delivered to such a thread ends its wait. Least recently used
/// entries go first: an entry left by a wait that ended with the lock only costs a lookup, and
/// the record a later signal makes of it finds no wait to end in user space.
#[map]
static FLOCK_WAITERS: LruHashMap<u32, FlockWait> =
    LruHashMap::with_max_entries(MAX_FILTER_ENTRIES, 0);

/// Each CPU's batch: the compact records its lock programs wrote that are not in the ring yet
/// (see `aimlock_common::BATCH_BYTES`).
#[map]
static BATCHES: PerCpuArray<Batch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Batch {
    /// Bytes of records in `bytes`.
    len: u64,
    /// Lock records among them: what a ring too full to take the batch loses.
    locks: u64,
    /// Set while a lock program fills the batch (see `flush_batch`).
    busy: u64,
    /// When the CPU's last lock program ran.
    last_ns: u64,
    bytes: [u8; BATCH_BYTES],
}

/// Per CPU, how many lock records wait in its batch, or [`WRITING`] while a lock program
/// fills it: user space reads them all at once to flush those that are not 0.
#[map]
static BATCHED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const WRITING: u64 = u64::MAX;

/// A lock call this long after the CPU's previous one goes to the ring at once: only calls in a
/// burst wait in the batch.
const BURST_GAP_NS: u64 = 1_000_000;

/// What each CPU's last records said. The last `ContextRecord` it wrote: a burst of lock records
/// of one process on one file writes it once. A rename changes the dentry's `hash_len` (the hash
/// is salted with the parent directory), so a renamed or moved file gets a new one; so do a new
/// program (comm), a reused pid (start time) and a new file at the same place (inode number,
/// generation). And the lock of its last `LockRecord`: a call on the same lock by the same
/// thread writes a `RepeatRecord` instead.
#[map]
static LAST_WRITTEN: PerCpuArray<LastWritten> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct LastWritten {
    context: LastContext,
    lock: LastLock,
}

#[repr(C)]
struct LastContext {
    /// 0: none, or a batch with it was refused by a full ring.
    pid: u64,
    start_boottime: u64,
    task_state: u64,
    comm: [u64; 2],
    ino: u64,
    generation: u64,
    dentry: u64,
    hash_len: u64,
}

/// What a `RepeatRecord` does not repeat of its `LockRecord` (but for the pid and the inode, in
/// the context).
#[repr(C)]
#[derive(PartialEq, Eq)]
struct LastLock {
    tid: u32,
    dev: u32,
    owner: u64,
    start: i64,
    end: i64,
    fl_pid: i32,
    nlink: u32,
    source: u64,
}

/// Processes that hold or may hold locks (thread group ids): those that wrote a lock record,
/// the holders user space found at start, the children they start and the processes that
/// received descriptors from them. Only their forks, execs and descriptor passing are recorded:
/// every other process leaves those hooks after one lookup.
#[map]
static HOLDERS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_HOLDERS, 0);

/// Per CPU, the last process marked in `HOLDERS` and the `HOLDERS_FREED` count then: a burst
/// of lock records marks its process once, and a pid freed and reused since is marked again.
#[map]
static LAST_HOLDER: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// How many processes have left `HOLDERS` (their pids may be reused).
#[map]
static HOLDERS_FREED: Array<u64> = Array::with_max_entries(1, 0);

/// When a process in `HOLDERS` last sent descriptors (CLOCK_MONOTONIC, 0: never): recvmsg
/// calls are looked at only within [`PASS_WINDOW_NS`] of it.
#[map]
static LAST_PASS: Array<u64> = Array::with_max_entries(1, 0);

/// A descriptor sent by a holder is looked for in the messages received this long after.
const PASS_WINDOW_NS: u64 = 10_000_000_000;

/// Threads in a recvmsg call, with the address of their msghdr: (tid, msghdr) in the slot of
/// the tid modulo its size. An array, not a hash map: every recvmsg call on the system writes
/// its slot, and a receiver usually blocks in recvmsg before the descriptor it gets is sent.
/// Two threads blocked at once in slots that collide lose the first one's receipt.
#[map]
static RECEIVING: Array<[u64; 2]> = Array::with_max_entries(RECEIVING_SLOTS, 0);

const RECEIVING_SLOTS: u32 = 65536;

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

/// BTF tracepoint on `flock_lock_inode` (the same event as the tracepoint below, with the
/// traced function's arguments `(struct inode *, struct file_lock *, int ret)` instead of a
/// formatted record: the cheapest hook the kernel offers).
#[btf_tracepoint(function = "flock_lock_inode")]
pub fn btf_flock_lock_inode(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(2);
    emit_btf(ctx.arg(0), ctx.arg(1), ret as i32, Source::Flock);
    0
}

/// BTF tracepoint on `posix_lock_inode`: see the tracepoint below.
#[btf_tracepoint(function = "posix_lock_inode")]
pub fn btf_posix_lock_inode(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(2);
    emit_btf(ctx.arg(0), ctx.arg(1), ret as i32, Source::Posix);
    0
}

/// BTF tracepoint on `fcntl_setlk`: failures only, see the tracepoint below.
#[btf_tracepoint(function = "fcntl_setlk")]
pub fn btf_fcntl_setlk(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(2);
    if ret < 0 {
        emit_btf(ctx.arg(0), ctx.arg(1), ret as i32, Source::FcntlFailure);
    }
    0
}

/// BTF tracepoint on `signal_deliver`, fired in `get_signal()` (kernel/signal.c) as a thread
/// takes a signal on its way back to user space: a handler, a stop, or a fatal default. A
/// queued flock(2) call sleeps in `wait_event_interruptible()` (fs/locks.c,
/// `locks_lock_inode_wait`), which a pending signal ends with -ERESTARTSYS: the call returns
/// without the lock and without another `flock_lock_inode` event, and the signal is delivered
/// next. This is where its wait ends. Only threads in `FLOCK_WAITERS` are looked at; every
/// other signal costs one lookup.
#[btf_tracepoint(function = "signal_deliver")]
pub fn btf_signal_deliver(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(wait) = (unsafe { FLOCK_WAITERS.get(tid) }).copied() else {
        return 0;
    };
    let _ = FLOCK_WAITERS.remove(tid);
    // The caller sees EINTR, or its call restarted (SA_RESTART) as a new attempt.
    let ret = -ERESTARTSYS;
    submit(
        pid_tgid,
        Source::FlockWaitEnd,
        |payload| {
            *payload = [0; PAYLOAD_LEN];
            let mut put = |at: u16, bytes: &[u8]| {
                let at = usize::from(at);
                payload[at..at + bytes.len()].copy_from_slice(bytes);
            };
            put(btf_payload::INO, &wait.ino.to_ne_bytes());
            put(btf_payload::DEV, &wait.dev.to_ne_bytes());
            put(btf_payload::RET, &ret.to_ne_bytes());
            put(btf_payload::OWNER, &wait.owner.to_ne_bytes());
            put(btf_payload::START, &wait.start.to_ne_bytes());
            put(btf_payload::END, &wait.end.to_ne_bytes());
            put(btf_payload::FLAGS, &wait.flags.to_ne_bytes());
            put(btf_payload::PID, &wait.fl_pid.to_ne_bytes());
            put(btf_payload::TYPE, &[wait.lock_type]);
        },
        |name| {
            *name = FileName::NONE;
            name.generation = wait.generation;
            name.nlink = wait.nlink;
        },
    );
    0
}

/// What a wait interrupted by a signal returns inside the kernel (include/linux/errno.h).
const ERESTARTSYS: i32 = 512;

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
    if !whole_group || !pid_wanted(pid_tgid) {
        return 0;
    }
    emit(&ctx, Source::Exit, pid_tgid);
    0
}

/// `task:task_newtask`, fired at the end of `copy_process()` (kernel/fork.c), once the new task
/// exists for good, in the context of the thread that forks, before the new task first runs.
/// Chosen over `sched:sched_process_fork` because it carries `clone_flags`: a new thread
/// (CLONE_THREAD) is already covered by its process and returns at once. A new process
/// inherits its parent's open file descriptions, so:
/// - with `--pid`, a child of a traced process is traced too;
/// - a child of a process in `HOLDERS` joins it, and a `Fork` record says so (lineage).
#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let (pid_off, flags_off) = (config!(new_task.pid), config!(new_task.clone_flags));
    // SAFETY: the offset was read from this tracepoint's format file.
    match unsafe { ctx.read_at::<u64>(usize::from(flags_off)) } {
        Ok(flags) if flags & CLONE_THREAD == 0 => {}
        _ => return 0,
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let parent = (pid_tgid >> 32) as u32;
    // SAFETY: the values are only tested for presence.
    let traced = config!(filter_pid) != 0 && unsafe { PIDS.get(parent) }.is_some();
    let holder = unsafe { HOLDERS.get(parent) }.is_some();
    if !traced && !holder {
        return 0;
    }
    // SAFETY: as above.
    let Ok(child) = (unsafe { ctx.read_at::<u32>(usize::from(pid_off)) }) else {
        return 0;
    };
    if traced && PIDS.insert(child, 1, 0).is_err() {
        count(&UNTRACED_CHILDREN, 1);
    }
    if holder {
        let _ = HOLDERS.insert(child, 1, 0);
        if pid_wanted(pid_tgid) {
            emit(&ctx, Source::Fork, pid_tgid);
        }
    }
    0
}

/// `sched:sched_process_exec`, fired by `exec_binprm()` (fs/exec.c) once a new program has
/// replaced the old one: after `begin_new_exec()` set the new comm and closed the close-on-exec
/// descriptors. Recorded for processes in `HOLDERS` only.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is only tested for presence.
    if unsafe { HOLDERS.get((pid_tgid >> 32) as u32) }.is_none() || !pid_wanted(pid_tgid) {
        return 0;
    }
    emit(&ctx, Source::Exec, pid_tgid);
    0
}

/// `syscalls:sys_enter_sendmsg`, fired on entry to sendmsg(2) (`__sys_sendmsg`, net/socket.c).
/// A process in `HOLDERS` that sends descriptors (SCM_RIGHTS) opens the window in which
/// recvmsg calls are looked at, and a `FdSent` record names what it sent. Every other process
/// returns after one lookup.
#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is only tested for presence.
    if unsafe { HOLDERS.get((pid_tgid >> 32) as u32) }.is_none() {
        return 0;
    }
    let msg_off = usize::from(config!(lineage.sendmsg_msg));
    // SAFETY: the offset was read from this tracepoint's format file.
    let Ok(msg) = (unsafe { ctx.read_at::<u64>(msg_off) }) else {
        return 0;
    };
    let Some(passed) = passed_fds(msg) else {
        return 0;
    };
    if let Some(last) = LAST_PASS.get_ptr_mut(0) {
        // SAFETY: a helper without arguments; a plain store into the map's value.
        unsafe { *last = bpf_ktime_get_ns() };
    }
    if pid_wanted(pid_tgid) {
        submit_passed(pid_tgid, Source::FdSent, &passed);
    }
    0
}

/// `syscalls:sys_enter_recvmsg`, fired on entry to recvmsg(2) (`__sys_recvmsg`): notes where
/// the call's msghdr is, for its exit (two stores into an array slot).
#[tracepoint(category = "syscalls", name = "sys_enter_recvmsg")]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let msg_off = usize::from(config!(lineage.recvmsg_msg));
    // SAFETY: the offset was read from this tracepoint's format file.
    if let Ok(msg) = unsafe { ctx.read_at::<u64>(msg_off) }
        && let Some(slot) = RECEIVING.get_ptr_mut(tid % RECEIVING_SLOTS)
    {
        // SAFETY: the map's value; a thread only races with a thread of a colliding tid.
        unsafe { *slot = [u64::from(tid), msg] };
    }
    0
}

/// `syscalls:sys_exit_recvmsg`, fired on return from recvmsg(2), when the kernel has installed
/// the received descriptors (`scm_detach_fds`) and written their numbers into the caller's
/// control buffer. Within the window after a holder sent descriptors, a call that received
/// SCM_RIGHTS writes a `FdReceived` record and its process joins `HOLDERS`; otherwise it
/// returns after one array lookup.
#[tracepoint(category = "syscalls", name = "sys_exit_recvmsg")]
pub fn sys_exit_recvmsg(ctx: TracePointContext) -> u32 {
    if !passing() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(slot) = RECEIVING.get_ptr_mut(tid % RECEIVING_SLOTS) else {
        return 0;
    };
    // SAFETY: the map's value, copied out and cleared at once.
    let [noted, msg] = unsafe { core::mem::take(&mut *slot) };
    if noted != u64::from(tid) {
        return 0;
    }
    let ret_off = usize::from(config!(lineage.recvmsg_ret));
    // SAFETY: the offset was read from this tracepoint's format file.
    match unsafe { ctx.read_at::<i64>(ret_off) } {
        Ok(ret) if ret >= 0 => {}
        _ => return 0,
    }
    let Some(passed) = passed_fds(msg) else {
        return 0;
    };
    let _ = HOLDERS.insert((pid_tgid >> 32) as u32, 1, 0);
    if pid_wanted(pid_tgid) {
        submit_passed(pid_tgid, Source::FdReceived, &passed);
    }
    0
}

/// Whether a holder sent descriptors recently enough for a message received now to carry them.
#[inline(always)]
fn passing() -> bool {
    match LAST_PASS.get(0) {
        Some(&0) | None => false,
        // SAFETY: a helper without arguments.
        Some(&last) => unsafe { bpf_ktime_get_ns() }.wrapping_sub(last) < PASS_WINDOW_NS,
    }
}

/// The descriptors of the first SCM_RIGHTS control message of the user's msghdr at `msg`, and
/// the open file description each refers to in the current process.
#[inline(always)]
fn passed_fds(msg: u64) -> Option<PassedFds> {
    let (control_off, controllen_off) = (
        u64::from(config!(lineage.msghdr_control)),
        u64::from(config!(lineage.msghdr_controllen)),
    );
    let (level_off, type_off) = (
        u64::from(config!(lineage.cmsg_level)),
        u64::from(config!(lineage.cmsg_type)),
    );
    let header = u64::from(config!(lineage.cmsg_size));
    // SAFETY: user memory, read through the fault-safe helper.
    let (control, controllen) = unsafe {
        (
            bpf_probe_read_user((msg + control_off) as *const u64).ok()?,
            bpf_probe_read_user((msg + controllen_off) as *const u64).ok()?,
        )
    };
    if control == 0 {
        return None;
    }
    // Credentials and security labels may come first (net/core/scm.c): a few messages in.
    let mut at = 0u64;
    for _ in 0..3 {
        if at + header > controllen {
            return None;
        }
        let cmsg = control + at;
        // SAFETY: as above; `cmsg_len` comes first in `struct cmsghdr` (the user ABI).
        let (len, level, kind) = unsafe {
            (
                bpf_probe_read_user(cmsg as *const u64).ok()?,
                bpf_probe_read_user((cmsg + level_off) as *const i32).ok()?,
                bpf_probe_read_user((cmsg + type_off) as *const i32).ok()?,
            )
        };
        if level == SOL_SOCKET && kind == SCM_RIGHTS && len >= header {
            let count = ((len - header) / 4) as u32;
            let mut passed = PassedFds {
                count,
                fds: [-1; PASSED_FDS],
                _pad: 0,
                files: [0; PASSED_FDS],
            };
            let fd_array = fd_array();
            for i in 0..PASSED_FDS {
                if i as u32 >= count {
                    break;
                }
                // SAFETY: as above, then the current task's own fd table (fault-safe reads).
                unsafe {
                    let Ok(fd) = bpf_probe_read_user((cmsg + header + 4 * i as u64) as *const i32)
                    else {
                        break;
                    };
                    passed.fds[i] = fd;
                    if fd_array != 0 && fd >= 0 {
                        passed.files[i] =
                            bpf_probe_read_kernel((fd_array + 8 * fd as u64) as *const u64)
                                .unwrap_or(0);
                    }
                }
            }
            return Some(passed);
        }
        // CMSG_NXTHDR: the next header at the length rounded up to a long.
        let step = (len + 7) & !7;
        if step == 0 {
            return None;
        }
        at += step;
    }
    None
}

/// The current process's array of open files (`current->files->fdt->fd`), 0 if unreadable.
#[inline(always)]
fn fd_array() -> u64 {
    let (files_off, fdt_off, fd_off) = (
        u64::from(config!(lineage.task_files)),
        u64::from(config!(lineage.files_fdt)),
        u64::from(config!(lineage.fdtable_fd)),
    );
    // SAFETY: a helper without arguments, then fault-safe reads of kernel memory.
    unsafe {
        let task = bpf_get_current_task();
        let Ok(files) = bpf_probe_read_kernel((task + files_off) as *const u64) else {
            return 0;
        };
        let Ok(fdt) = bpf_probe_read_kernel((files + fdt_off) as *const u64) else {
            return 0;
        };
        bpf_probe_read_kernel((fdt + fd_off) as *const u64).unwrap_or(0)
    }
}

fn submit_passed(pid_tgid: u64, source: Source, passed: &PassedFds) {
    submit(
        pid_tgid,
        source,
        |payload| {
            *payload = [0; PAYLOAD_LEN];
            // SAFETY: PassedFds (56 bytes) fits the payload; unaligned-safe write.
            unsafe {
                core::ptr::write_unaligned(payload.as_mut_ptr().cast::<PassedFds>(), *passed)
            };
        },
        |file| *file = FileName::NONE,
    );
}

/// `sched:sched_process_free`, fired in `delayed_put_task_struct()` (kernel/exit.c) when a
/// reaped task's last reference goes, an RCU grace period after its exit: long after
/// `do_exit()` closed its files, so the releases of an exit are still traced. A thread group's
/// leader is only reaped once every thread of the group has exited, so when its id is freed the
/// process is gone and leaves the `--pid` filter and `HOLDERS` (other threads' ids are never
/// keys).
#[tracepoint(category = "sched", name = "sched_process_free")]
pub fn sched_process_free(ctx: TracePointContext) -> u32 {
    let pid_off = config!(free.pid);
    // SAFETY: the offset was read from this tracepoint's format file.
    if let Ok(pid) = unsafe { ctx.read_at::<u32>(usize::from(pid_off)) } {
        // Fail for every task that was not a traced process or a holder: nothing to do then.
        if config!(filter_pid) != 0 {
            let _ = PIDS.remove(pid);
        }
        if HOLDERS.remove(pid).is_ok()
            && let Some(freed) = HOLDERS_FREED.get_ptr_mut(0)
        {
            // SAFETY: the map's value. Not atomic (atomic fetches need 5.12): an increment two
            // CPUs lose at once only keeps a per-CPU cache entry of a reused pid a while longer.
            unsafe { *freed += 1 };
        }
    }
    0
}

/// The BTF programs' half of the work: the inode's number and device, the result, and the
/// fields of the `struct file_lock`, read with direct loads (see [`load`]).
/// Returns whether the record passed the filters (written, or counted as dropped).
fn emit_btf(inode: *const u8, lock: *const u8, ret: i32, source: Source) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !pid_wanted(pid_tgid) {
        return false;
    }
    // The verifier allows no arithmetic on a pointer that may be null.
    if inode.is_null() || lock.is_null() {
        return false;
    }
    let Some((ino, dev)) = inode_number(inode) else {
        return false;
    };
    if !inode_wanted(dev, ino) {
        return false;
    }
    let file = FileOf::read(inode, lock);
    let fields = LockOf::read(lock);
    let process = current_process();
    if !comm_wanted(&process.comm) {
        return false;
    }
    let pid = (pid_tgid >> 32) as u32;
    if matches!(source, Source::Flock | Source::Posix) {
        mark_holder(pid);
    }
    if source == Source::Flock && ret == 1 {
        // FILE_LOCK_DEFERRED: queued. A grant ends the wait with another call of this
        // function; a signal ends it without one (see `btf_signal_deliver`).
        let wait = FlockWait {
            ino,
            owner: fields.owner,
            start: fields.start,
            end: fields.end,
            dev,
            flags: fields.flags,
            fl_pid: fields.fl_pid,
            generation: file.generation,
            nlink: file.nlink,
            lock_type: fields.lock_type,
            _pad: [0; 3],
        };
        let _ = FLOCK_WAITERS.insert(pid_tgid as u32, wait, 0);
    }
    let context = LastContext {
        pid: u64::from(pid),
        start_boottime: process.start_boottime,
        task_state: u64::from(process.task_state),
        // SAFETY: 16 bytes as two words, compared without a call to memcmp.
        comm: unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(process.comm) },
        ino,
        generation: u64::from(file.generation),
        dentry: file.dentry as u64,
        hash_len: file.hash_len,
    };
    let lock = LastLock {
        tid: pid_tgid as u32,
        dev,
        owner: fields.owner,
        start: fields.start,
        end: fields.end,
        fl_pid: fields.fl_pid,
        nlink: file.nlink,
        source: source as u64,
    };
    let (Some(batch), Some(last), Some(batched)) = (
        BATCHES.get_ptr_mut(0),
        LAST_WRITTEN.get_ptr_mut(0),
        BATCHED.get_ptr_mut(0),
    ) else {
        return true;
    };
    // Room for a call's records (a context and a lock record) below this; the rest of the batch
    // is the trailer's. Checked against every write, for the verifier.
    let room = u64::from(config!(batch_bytes).min(BATCH_BYTES as u32))
        .saturating_sub((BATCH_TRAILER + ContextRecord::SIZE + LockRecord::SIZE) as u64);
    // SAFETY: per-CPU slots, only used by this CPU: a tracepoint's programs run with
    // preemption disabled, and the flush program that an interrupt may run in between leaves the
    // batch alone while `busy` is set (volatile stores: the compiler keeps them around the
    // writes).
    unsafe {
        core::ptr::write_volatile(&mut (*batch).busy, 1);
        // Before the clock is read: a reader that finds the CPU's count at 0 after some time
        // knows no record timestamped before then waits in this batch.
        core::ptr::write_volatile(batched, WRITING);
        let now = bpf_ktime_get_ns();
        let cpu = bpf_get_smp_processor_id() as u16;
        // Every way out of this block clears `busy`.
        'append: {
            let quiet = now.wrapping_sub((*batch).last_ns) >= BURST_GAP_NS;
            (*batch).last_ns = now;
            if (*batch).len > room {
                flush(batch, last, now);
            }
            let same_context = (*last).context.same(&context);
            if !same_context {
                let len = (*batch).len;
                if len > room {
                    break 'append;
                }
                let record = (*batch)
                    .bytes
                    .as_mut_ptr()
                    .add(len as usize)
                    .cast::<ContextRecord>();
                (*record).ts_ns = now;
                (*record).pid = pid;
                (*record).tid = pid_tgid as u32;
                (*record).source = Source::Context as u8;
                (*record).task_state = process.task_state;
                (*record).cpu = cpu;
                (*record).ns_pid = process.ns_pid;
                (*record).start_boottime = process.start_boottime;
                (*record).comm = process.comm;
                (*record).generation = file.generation;
                (*record)._pad2 = 0;
                (*record).parent_ino = name_dentry(file.dentry, &mut (*record).name);
                (*batch).len = len + ContextRecord::SIZE as u64;
                (*last).context = context;
            }
            let len = (*batch).len;
            if len > room + ContextRecord::SIZE as u64 {
                break 'append;
            }
            let at = (*batch).bytes.as_mut_ptr().add(len as usize);
            if same_context && (*last).lock == lock {
                let record = at.cast::<RepeatRecord>();
                (*record).ts_ns = now;
                (*record).flags = fields.flags;
                (*record).ret = ret;
                (*record).source = Source::Repeat as u8;
                (*record).lock_type = fields.lock_type;
                (*record).cpu = cpu;
                (*record)._pad = 0;
                (*batch).len = len + RepeatRecord::SIZE as u64;
            } else {
                let record = at.cast::<LockRecord>();
                (*record).ts_ns = now;
                (*record).pid = pid;
                (*record).tid = pid_tgid as u32;
                (*record).source = source as u8;
                (*record).lock_type = fields.lock_type;
                (*record).cpu = cpu;
                (*record).ret = ret;
                (*record).ino = ino;
                (*record).dev = dev;
                (*record).fl_pid = fields.fl_pid;
                (*record).owner = fields.owner;
                (*record).flags = fields.flags;
                (*record).nlink = file.nlink;
                (*record).start = fields.start;
                (*record).end = fields.end;
                (*batch).len = len + LockRecord::SIZE as u64;
                (*last).lock = lock;
            }
            (*batch).locks += 1;
            // The first call after a quiet spell goes to the ring at once, waking the reader;
            // so does a batch with no room left for another call. The rest waits for either,
            // or for user space to flush it (see `flush_batch`).
            if quiet || (*batch).len > room {
                flush(batch, last, now);
            }
        }
        core::ptr::write_volatile(batched, (*batch).locks);
        core::ptr::write_volatile(&mut (*batch).busy, 0);
    }
    true
}

/// Run by user space on one CPU (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_RUN_ON_CPU`, from 5.10;
/// never attached): sends the CPU's batch to the ring, so that every record timestamped before
/// the run is in the ring once it returns. It runs in an interrupt when the CPU is not the
/// caller's, which may come while a lock program is filling the batch: it then leaves the batch
/// alone and returns 1, and user space runs it again.
#[raw_tracepoint]
pub fn flush_batch(_ctx: RawTracePointContext) -> i32 {
    let (Some(batch), Some(last)) = (BATCHES.get_ptr_mut(0), LAST_WRITTEN.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: per-CPU slots, as in `emit_btf`; `busy` tells whether this run interrupted it.
    unsafe {
        if core::ptr::read_volatile(&(*batch).busy) != 0 {
            return 1;
        }
        // The reader that asked for this takes the ring at once: no wakeup.
        flush_with(batch, last, u64::from(BPF_RB_NO_WAKEUP));
        if let Some(batched) = BATCHED.get_ptr_mut(0) {
            *batched = 0;
        }
    }
    0
}

/// Sends the CPU's batch to the ring with its trailer, waking the reader at most once a
/// millisecond, and empties it. A ring too full to take it loses its lock records, counted in
/// `DROPS`, and the next lock record writes its context again.
///
/// # Safety
/// `batch` and `last` are this CPU's slots, used by nothing else while this runs.
#[inline(always)]
unsafe fn flush(batch: *mut Batch, last: *mut LastWritten, now: u64) {
    // SAFETY: see above.
    unsafe { flush_with(batch, last, wakeup_flags(now)) }
}

#[inline(always)]
unsafe fn flush_with(batch: *mut Batch, last: *mut LastWritten, flags: u64) {
    // SAFETY: see `flush`.
    unsafe {
        let len = (*batch).len as usize;
        if len == 0 || len > BATCH_BYTES - BATCH_TRAILER {
            return;
        }
        let locks = (*batch).locks;
        (*batch)
            .bytes
            .as_mut_ptr()
            .add(len)
            .cast::<u32>()
            .write(locks as u32);
        let Some(records) = (*batch).bytes.get(..len + BATCH_TRAILER) else {
            return;
        };
        if EVENTS.output::<[u8]>(records, flags).is_err() {
            count(&DROPS, locks);
            (*last).context.pid = 0;
        }
        (*batch).len = 0;
        (*batch).locks = 0;
    }
}

impl LastContext {
    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        self.pid == other.pid
            && self.start_boottime == other.start_boottime
            && self.task_state == other.task_state
            && self.comm[0] == other.comm[0]
            && self.comm[1] == other.comm[1]
            && self.ino == other.ino
            && self.generation == other.generation
            && self.dentry == other.dentry
            && self.hash_len == other.hash_len
    }
}

/// The inode's number and its filesystem's device, from a BTF-typed `struct inode` pointer
/// that is not null; None if its superblock is.
#[inline(always)]
fn inode_number(inode: *const u8) -> Option<(u64, u32)> {
    let (ino_off, sb_off) = (config!(btf.inode_ino), config!(btf.inode_sb));
    let dev_off = config!(btf.sb_dev);
    // SAFETY: a BTF-typed pointer from a tracepoint's arguments, at offsets of its members
    // taken from this kernel's BTF.
    unsafe {
        let sb = load::<*const u8>(inode, sb_off);
        if sb.is_null() {
            return None;
        }
        Some((load::<u64>(inode, ino_off), load::<u32>(sb, dev_off)))
    }
}

/// A queued flock(2) call, as its `FILE_LOCK_DEFERRED` event read it: what the record of the
/// wait's end says (the `struct file_lock` is freed when the call returns). Its file's name is
/// the wait's record's, which user space keeps with the wait.
#[derive(Clone, Copy)]
#[repr(C)]
struct FlockWait {
    ino: u64,
    owner: u64,
    start: i64,
    end: i64,
    dev: u32,
    flags: u32,
    fl_pid: i32,
    generation: u32,
    nlink: u32,
    lock_type: u8,
    _pad: [u8; 3],
}

/// What a lock record says of the lock: members of its `struct file_lock`.
struct LockOf {
    owner: u64,
    start: i64,
    end: i64,
    flags: u32,
    fl_pid: i32,
    lock_type: u8,
}

impl LockOf {
    #[inline(always)]
    fn read(lock: *const u8) -> Self {
        let (owner, start) = (config!(btf.lock_owner), config!(btf.lock_start));
        let (end, flags) = (config!(btf.lock_end), config!(btf.lock_flags));
        let (fl_pid, lock_type) = (config!(btf.lock_pid), config!(btf.lock_type));
        // SAFETY: a BTF pointer from the tracepoint's arguments, and members of `struct
        // file_lock` at their BTF offsets.
        unsafe {
            Self {
                owner: load::<u64>(lock, owner),
                start: load::<i64>(lock, start),
                end: load::<i64>(lock, end),
                flags: load::<u32>(lock, flags),
                fl_pid: load::<i32>(lock, fl_pid),
                lock_type: load::<u8>(lock, lock_type),
            }
        }
    }
}

/// Which file a lock is on, beyond its inode number: the inode's generation and link count, and
/// the dentry the lock was requested through (`file_lock->fl_file->f_path.dentry`, null when
/// unreadable) with its name's hash and length.
struct FileOf {
    generation: u32,
    nlink: u32,
    dentry: *const u8,
    hash_len: u64,
}

impl FileOf {
    #[inline(always)]
    fn read(inode: *const u8, lock: *const u8) -> Self {
        let (generation, nlink) = (config!(btf.inode_generation), config!(btf.inode_nlink));
        let (lock_file, file_dentry) = (config!(btf.lock_file), config!(btf.file_dentry));
        let hash_len = config!(btf.dentry_hash_len);
        // SAFETY: kernel pointers from the tracepoint's arguments and the structs they lead to,
        // at offsets taken from this kernel's BTF.
        unsafe {
            let mut file = Self {
                generation: load::<u32>(inode, generation),
                nlink: load::<u32>(inode, nlink),
                dentry: core::ptr::null(),
                hash_len: 0,
            };
            let filp = load::<*const u8>(lock, lock_file);
            if filp.is_null() {
                return file;
            }
            file.dentry = load::<*const u8>(filp, file_dentry);
            if !file.dentry.is_null() {
                // The name's hash, salted with the parent directory (`qstr.hash`, first).
                file.hash_len = u64::from(load::<u32>(file.dentry, hash_len));
            }
            file
        }
    }
}

/// Writes the dentry's name into `name` (empty when unreadable) and returns the inode number of
/// its parent directory (0 when unreadable).
#[inline(always)]
fn name_dentry(dentry: *const u8, name: &mut [u8; NAME_LEN]) -> u64 {
    name[0] = 0;
    if dentry.is_null() {
        return 0;
    }
    let (name_off, parent_off) = (config!(btf.dentry_name), config!(btf.dentry_parent));
    let (dentry_inode, inode_ino) = (config!(btf.dentry_inode), config!(btf.inode_ino));
    // SAFETY: a dentry read from the traced lock and the structs it leads to, at offsets taken
    // from this kernel's BTF.
    unsafe {
        let chars = load::<*const u8>(dentry, name_off);
        if !chars.is_null() {
            // A string: the one read left to a helper.
            let _ = bpf_probe_read_kernel_str_bytes(chars, name);
        }
        let parent = load::<*const u8>(dentry, parent_off);
        if parent.is_null() {
            return 0;
        }
        let parent_inode = load::<*const u8>(parent, dentry_inode);
        if parent_inode.is_null() {
            return 0;
        }
        load::<u64>(parent_inode, inode_ino)
    }
}

/// Reads the member of type `T` at `offset` bytes into the kernel struct at `base`, a pointer
/// the verifier knows the BTF type of (a BTF tracepoint's argument, or a pointer member read
/// from one). The offset is a constant to the verifier (a frozen read-only global), so this is
/// a direct load, which the kernel makes fault-safe: much cheaper than a helper call.
///
/// # Safety
/// `base` must be such a pointer and `offset` a member of type `T` in its struct.
#[inline(always)]
unsafe fn load<T>(base: *const u8, offset: u16) -> T {
    // SAFETY: see above.
    unsafe { core::ptr::read(base.wrapping_add(usize::from(offset)).cast::<T>()) }
}

fn emit_lock(ctx: &TracePointContext, source: Source, dev_off: u16, ino_off: u16) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !pid_wanted(pid_tgid) {
        return 0;
    }
    if config!(filter_inode) != 0 {
        // SAFETY: the offsets were read from this tracepoint's format file.
        let (dev, ino) = unsafe {
            match (
                ctx.read_at::<u32>(usize::from(dev_off)),
                ctx.read_at::<u64>(usize::from(ino_off)),
            ) {
                (Ok(dev), Ok(ino)) => (dev, ino),
                _ => return 0,
            }
        };
        if !inode_wanted(dev, ino) {
            return 0;
        }
    }
    emit(ctx, source, pid_tgid);
    0
}

/// Writes one record holding the tracepoint's own record (or counts a drop).
fn emit(ctx: &TracePointContext, source: Source, pid_tgid: u64) {
    submit(
        pid_tgid,
        source,
        |payload| {
            // SAFETY: the tracepoint's record, read fault-safe.
            if unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr().cast(), payload) }.is_err() {
                *payload = [0; PAYLOAD_LEN];
            }
        },
        |file| *file = FileName::NONE,
    );
}

/// The `--pid` filter.
fn pid_wanted(pid_tgid: u64) -> bool {
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence.
    config!(filter_pid) == 0 || unsafe { PIDS.get(pid) }.is_some()
}

/// The `--path` filter.
fn inode_wanted(dev: u32, ino: u64) -> bool {
    let key = InodeKey { dev, _pad: 0, ino };
    // SAFETY: the value is only tested for presence.
    config!(filter_inode) == 0 || unsafe { INODES.get(key) }.is_some()
}

/// What every record says of the running process.
struct Process {
    comm: [u8; 16],
    ns_pid: u32,
    start_boottime: u64,
    /// `aimlock_common::task_state` bits of the running task.
    task_state: u8,
}

/// The running process's command name, its pid in its own namespace and its start time (the
/// last two read from its group leader: with direct loads from the current task where the
/// kernel has `bpf_get_current_task_btf` (5.11 on), through the fault-safe helper before), and
/// whether the running task is exiting.
#[inline(always)]
fn current_process() -> Process {
    let direct = config!(btf.comm_direct) != 0;
    let (comm_off, leader_off) = (config!(btf.task_comm), config!(btf.task_group_leader));
    let flags_off = config!(btf.task_flags);
    let (comm, leader, flags) = if direct {
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        // SAFETY: the current task, a BTF pointer, and its `comm` array, `group_leader`
        // pointer and `flags` at their BTF offsets.
        unsafe {
            (
                load::<[u8; 16]>(task, comm_off),
                load::<*const u8>(task, leader_off),
                Some(load::<u32>(task, flags_off)),
            )
        }
    } else {
        // SAFETY: a helper without arguments; the task it gives is only read through the
        // fault-safe helper, at the BTF offsets of `group_leader` and `flags`.
        let (leader, flags) = unsafe {
            let task = bpf_get_current_task() as *const u8;
            (
                member::<*const u8>(task, leader_off, false),
                member::<u32>(task, flags_off, false),
            )
        };
        (
            bpf_get_current_comm().unwrap_or_default(),
            leader.unwrap_or(core::ptr::null()),
            flags,
        )
    };
    let task_state = match flags {
        Some(flags) if flags_off != 0 => {
            let exiting = if flags & PF_EXITING != 0 {
                task_state::EXITING
            } else {
                0
            };
            task_state::READ | exiting
        }
        _ => 0,
    };
    let start_off = config!(btf.task_start_boottime);
    let (ns_pid, start_boottime) = if leader.is_null() {
        (0, 0)
    } else if start_off == 0 {
        (namespace_pid(leader, direct), 0)
    } else {
        // SAFETY: the group leader, and its `start_boottime` at its BTF offset.
        let start = unsafe { member::<u64>(leader, start_off, direct) };
        (namespace_pid(leader, direct), start.unwrap_or(0))
    };
    Process {
        comm,
        ns_pid,
        start_boottime,
        task_state,
    }
}

/// The `--comm` filter.
#[inline(always)]
fn comm_wanted(comm: &[u8; 16]) -> bool {
    // SAFETY: the value is only tested for presence.
    config!(filter_comm) == 0 || unsafe { COMMS.get(*comm) }.is_some()
}

/// Applies the `--comm` filter, then writes one [`Record`] whose payload `fill` writes, or
/// counts a drop when the ring is full. Returns whether the record passed the filter.
#[inline(always)]
fn submit(
    pid_tgid: u64,
    source: Source,
    fill: impl FnOnce(&mut [u8; PAYLOAD_LEN]),
    name: impl FnOnce(&mut FileName),
) -> bool {
    let process = current_process();
    if !comm_wanted(&process.comm) {
        return false;
    }
    if matches!(source, Source::Flock | Source::Posix | Source::LeaseAdd) {
        mark_holder((pid_tgid >> 32) as u32);
    }
    let Some(mut entry) = EVENTS.reserve::<Record>(0) else {
        count(&DROPS, 1);
        return true;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring memory the size of a Record; every field is
    // written before the entry is submitted.
    unsafe {
        (*record).ts_ns = now;
        (*record).pid = (pid_tgid >> 32) as u32;
        (*record).tid = pid_tgid as u32;
        (*record).source = source as u8;
        (*record).task_state = process.task_state;
        (*record)._pad = [0; 2];
        (*record).ns_pid = process.ns_pid;
        (*record).comm = process.comm;
        fill(&mut (*record).payload);
        name(&mut (*record).file);
        (*record).start_boottime = process.start_boottime;
    }
    entry.submit(wakeup_flags(now));
    true
}

/// Adds a process that wrote a lock record to `HOLDERS`, once per burst on a CPU.
#[inline(always)]
fn mark_holder(pid: u32) {
    let freed = HOLDERS_FREED.get(0).copied().unwrap_or(0);
    let Some(last) = LAST_HOLDER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot, only used by this CPU with preemption disabled.
    unsafe {
        if (*last)[0] == u64::from(pid) && (*last)[1] == freed {
            return;
        }
        if HOLDERS.insert(pid, 1, 0).is_ok() {
            *last = [u64::from(pid), freed];
        }
    }
}

/// The current process's pid in its own PID namespace, 0 in the initial one: its group
/// leader's `thread_pid->numbers[level].nr`, read while the process surely runs (user space may
/// find it gone). Only a process in a namespace pays for the two helper reads an index into
/// `numbers` needs (the verifier allows no variable offset in a direct load). `direct`: whether
/// `leader` is a BTF pointer (see [`member`]).
#[inline(always)]
fn namespace_pid(leader: *const u8, direct: bool) -> u32 {
    let thread_pid_off = config!(btf.task_thread_pid);
    let (level_off, numbers_off) = (config!(btf.pid_level), config!(btf.pid_numbers));
    let upid_size = u64::from(config!(btf.upid_size));
    // SAFETY: kernel pointers and members at their BTF offsets, read as `member` allows; the
    // last two reads go through the fault-safe helper.
    unsafe {
        let Some(pid) = member::<*const u8>(leader, thread_pid_off, direct) else {
            return 0;
        };
        if pid.is_null() {
            return 0;
        }
        let level = member::<u32>(pid, level_off, direct).unwrap_or(0);
        if level == 0 {
            return 0;
        }
        // The same pointer as a plain number, which the helper may offset freely.
        let Ok(pid) = bpf_probe_read_kernel(
            leader
                .wrapping_add(usize::from(thread_pid_off))
                .cast::<u64>(),
        ) else {
            return 0;
        };
        let nr = pid + u64::from(numbers_off) + u64::from(level.min(32)) * upid_size;
        bpf_probe_read_kernel(nr as *const i32).map_or(0, |nr| nr as u32)
    }
}

/// Reads the member of type `T` at `offset` bytes into the kernel struct at `base`: with a
/// direct [`load`] where `direct` says `base` is a BTF pointer, through
/// `bpf_probe_read_kernel` otherwise (a task from `bpf_get_current_task`, before 5.11). `direct`
/// comes from the frozen configuration, so the verifier only follows the branch taken.
///
/// # Safety
/// `base` must point to a kernel struct with a member of type `T` at `offset`, and be a BTF
/// pointer when `direct` is true.
#[inline(always)]
unsafe fn member<T>(base: *const u8, offset: u16, direct: bool) -> Option<T> {
    if direct {
        // SAFETY: see above.
        Some(unsafe { load::<T>(base, offset) })
    } else {
        // SAFETY: the helper reads any kernel address without faulting.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(usize::from(offset)).cast::<T>()) }.ok()
    }
}

fn count(counter: &PerCpuArray<u64>, how_many: u64) {
    if let Some(slot) = counter.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, only written by this CPU with preemption disabled.
        unsafe { *slot += how_many };
    }
}

/// Wakes the reader for the first record after a quiet spell, not for every record of a burst.
fn wakeup_flags(now: u64) -> u64 {
    let flags = match LAST_WAKEUP.get_ptr_mut(0) {
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
    u64::from(flags)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
