//! The one definition of what aimlock's eBPF programs hand to user space.
//!
//! Everything here is `#[repr(C)]`, fixed-size and plain data: the kernel side writes it into a
//! ring buffer or reads it from a global, user space copies it back out byte for byte.
#![no_std]

/// Which kernel hook produced a [`Record`].
///
/// Each value names the tracepoint the program is attached to; the program and the kernel
/// function that fires the tracepoint are documented in `aimlock-ebpf`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `filelock:flock_lock_inode`: one flock(2) attempt or release (fs/locks.c `flock_lock_inode`).
    Flock = 1,
    /// `filelock:posix_lock_inode`: one POSIX or OFD attempt or release (`posix_lock_inode`).
    Posix = 2,
    /// `filelock:fcntl_setlk`: a failed F_SETLK(W)/F_OFD_SETLK(W) call, with its final errno.
    FcntlFailure = 3,
    /// `sched:sched_process_exit`: a thread group is exiting; its files are not closed yet.
    Exit = 4,
    /// `filelock:generic_add_lease`: a lease is being set (`generic_add_lease`).
    LeaseAdd = 5,
    /// `filelock:generic_delete_lease`: a lease is removed (`generic_delete_lease`).
    LeaseDelete = 6,
    /// `signal_deliver` (BTF tracepoint) to a thread whose flock(2) call was queued: the signal
    /// ended its wait without the lock.
    FlockWaitEnd = 7,
    /// `task:task_newtask`: a process that holds or may hold locks started a new process
    /// (`copy_process`); the payload is the tracepoint's record (the child's pid).
    Fork = 8,
    /// `sched:sched_process_exec`: such a process ran a new program (`exec_binprm`), its
    /// close-on-exec files already closed; the record's comm is the new program's.
    Exec = 9,
    /// `syscalls:sys_enter_sendmsg`: such a process sent descriptors as SCM_RIGHTS; the payload
    /// is a [`PassedFds`].
    FdSent = 10,
    /// `syscalls:sys_exit_recvmsg`: a process received descriptors as SCM_RIGHTS while one sent
    /// by such a process may have been in flight; the payload is a [`PassedFds`].
    FdReceived = 11,
    /// A [`ContextRecord`]: who runs and which file it names, for the [`LockRecord`]s that
    /// follow it from the same CPU.
    Context = 12,
    /// A [`RepeatRecord`]: the CPU's previous lock call again, on the same lock by the same
    /// thread, at another time, with its own type, flags and result.
    Repeat = 13,
}

impl Source {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Flock,
            2 => Self::Posix,
            3 => Self::FcntlFailure,
            4 => Self::Exit,
            5 => Self::LeaseAdd,
            6 => Self::LeaseDelete,
            7 => Self::FlockWaitEnd,
            8 => Self::Fork,
            9 => Self::Exec,
            10 => Self::FdSent,
            11 => Self::FdReceived,
            12 => Self::Context,
            13 => Self::Repeat,
            _ => return None,
        })
    }
}

/// `fl_flags` bits, from include/linux/filelock.h.
pub mod fl_flags {
    pub const POSIX: u32 = 1;
    pub const FLOCK: u32 = 2;
    pub const ACCESS: u32 = 8;
    pub const LEASE: u32 = 32;
    pub const CLOSE: u32 = 64;
    pub const SLEEP: u32 = 128;
    pub const OFDLCK: u32 = 1024;
}

/// `fl_type` values, from include/uapi/asm-generic/fcntl.h.
pub mod fl_type {
    pub const RDLCK: u8 = 0;
    pub const WRLCK: u8 = 1;
    pub const UNLCK: u8 = 2;
}

/// What a record says of the task that ran its program, read from `task_struct.flags`.
pub mod task_state {
    /// The task's flags were read: without it, [`EXITING`] means nothing.
    pub const READ: u8 = 1;
    /// `PF_EXITING`: the task is in `do_exit()`, which set it (in `exit_signals()`) before the
    /// exit tracepoint and `exit_files()`. A close then is the exit's.
    pub const EXITING: u8 = 2;
}

/// `PF_EXITING` in `task_struct.flags` (include/linux/sched.h).
pub const PF_EXITING: u32 = 0x4;

/// `ret` of a queued blocking request (`FILE_LOCK_DEFERRED` in include/linux/filelock.h).
pub const FILE_LOCK_DEFERRED: i32 = 1;

/// Bytes of a tracepoint's own record copied into a [`Record`]: enough for every field aimlock
/// reads from the `filelock` and `sched` events on the kernels it supports.
pub const PAYLOAD_LEN: usize = 96;

/// One event, as the kernel saw it: who and when, plus the tracepoint's record copied verbatim.
///
/// The kernel side does a single copy and no decoding; user space reads the fields out of
/// `payload` at the offsets it found in the tracepoint's `format` file ([`LockFields`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    /// Thread group id in the initial PID namespace.
    pub pid: u32,
    /// Thread id in the initial PID namespace.
    pub tid: u32,
    /// A [`Source`] value.
    pub source: u8,
    /// [`task_state`] bits of the running task.
    pub task_state: u8,
    pub _pad: [u8; 2],
    /// The process's pid in its own PID namespace, where that is not the initial one; 0 when
    /// it is, or where the kernel does not tell (before 5.11). User space reads /proc too, but
    /// a process may be gone by then.
    pub ns_pid: u32,
    pub comm: [u8; 16],
    /// The first [`PAYLOAD_LEN`] bytes of the tracepoint record; bytes past its end mean nothing.
    pub payload: [u8; PAYLOAD_LEN],
    /// The locked file as the kernel names it: written by the BTF tracepoint programs, zero
    /// from the classic tracepoints and for exits.
    pub file: FileName,
    /// When the process started: its thread group leader's `start_boottime` (CLOCK_BOOTTIME,
    /// nanoseconds), which with the pid tells it from a later process that reuses the pid.
    /// 0 where the kernel does not let the programs read it (before 5.11).
    pub start_boottime: u64,
}

/// Bytes of a file's name (the last component of its path) a record carries.
pub const NAME_LEN: usize = 48;

/// Which file a lock record is about, beyond its inode number: enough to tell it from a later
/// file that reuses the number, and to name it when the process that locked it is gone before
/// user space looks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileName {
    /// `inode->i_generation`: a new file that reuses an inode number gets another one.
    pub generation: u32,
    /// `inode->i_nlink`: 0 once the file has been unlinked.
    pub nlink: u32,
    /// The inode number of the directory the file's dentry is in.
    pub parent_ino: u64,
    /// The dentry's name, NUL-terminated unless it fills the field; empty when not read.
    pub name: [u8; NAME_LEN],
}

impl FileName {
    pub const NONE: Self = Self {
        generation: 0,
        nlink: 0,
        parent_ino: 0,
        name: [0; NAME_LEN],
    };
}

impl Record {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// A lock event from a BTF tracepoint program (`Source::Flock`, `Source::Posix` or
/// `Source::FcntlFailure`), a third of a [`Record`]'s size: in a burst, writing the record is
/// most of what tracing a lock call costs. What the process and the file are called is not
/// repeated in each: it is in the last [`ContextRecord`] written by the same CPU, which the
/// program writes first whenever the process or the file is not the one of that CPU's previous
/// lock record. Both go into the CPU's batch in one run of a program, which no other lock
/// program on the CPU interrupts, and a batch reaches the ring whole: a CPU's records reach the
/// ring in the order it wrote them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRecord {
    /// `bpf_ktime_get_ns()`, as in [`Record`].
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// A [`Source`] value, at the same place as in [`Record`].
    pub source: u8,
    /// `fl_type`.
    pub lock_type: u8,
    /// The CPU the program ran on: whose last [`ContextRecord`] applies.
    pub cpu: u16,
    /// The traced function's result: 0, [`FILE_LOCK_DEFERRED`] or a negative errno.
    pub ret: i32,
    /// `i_ino` and the superblock's `s_dev`.
    pub ino: u64,
    pub dev: u32,
    /// `fl_pid`.
    pub fl_pid: i32,
    /// `fl_owner`.
    pub owner: u64,
    /// `fl_flags`.
    pub flags: u32,
    /// `i_nlink`: 0 once the file has been unlinked.
    pub nlink: u32,
    /// `fl_start` and `fl_end`.
    pub start: i64,
    pub end: i64,
}

impl LockRecord {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Who a CPU's following [`LockRecord`]s are about: the process, and the file as the kernel
/// names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextRecord {
    /// The time, pid and tid of the lock record it comes with.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// `Source::Context`, at the same place as in [`Record`].
    pub source: u8,
    /// [`task_state`] bits of the running task: a task that begins to exit writes a new
    /// context.
    pub task_state: u8,
    /// The CPU whose lock records it applies to.
    pub cpu: u16,
    /// As in [`Record`].
    pub ns_pid: u32,
    pub start_boottime: u64,
    pub comm: [u8; 16],
    /// `i_generation` of the inode, and the name and parent directory of the dentry the lock
    /// was requested through, as in [`FileName`].
    pub generation: u32,
    pub _pad2: u32,
    pub parent_ino: u64,
    pub name: [u8; NAME_LEN],
}

impl ContextRecord {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// A lock call that repeats the CPU's previous one but for what changes from call to call in a
/// burst on one lock (lock, unlock, lock...): a third of a [`LockRecord`]. Written only when the
/// thread, the lock (source, file, owner, range, `fl_pid`) and the file's link count are those of
/// the previous lock record the CPU wrote, and no [`ContextRecord`] came in between.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatRecord {
    pub ts_ns: u64,
    /// `fl_flags`.
    pub flags: u32,
    /// As in [`LockRecord`].
    pub ret: i32,
    /// `Source::Repeat`, at the same place as in [`Record`].
    pub source: u8,
    /// `fl_type`.
    pub lock_type: u8,
    pub cpu: u16,
    pub _pad: u32,
}

impl RepeatRecord {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Bytes of compact records ([`LockRecord`], [`RepeatRecord`], [`ContextRecord`]) a CPU
/// gathers, with their trailer, before they go to the ring as one ring record: in a burst, a
/// ring record per lock call would cost more than the rest of its tracing. User space may set
/// fewer (`Config::batch_bytes`): a batch must fit a small ring several times.
pub const BATCH_BYTES: usize = 4096;

/// A ring record is either one [`Record`] or a CPU's batch: compact records one after the other,
/// in the order the CPU wrote them, then a [`BATCH_TRAILER`]-byte count of the lock calls among
/// them (the records other than contexts). The trailer makes a batch's length 4 more than a
/// multiple of 8, which no `Record`'s is.
pub const BATCH_TRAILER: usize = 4;

/// Whether a ring record of this length is a batch rather than a [`Record`].
pub const fn is_batch(ring_record_len: usize) -> bool {
    ring_record_len % 8 == BATCH_TRAILER
}

/// The length of the compact record `bytes` begins with, which says what it is by its `source`
/// (at the same place in all three); `None` when `bytes` does not begin with one whole.
pub fn compact_record_len(bytes: &[u8]) -> Option<usize> {
    const SOURCE_AT: usize = core::mem::offset_of!(LockRecord, source);
    let len = match Source::from_u8(*bytes.get(SOURCE_AT)?) {
        Some(Source::Context) => ContextRecord::SIZE,
        Some(Source::Repeat) => RepeatRecord::SIZE,
        _ => LockRecord::SIZE,
    };
    (bytes.len() >= len).then_some(len)
}

const _: () = assert!(
    Record::SIZE.is_multiple_of(8)
        && LockRecord::SIZE.is_multiple_of(8)
        && ContextRecord::SIZE.is_multiple_of(8)
        && RepeatRecord::SIZE.is_multiple_of(8)
        && core::mem::offset_of!(LockRecord, source)
            == core::mem::offset_of!(ContextRecord, source)
        && core::mem::offset_of!(LockRecord, source) == core::mem::offset_of!(RepeatRecord, source)
        && LockRecord::SIZE != ContextRecord::SIZE
        && LockRecord::SIZE != RepeatRecord::SIZE
        && ContextRecord::SIZE != RepeatRecord::SIZE
);

/// Marks a field a kernel's tracepoint does not have.
pub const ABSENT: u16 = u16::MAX;

/// Byte offsets of the fields of one `filelock` tracepoint, read from its `format` file at load
/// time, because names and positions differ between kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockFields {
    pub ino: u16,
    pub dev: u16,
    pub owner: u16,
    pub fl_pid: u16,
    pub flags: u16,
    pub lock_type: u16,
    pub start: u16,
    pub end: u16,
    pub ret: u16,
    pub blocker: u16,
}

impl LockFields {
    pub const ABSENT: Self = Self {
        ino: ABSENT,
        dev: ABSENT,
        owner: ABSENT,
        fl_pid: ABSENT,
        flags: ABSENT,
        lock_type: ABSENT,
        start: ABSENT,
        end: ABSENT,
        ret: ABSENT,
        blocker: ABSENT,
    };
}

/// Offsets of `sched:sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitFields {
    /// `group_dead` appeared in 6.x; without it, the exit of the thread-group leader counts.
    pub group_dead: u16,
}

/// Offsets of `task:task_newtask`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewTaskFields {
    /// The new task's id: for a new process, its thread group id.
    pub pid: u16,
    pub clone_flags: u16,
}

/// Offsets of `sched:sched_process_free`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeFields {
    pub pid: u16,
}

/// `CLONE_THREAD` from include/uapi/linux/sched.h: the new task is a thread of its creator's
/// process.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// Where the BTF tracepoint programs find what they read, from the kernel's BTF
/// (/sys/kernel/btf/vmlinux), since struct layouts differ between kernels (struct
/// file_lock_core was split out of struct file_lock in 6.9).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BtfOffsets {
    /// `struct inode`: `i_ino`, `i_sb`, `i_generation` and `i_nlink`.
    pub inode_ino: u16,
    pub inode_sb: u16,
    pub inode_generation: u16,
    pub inode_nlink: u16,
    /// `struct file_lock`: the file the lock was requested through (`flc_file` or `fl_file`).
    pub lock_file: u16,
    /// `struct file`: `f_path.dentry`.
    pub file_dentry: u16,
    /// `struct dentry`: `d_name.name`, `d_name.hash_len`, `d_parent` and `d_inode`.
    pub dentry_name: u16,
    pub dentry_hash_len: u16,
    pub dentry_parent: u16,
    pub dentry_inode: u16,
    /// `struct super_block`: `s_dev`.
    pub sb_dev: u16,
    /// `struct file_lock` (or its `file_lock_core c` from 6.9): `fl_owner` (a pointer),
    /// `fl_flags` (unsigned int), `fl_type` (unsigned char), `fl_pid` (int), `fl_start` and
    /// `fl_end` (loff_t).
    pub lock_owner: u16,
    pub lock_flags: u16,
    pub lock_type: u16,
    pub lock_pid: u16,
    pub lock_start: u16,
    pub lock_end: u16,
    /// `struct task_struct`: `comm`, read with direct loads through `bpf_get_current_task_btf`
    /// where `comm_direct` is 1 (kernels from 5.11), far cheaper than `bpf_get_current_comm`.
    pub task_comm: u16,
    pub comm_direct: u8,
    pub _pad: u8,
    /// `task_struct.group_leader` and `.thread_pid`, `struct pid`'s `level` and `numbers`, and
    /// the size of `struct upid` (whose `nr` comes first): a process's pid in its own namespace.
    pub task_group_leader: u16,
    pub task_thread_pid: u16,
    pub pid_level: u16,
    pub pid_numbers: u16,
    pub upid_size: u16,
    /// `task_struct.start_boottime`: when the process started (read from its group leader);
    /// 0 where the kernel's BTF has no such member (it is never a task's first member).
    pub task_start_boottime: u16,
    /// `task_struct.flags` (of the running task, not its leader), for [`PF_EXITING`].
    pub task_flags: u16,
}

/// Layout of a record's payload written by a BTF tracepoint program: each field read from the
/// kernel's structs at its own place.
pub mod btf_payload {
    pub const INO: u16 = 0;
    pub const DEV: u16 = 8;
    pub const RET: u16 = 12;
    pub const OWNER: u16 = 16;
    pub const START: u16 = 24;
    pub const END: u16 = 32;
    pub const FLAGS: u16 = 40;
    pub const PID: u16 = 44;
    pub const TYPE: u16 = 48;
}

/// Descriptors a [`Record`] of an SCM_RIGHTS message carries at most.
pub const PASSED_FDS: usize = 4;

/// The payload of [`Source::FdSent`] and [`Source::FdReceived`] records: the descriptors of the
/// message's first SCM_RIGHTS control message, and the open file description (`struct file`,
/// the `fl_owner` of its flock and OFD locks) each one refers to in the process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassedFds {
    /// How many descriptors the message carried (only the first [`PASSED_FDS`] are named).
    pub count: u32,
    pub fds: [i32; PASSED_FDS],
    pub _pad: u32,
    pub files: [u64; PASSED_FDS],
}

/// Where the lineage programs find what they read: the syscall tracepoints' `msg` and `ret`
/// (from their format files), `struct user_msghdr` and `struct cmsghdr` (the user ABI, as the
/// kernel's BTF describes it), and the path from a task to its open files (`task_struct.files`,
/// `files_struct.fdt`, `fdtable.fd`, from BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineageFields {
    pub sendmsg_msg: u16,
    pub recvmsg_msg: u16,
    pub recvmsg_ret: u16,
    pub msghdr_control: u16,
    pub msghdr_controllen: u16,
    pub cmsg_level: u16,
    pub cmsg_type: u16,
    /// `sizeof(struct cmsghdr)`: where a control message's data begins.
    pub cmsg_size: u16,
    pub task_files: u16,
    pub files_fdt: u16,
    pub fdtable_fd: u16,
    pub _pad: u16,
}

/// What user space tells the programs before they load (a read-only global).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub flock: LockFields,
    pub posix: LockFields,
    pub fcntl: LockFields,
    pub lease_add: LockFields,
    pub lease_delete: LockFields,
    pub exit: ExitFields,
    pub new_task: NewTaskFields,
    pub free: FreeFields,
    pub btf: BtfOffsets,
    /// Only record processes whose tgid is in the `PIDS` map.
    pub filter_pid: u8,
    /// Only record processes whose comm is in the `COMMS` map.
    pub filter_comm: u8,
    /// Only record locks on inodes in the `INODES` map.
    pub filter_inode: u8,
    pub _pad: [u8; 3],
    pub lineage: LineageFields,
    /// Bytes of a CPU's batch, trailer included, at most [`BATCH_BYTES`].
    pub batch_bytes: u32,
    pub _pad2: u32,
}

impl Config {
    pub const DEFAULT: Self = Self {
        flock: LockFields::ABSENT,
        posix: LockFields::ABSENT,
        fcntl: LockFields::ABSENT,
        lease_add: LockFields::ABSENT,
        lease_delete: LockFields::ABSENT,
        exit: ExitFields { group_dead: ABSENT },
        new_task: NewTaskFields {
            pid: ABSENT,
            clone_flags: ABSENT,
        },
        free: FreeFields { pid: ABSENT },
        btf: BtfOffsets {
            inode_ino: 0,
            inode_sb: 0,
            inode_generation: 0,
            inode_nlink: 0,
            lock_file: 0,
            file_dentry: 0,
            dentry_name: 0,
            dentry_hash_len: 0,
            dentry_parent: 0,
            dentry_inode: 0,
            sb_dev: 0,
            lock_owner: 0,
            lock_flags: 0,
            lock_type: 0,
            lock_pid: 0,
            lock_start: 0,
            lock_end: 0,
            task_comm: 0,
            comm_direct: 0,
            _pad: 0,
            task_group_leader: 0,
            task_thread_pid: 0,
            pid_level: 0,
            pid_numbers: 0,
            upid_size: 0,
            task_start_boottime: 0,
            task_flags: 0,
        },
        filter_pid: 0,
        filter_comm: 0,
        filter_inode: 0,
        _pad: [0; 3],
        lineage: LineageFields {
            sendmsg_msg: ABSENT,
            recvmsg_msg: ABSENT,
            recvmsg_ret: ABSENT,
            msghdr_control: 0,
            msghdr_controllen: 0,
            cmsg_level: 0,
            cmsg_type: 0,
            cmsg_size: 0,
            task_files: 0,
            files_fdt: 0,
            fdtable_fd: 0,
            _pad: 0,
        },
        batch_bytes: BATCH_BYTES as u32,
        _pad2: 0,
    };
}

/// Key of the `INODES` filter map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Names of the maps and the global the programs share with user space.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const DROPS: &str = "DROPS";
    pub const UNTRACED_CHILDREN: &str = "UNTRACED_CHILDREN";
    pub const PIDS: &str = "PIDS";
    pub const COMMS: &str = "COMMS";
    pub const INODES: &str = "INODES";
    pub const FLOCK_WAITERS: &str = "FLOCK_WAITERS";
    pub const HOLDERS: &str = "HOLDERS";
    pub const BATCHED: &str = "BATCHED";
    /// The program that sends a CPU's batch to the ring, run by user space on that CPU.
    pub const FLUSH_BATCH: &str = "flush_batch";
    pub const CONFIG: &str = "CONFIG";
}

/// Capacity of the `HOLDERS` map: processes that hold or may hold locks, whose forks, execs
/// and descriptor passing are recorded.
pub const MAX_HOLDERS: u32 = 16384;

/// `SOL_SOCKET` and `SCM_RIGHTS`, from include/uapi/asm-generic/socket.h and
/// include/linux/socket.h.
pub const SOL_SOCKET: i32 = 1;
pub const SCM_RIGHTS: i32 = 1;

/// Capacity of the filter maps (`PIDS`: by default; user space may set another at load time).
pub const MAX_FILTER_ENTRIES: u32 = 4096;

/// Converts the kernel's `dev_t` encoding (major << 20 | minor) to (major, minor).
pub const fn kernel_dev_split(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

/// The kernel's `dev_t` encoding of (major, minor).
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & ((1 << 20) - 1))
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::Record {}
}
