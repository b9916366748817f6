//! Turns the kernel's records into the tracker's typed [`Input`]s. A [`Record`] carries a
//! tracepoint's own record, whose fields are read at the offsets the loader found in the
//! tracepoint's `format` file; a [`LockRecord`] from a BTF program carries its fields as such,
//! and names its process and file through the last [`ContextRecord`] of its CPU. A ring record
//! that is not a [`Record`] is a CPU's batch of those two ([`records_in`]).

use aimlock_common::{
    ABSENT, BATCH_TRAILER, Config, ContextRecord, FileName, LockFields, LockRecord, NAME_LEN,
    PASSED_FDS, PAYLOAD_LEN, PassedFds, Record, RepeatRecord, Source, compact_record_len, fl_flags,
    is_batch, task_state,
};
use smallvec::SmallVec;

use crate::{events::LockKind, procfs};

/// A lock operation seen by one of the `filelock` tracepoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOp {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub kind: LockKind,
    pub dev: u32,
    pub ino: u64,
    pub owner: u64,
    /// An `aimlock_common::fl_type` value.
    pub lock_type: u8,
    pub flags: u32,
    pub start: i64,
    pub end: i64,
    /// 0 granted, 1 deferred (queued), negative errno refused. Leases carry no result: 0.
    pub ret: i32,
    /// The pid in the process's own PID namespace, as the kernel gave it (0: the initial
    /// namespace, or not told).
    pub ns_pid: u32,
    /// The file as the kernel names it (BTF programs only; zero otherwise).
    pub file: FileName,
    /// When the process started ([`crate::procfs::start_time`]'s measure); 0 until known.
    pub start_time: u64,
    /// Whether the task that ran the program was exiting (`PF_EXITING`); `None` where the
    /// program could not read its flags.
    pub exiting: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An attempt, unlock or release from `flock_lock_inode`, `posix_lock_inode` or a lease event.
    Lock(LockOp),
    /// A failed fcntl lock call, from `fcntl_setlk`.
    FcntlFailure(LockOp),
    /// A queued flock(2) call ended without the lock (a signal interrupted its wait).
    FlockWaitEnd(LockOp),
    /// A whole thread group began to exit; its files are closed after this.
    Exit {
        ts_ns: u64,
        pid: u32,
        comm: [u8; 16],
        /// When the process started; 0 until known.
        start_time: u64,
    },
    /// A process that holds or may hold locks started `child` (which inherits its open files).
    Fork {
        ts_ns: u64,
        pid: u32,
        comm: [u8; 16],
        /// When the forking process started; 0 until known.
        start_time: u64,
        child: u32,
    },
    /// Such a process ran a new program, `comm`. `locked` (filled in by the reader, which can
    /// look at /proc) lists the files on which its descriptors still showed flock or OFD locks
    /// after the exec, `None` when it could not look.
    Exec {
        ts_ns: u64,
        pid: u32,
        comm: [u8; 16],
        start_time: u64,
        locked: Option<SmallVec<[(u32, u64); 2]>>,
    },
    /// Descriptors passed as SCM_RIGHTS: sent by a holder, or received; `files` are their open
    /// file descriptions in the process (0 where unread).
    Passed {
        ts_ns: u64,
        pid: u32,
        comm: [u8; 16],
        start_time: u64,
        received: bool,
        files: SmallVec<[u64; 2]>,
    },
}

impl Input {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Lock(op) | Self::FcntlFailure(op) | Self::FlockWaitEnd(op) => op.ts_ns,
            Self::Exit { ts_ns, .. }
            | Self::Fork { ts_ns, .. }
            | Self::Exec { ts_ns, .. }
            | Self::Passed { ts_ns, .. } => *ts_ns,
        }
    }
}

/// What a record turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Input(Input),
    /// A CPU's new context, kept for the lock records that follow it.
    Context,
    /// A record of unknown size or source, or a lock record whose CPU has told no context yet
    /// (either would mean a kernel program and this binary disagree).
    Unreadable,
}

/// The records in one ring record: a [`Record`] alone, or each record of a CPU's batch in the
/// order the CPU wrote them. A batch whose trailer does not count its lock records comes whole,
/// as one item that [`Decoder::decode`] finds unreadable (no record has a batch's length).
pub fn records_in(ring_record: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = batch_records(ring_record);
    let mut whole = rest.is_none().then_some(ring_record);
    std::iter::from_fn(move || {
        if let Some(whole) = whole.take() {
            return Some(whole);
        }
        let records = rest.as_mut()?;
        let len = compact_record_len(records)?;
        let (record, tail) = records.split_at(len);
        *records = tail;
        Some(record)
    })
}

/// A batch's records without its trailer, if `ring_record` is a batch whose records are whole
/// and as many lock records as its trailer says.
fn batch_records(ring_record: &[u8]) -> Option<&[u8]> {
    if !is_batch(ring_record.len()) {
        return None;
    }
    let (records, trailer) = ring_record.split_last_chunk::<BATCH_TRAILER>()?;
    let mut locks = 0;
    let mut rest = records;
    while !rest.is_empty() {
        let len = compact_record_len(rest)?;
        if len != ContextRecord::SIZE {
            locks += 1;
        }
        rest = &rest[len..];
    }
    (locks == u32::from_ne_bytes(*trailer)).then_some(records)
}

/// `slots[cpu]`, the vector grown to hold it.
fn cpu_slot<T>(slots: &mut Vec<Option<T>>, cpu: u16) -> &mut Option<T> {
    let cpu = usize::from(cpu);
    if slots.len() <= cpu {
        slots.resize_with(cpu + 1, || None);
    }
    &mut slots[cpu]
}

/// What a CPU's last [`ContextRecord`] said.
#[derive(Clone, Copy)]
struct Context {
    comm: [u8; 16],
    task_state: u8,
    ns_pid: u32,
    start_boottime: u64,
    generation: u32,
    parent_ino: u64,
    name: [u8; NAME_LEN],
}

/// Decodes records with the field offsets of the running kernel, in the ring's order.
pub struct Decoder {
    config: Config,
    /// Indexed by CPU.
    contexts: Vec<Option<Context>>,
    /// Each CPU's last lock record, which its repeat records repeat; indexed by CPU.
    last_locks: Vec<Option<LockRecord>>,
}

impl Decoder {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            contexts: Vec::new(),
            last_locks: Vec::new(),
        }
    }

    /// Reads a record copied out of the ring (one of [`records_in`]). Records are told apart by
    /// their size.
    pub fn decode(&mut self, bytes: &[u8]) -> Decoded {
        match bytes.len() {
            LockRecord::SIZE => {
                // SAFETY: LockRecord is plain old data valid for any bit pattern; the length
                // matches.
                let record: LockRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                *cpu_slot(&mut self.last_locks, record.cpu) = Some(record);
                self.lock_record(&record)
            }
            RepeatRecord::SIZE => self.repeat_record(bytes),
            ContextRecord::SIZE => self.context_record(bytes),
            Record::SIZE => self
                .record(bytes)
                .map_or(Decoded::Unreadable, Decoded::Input),
            _ => Decoded::Unreadable,
        }
    }

    fn context_record(&mut self, bytes: &[u8]) -> Decoded {
        // SAFETY: ContextRecord is plain old data valid for any bit pattern; the length matches.
        let record: ContextRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if record.source != Source::Context as u8 {
            return Decoded::Unreadable;
        }
        // A lock record comes after every context.
        *cpu_slot(&mut self.last_locks, record.cpu) = None;
        *cpu_slot(&mut self.contexts, record.cpu) = Some(Context {
            comm: record.comm,
            task_state: record.task_state,
            ns_pid: record.ns_pid,
            start_boottime: record.start_boottime,
            generation: record.generation,
            parent_ino: record.parent_ino,
            name: record.name,
        });
        Decoded::Context
    }

    /// The CPU's last lock record again, at the repeat's time, with its type, flags and result.
    fn repeat_record(&self, bytes: &[u8]) -> Decoded {
        // SAFETY: RepeatRecord is plain old data valid for any bit pattern; the length matches.
        let repeat: RepeatRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let Some(Some(last)) = self.last_locks.get(usize::from(repeat.cpu)) else {
            return Decoded::Unreadable;
        };
        if repeat.source != Source::Repeat as u8 {
            return Decoded::Unreadable;
        }
        self.lock_record(&LockRecord {
            ts_ns: repeat.ts_ns,
            lock_type: repeat.lock_type,
            flags: repeat.flags,
            ret: repeat.ret,
            ..*last
        })
    }

    fn lock_record(&self, record: &LockRecord) -> Decoded {
        let Some(Some(context)) = self.contexts.get(usize::from(record.cpu)) else {
            return Decoded::Unreadable;
        };
        let op = LockOp {
            ts_ns: record.ts_ns,
            pid: record.pid,
            tid: record.tid,
            comm: context.comm,
            kind: lock_kind(record.flags),
            dev: record.dev,
            ino: record.ino,
            owner: record.owner,
            lock_type: record.lock_type,
            flags: record.flags,
            start: record.start,
            end: record.end,
            ret: record.ret,
            ns_pid: context.ns_pid,
            file: FileName {
                generation: context.generation,
                nlink: record.nlink,
                parent_ino: context.parent_ino,
                name: context.name,
            },
            start_time: procfs::start_time_from_boottime(context.start_boottime),
            exiting: exiting(context.task_state),
        };
        Decoded::Input(match Source::from_u8(record.source) {
            Some(Source::Flock | Source::Posix) => Input::Lock(op),
            Some(Source::FcntlFailure) => Input::FcntlFailure(op),
            _ => return Decoded::Unreadable,
        })
    }

    fn record(&self, bytes: &[u8]) -> Option<Input> {
        // SAFETY: Record is plain old data valid for any bit pattern; the length matches.
        let record: Record = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(match Source::from_u8(record.source)? {
            Source::Context | Source::Repeat => return None,
            Source::Flock => Input::Lock(self.lock_op(&record, &self.config.flock, None)),
            Source::Posix => Input::Lock(self.lock_op(&record, &self.config.posix, None)),
            Source::FcntlFailure => {
                Input::FcntlFailure(self.lock_op(&record, &self.config.fcntl, None))
            }
            // Only attached where flock_lock_inode is a BTF tracepoint: the same layout.
            Source::FlockWaitEnd => {
                Input::FlockWaitEnd(self.lock_op(&record, &self.config.flock, None))
            }
            Source::LeaseAdd => {
                Input::Lock(self.lock_op(&record, &self.config.lease_add, Some(LockKind::Lease)))
            }
            Source::LeaseDelete => {
                Input::Lock(self.lock_op(&record, &self.config.lease_delete, Some(LockKind::Lease)))
            }
            Source::Exit => Input::Exit {
                ts_ns: record.ts_ns,
                pid: record.pid,
                comm: record.comm,
                start_time: procfs::start_time_from_boottime(record.start_boottime),
            },
            Source::Fork => Input::Fork {
                ts_ns: record.ts_ns,
                pid: record.pid,
                comm: record.comm,
                start_time: procfs::start_time_from_boottime(record.start_boottime),
                child: read_u64(&record.payload, self.config.new_task.pid, 4) as u32,
            },
            Source::Exec => Input::Exec {
                ts_ns: record.ts_ns,
                pid: record.pid,
                comm: record.comm,
                start_time: procfs::start_time_from_boottime(record.start_boottime),
                locked: None,
            },
            Source::FdSent | Source::FdReceived => {
                // SAFETY: PassedFds is plain old data and fits the payload.
                let passed: PassedFds =
                    unsafe { std::ptr::read_unaligned(record.payload.as_ptr().cast()) };
                let named = (passed.count as usize).min(PASSED_FDS);
                Input::Passed {
                    ts_ns: record.ts_ns,
                    pid: record.pid,
                    comm: record.comm,
                    start_time: procfs::start_time_from_boottime(record.start_boottime),
                    received: record.source == Source::FdReceived as u8,
                    files: passed.files[..named]
                        .iter()
                        .copied()
                        .filter(|&file| file != 0)
                        .collect(),
                }
            }
        })
    }

    fn lock_op(&self, record: &Record, fields: &LockFields, kind: Option<LockKind>) -> LockOp {
        let payload = &record.payload;
        let mut lock_type = read_u64(payload, fields.lock_type, 1) as u8;
        let flags = read_u64(payload, fields.flags, 4) as u32;
        let kind = kind.unwrap_or_else(|| lock_kind(flags));
        if record.source == Source::LeaseDelete as u8 {
            lock_type = aimlock_common::fl_type::UNLCK;
        }
        let (start, end) = if fields.start == ABSENT {
            (0, i64::MAX)
        } else {
            (
                read_u64(payload, fields.start, 8) as i64,
                read_u64(payload, fields.end, 8) as i64,
            )
        };
        LockOp {
            ts_ns: record.ts_ns,
            pid: record.pid,
            tid: record.tid,
            comm: record.comm,
            kind,
            dev: read_u64(payload, fields.dev, 4) as u32,
            ino: read_u64(payload, fields.ino, 8),
            owner: read_u64(payload, fields.owner, 8),
            lock_type,
            flags,
            start,
            end,
            ret: read_u64(payload, fields.ret, 4) as u32 as i32,
            file: record.file,
            ns_pid: record.ns_pid,
            start_time: procfs::start_time_from_boottime(record.start_boottime),
            exiting: exiting(record.task_state),
        }
    }
}

/// What a record's [`task_state`] bits say of the task's exit.
fn exiting(state: u8) -> Option<bool> {
    (state & task_state::READ != 0).then_some(state & task_state::EXITING != 0)
}

/// Which kind of lock `fl_flags` says a lock is.
fn lock_kind(flags: u32) -> LockKind {
    if flags & fl_flags::FLOCK != 0 {
        LockKind::Flock
    } else if flags & fl_flags::OFDLCK != 0 {
        LockKind::Ofd
    } else if flags & fl_flags::LEASE != 0 {
        LockKind::Lease
    } else {
        LockKind::Posix
    }
}

/// Reads a little- or big-endian (native) unsigned field of `size` bytes; 0 when absent.
fn read_u64(payload: &[u8; PAYLOAD_LEN], offset: u16, size: usize) -> u64 {
    let offset = usize::from(offset);
    let Some(bytes) = payload.get(offset..offset + size) else {
        return 0;
    };
    let mut wide = [0u8; 8];
    if cfg!(target_endian = "little") {
        wide[..size].copy_from_slice(bytes);
    } else {
        wide[8 - size..].copy_from_slice(bytes);
    }
    u64::from_ne_bytes(wide)
}

/// The command name in a NUL-padded `comm` array.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use aimlock_common::{ExitFields, fl_type};

    use super::*;

    /// The layout of the filelock events on 6.1 to 6.18.
    pub const LOCK_FIELDS: LockFields = LockFields {
        ino: 16,
        dev: 24,
        blocker: 32,
        owner: 40,
        fl_pid: 48,
        flags: 52,
        lock_type: 56,
        start: 64,
        end: 72,
        ret: 80,
    };

    fn put(payload: &mut [u8; PAYLOAD_LEN], offset: u16, bytes: &[u8]) {
        payload[usize::from(offset)..usize::from(offset) + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn decodes_a_posix_record_at_the_format_offsets() {
        let config = Config {
            posix: LOCK_FIELDS,
            exit: ExitFields { group_dead: 32 },
            ..Config::DEFAULT
        };
        let mut payload = [0u8; PAYLOAD_LEN];
        put(&mut payload, 16, &4242u64.to_ne_bytes());
        put(&mut payload, 24, &((8u32 << 20) | 3).to_ne_bytes());
        put(&mut payload, 40, &0xffff_8880_dead_beefu64.to_ne_bytes());
        put(&mut payload, 52, &fl_flags::POSIX.to_ne_bytes());
        put(&mut payload, 56, &[fl_type::WRLCK]);
        put(&mut payload, 64, &10i64.to_ne_bytes());
        put(&mut payload, 72, &19i64.to_ne_bytes());
        put(&mut payload, 80, &(-11i32).to_ne_bytes());
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"lckr");
        let record = Record {
            ts_ns: 7,
            pid: 100,
            tid: 101,
            source: Source::Posix as u8,
            task_state: task_state::READ | task_state::EXITING,
            _pad: [0; 2],
            ns_pid: 0,
            comm,
            payload,
            file: FileName {
                generation: 9,
                ..FileName::NONE
            },
            // 12.345678901 s after boot.
            start_boottime: 12_345_678_901,
        };
        let bytes = &bytes_of(&record)[..];
        let Decoded::Input(Input::Lock(op)) = Decoder::new(config).decode(bytes) else {
            panic!("not a lock op");
        };
        assert_eq!(op.kind, LockKind::Posix);
        assert_eq!((op.dev, op.ino), ((8 << 20) | 3, 4242));
        assert_eq!((op.start, op.end, op.ret), (10, 19, -11));
        assert_eq!(op.file.generation, 9);
        assert_eq!(op.owner, 0xffff_8880_dead_beef);
        assert_eq!(op.lock_type, fl_type::WRLCK);
        assert_eq!(op.exiting, Some(true));
        assert_eq!(comm_str(&op.comm), "lckr");
        // At the clock tick /proc/PID/stat counts in (USER_HZ, 100 on Linux).
        assert_eq!(op.start_time, 12_340_000_000);
        assert_eq!(
            Decoder::new(config).decode(&bytes[..10]),
            Decoded::Unreadable
        );
    }

    fn record(source: Source, payload: [u8; PAYLOAD_LEN]) -> Vec<u8> {
        let record = Record {
            ts_ns: 7,
            pid: 100,
            tid: 100,
            source: source as u8,
            task_state: 0,
            _pad: [0; 2],
            ns_pid: 0,
            comm: [0; 16],
            payload,
            file: FileName::NONE,
            // 2.5 s after boot.
            start_boottime: 2_500_000_000,
        };
        bytes_of(&record)
    }

    #[test]
    fn decodes_forks_at_the_format_offset_and_passed_descriptors() {
        let config = Config {
            new_task: aimlock_common::NewTaskFields {
                pid: 8,
                clone_flags: 32,
            },
            ..Config::DEFAULT
        };
        let mut decoder = Decoder::new(config);
        let mut payload = [0u8; PAYLOAD_LEN];
        put(&mut payload, 8, &4242u32.to_ne_bytes());
        let Decoded::Input(Input::Fork {
            pid,
            child,
            start_time,
            ..
        }) = decoder.decode(&record(Source::Fork, payload))
        else {
            panic!("not a fork");
        };
        // The forking process, with its own start time (the child's is not in the record).
        assert_eq!((pid, child, start_time), (100, 4242, 2_500_000_000));

        let passed = PassedFds {
            count: 3,
            fds: [5, 6, 7, -1],
            _pad: 0,
            // The second one could not be read.
            files: [0xf1, 0, 0xf3, 0],
        };
        let mut payload = [0u8; PAYLOAD_LEN];
        // SAFETY: PassedFds is plain old data that fits the payload.
        unsafe { std::ptr::write_unaligned(payload.as_mut_ptr().cast::<PassedFds>(), passed) };
        let Decoded::Input(Input::Passed {
            received,
            files,
            start_time,
            ..
        }) = decoder.decode(&record(Source::FdReceived, payload))
        else {
            panic!("not a receipt");
        };
        assert!(received);
        assert_eq!(start_time, 2_500_000_000);
        assert_eq!(files.as_slice(), [0xf1, 0xf3]);
    }

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: the records are plain old data.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn context(cpu: u16, comm: &[u8], name: &[u8]) -> Vec<u8> {
        let mut record = ContextRecord {
            ts_ns: 7,
            pid: 100,
            tid: 101,
            source: Source::Context as u8,
            task_state: 0,
            cpu,
            ns_pid: 5,
            // 2.5 s after boot.
            start_boottime: 2_500_000_000,
            comm: [0; 16],
            generation: 9,
            _pad2: 0,
            parent_ino: 77,
            name: [0; NAME_LEN],
        };
        record.comm[..comm.len()].copy_from_slice(comm);
        record.name[..name.len()].copy_from_slice(name);
        bytes_of(&record)
    }

    #[test]
    fn a_lock_record_tells_whether_its_task_was_exiting_as_its_context_says() {
        let mut decoder = Decoder::new(Config::DEFAULT);
        let in_state = |state: u8| {
            let mut bytes = context(0, b"holder", b"a.lock");
            bytes[std::mem::offset_of!(ContextRecord, task_state)] = state;
            bytes
        };
        for (state, exiting) in [
            (0, None),
            (task_state::READ, Some(false)),
            (task_state::READ | task_state::EXITING, Some(true)),
        ] {
            assert_eq!(decoder.decode(&in_state(state)), Decoded::Context);
            assert_eq!(op(decoder.decode(&lock(0, 10))).exiting, exiting);
        }
    }

    fn lock(cpu: u16, ts_ns: u64) -> Vec<u8> {
        bytes_of(&LockRecord {
            ts_ns,
            pid: 100,
            tid: 101,
            source: Source::Flock as u8,
            lock_type: fl_type::WRLCK,
            cpu,
            ret: 0,
            ino: 4242,
            dev: 3,
            fl_pid: 100,
            owner: 0xf11e,
            flags: fl_flags::FLOCK,
            nlink: 1,
            start: 0,
            end: i64::MAX,
        })
    }

    fn op(decoded: Decoded) -> LockOp {
        match decoded {
            Decoded::Input(Input::Lock(op)) => op,
            other => panic!("not a lock op: {other:?}"),
        }
    }

    #[test]
    fn a_lock_record_is_named_by_the_last_context_of_its_cpu() {
        let mut decoder = Decoder::new(Config::DEFAULT);
        // No context told yet on that CPU: nothing is made up.
        assert_eq!(decoder.decode(&lock(1, 10)), Decoded::Unreadable);
        assert_eq!(
            decoder.decode(&context(1, b"old", b"a.lock")),
            Decoded::Context
        );
        assert_eq!(
            decoder.decode(&context(3, b"other", b"b.lock")),
            Decoded::Context
        );
        let first = op(decoder.decode(&lock(1, 11)));
        assert_eq!(comm_str(&first.comm), "old");
        assert_eq!(&first.file.name[..7], b"a.lock\0");
        assert_eq!((first.file.generation, first.file.nlink), (9, 1));
        assert_eq!((first.file.parent_ino, first.ns_pid), (77, 5));
        assert_eq!(
            (first.kind, first.ino, first.dev),
            (LockKind::Flock, 4242, 3)
        );
        assert_eq!((first.start, first.end, first.owner), (0, i64::MAX, 0xf11e));
        assert_eq!(first.start_time, 2_500_000_000);
        // The next lock record of that CPU, without a context of its own, keeps it.
        assert_eq!(comm_str(&op(decoder.decode(&lock(1, 12))).comm), "old");
        // Another CPU's context is its own.
        assert_eq!(comm_str(&op(decoder.decode(&lock(3, 13))).comm), "other");
        // A new context replaces the CPU's last.
        decoder.decode(&context(1, b"new", b"c.lock"));
        let after = op(decoder.decode(&lock(1, 14)));
        assert_eq!(comm_str(&after.comm), "new");
        assert_eq!(&after.file.name[..7], b"c.lock\0");
        assert_eq!(decoder.decode(&lock(2, 15)), Decoded::Unreadable);
    }

    fn repeat(cpu: u16, ts_ns: u64, lock_type: u8, ret: i32) -> Vec<u8> {
        bytes_of(&RepeatRecord {
            ts_ns,
            flags: fl_flags::FLOCK | fl_flags::SLEEP,
            ret,
            source: Source::Repeat as u8,
            lock_type,
            cpu,
            _pad: 0,
        })
    }

    /// A CPU's batch as the kernel sends it: the records, then the count of lock records.
    fn batch(records: &[Vec<u8>], locks: u32) -> Vec<u8> {
        let mut bytes = records.concat();
        bytes.extend_from_slice(&locks.to_ne_bytes());
        bytes
    }

    #[test]
    fn a_repeat_record_is_its_cpus_last_lock_record_at_another_time() {
        let mut decoder = Decoder::new(Config::DEFAULT);
        decoder.decode(&context(1, b"burst", b"a.lock"));
        decoder.decode(&context(2, b"other", b"b.lock"));
        // Nothing to repeat on a CPU that has written no lock record since its context.
        assert_eq!(
            decoder.decode(&repeat(1, 10, fl_type::UNLCK, 0)),
            Decoded::Unreadable
        );
        let first = op(decoder.decode(&lock(1, 11)));
        // Another CPU's lock record, on another file, in between.
        let mut other_cpu = lock(2, 12);
        other_cpu[std::mem::offset_of!(LockRecord, ino)..][..8]
            .copy_from_slice(&99u64.to_ne_bytes());
        assert_eq!(op(decoder.decode(&other_cpu)).ino, 99);
        let unlock = op(decoder.decode(&repeat(1, 13, fl_type::UNLCK, 0)));
        assert_eq!(
            unlock,
            LockOp {
                ts_ns: 13,
                lock_type: fl_type::UNLCK,
                flags: fl_flags::FLOCK | fl_flags::SLEEP,
                ..first
            }
        );
        let refused = op(decoder.decode(&repeat(1, 14, fl_type::WRLCK, -11)));
        assert_eq!((refused.ts_ns, refused.ret, refused.ino), (14, -11, 4242));
        // A new context ends what the CPU's repeats may repeat.
        decoder.decode(&context(1, b"burst", b"c.lock"));
        assert_eq!(
            decoder.decode(&repeat(1, 15, fl_type::UNLCK, 0)),
            Decoded::Unreadable
        );
    }

    #[test]
    fn a_batch_gives_its_records_in_order_and_a_miscounted_one_gives_nothing() {
        let records = [
            context(0, b"burst", b"a.lock"),
            lock(0, 10),
            repeat(0, 11, fl_type::UNLCK, 0),
            repeat(0, 12, fl_type::WRLCK, 0),
            context(0, b"burst", b"b.lock"),
            lock(0, 13),
        ];
        let whole = batch(&records, 4);
        assert!(records_in(&whole).eq(records.iter().map(Vec::as_slice)));
        let mut decoder = Decoder::new(Config::DEFAULT);
        let times: Vec<u64> = records_in(&whole)
            .filter_map(|record| match decoder.decode(record) {
                Decoded::Input(Input::Lock(op)) => Some(op.ts_ns),
                _ => None,
            })
            .collect();
        assert_eq!(times, [10, 11, 12, 13]);
        // A batch of one lock record.
        let lone = batch(&[lock(0, 14)], 1);
        assert!(records_in(&lone).eq([lock(0, 14).as_slice()]));
        // A trailer that does not count the lock records, or a record cut short: the batch comes
        // as one item, of no record's length.
        for damaged in [batch(&records, 3), batch(&records[..5], 4)] {
            let items: Vec<&[u8]> = records_in(&damaged).collect();
            assert_eq!(items, [damaged.as_slice()]);
            assert_eq!(decoder.decode(items[0]), Decoded::Unreadable);
        }
        // A Record is never taken for a batch.
        let whole_record = vec![0; Record::SIZE];
        assert!(records_in(&whole_record).eq([whole_record.as_slice()]));
    }
}
