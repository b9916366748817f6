//! Loading and attaching the kernel programs, and reading what they write.
//!
//! Field offsets are read from each tracepoint's `format` file and handed to the programs in
//! the `CONFIG` global, and to the decoder: names and layouts differ between kernels (6.1 says
//! `fl_owner`, 6.12 says `owner`).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

mod batches;
mod ring_reader;

pub use batches::BatchFlusher;
pub use ring_reader::{Batch, RingReader};

use aimlock_common::{
    ABSENT, BATCH_BYTES, Config, ExitFields, FreeFields, InodeKey, LockFields, NewTaskFields,
    PAYLOAD_LEN, names,
};
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};

/// What to record, applied in the kernel before anything reaches the ring.
#[derive(Clone, Debug)]
pub struct Filters {
    pub pids: Vec<u32>,
    /// How many processes the pid filter can hold at once (the `--pid` processes and the
    /// processes they start).
    pub pid_capacity: u32,
    /// Command names, at most 15 bytes each.
    pub comms: Vec<String>,
    /// (kernel dev_t, inode) pairs.
    pub inodes: Vec<(u32, u64)>,
}

/// A tracepoint aimlock attaches to, and whether tracing can go on without it.
struct Hook {
    category: &'static str,
    name: &'static str,
    program: &'static str,
    required: bool,
}

const HOOKS: &[Hook] = &[
    Hook {
        category: "filelock",
        name: "flock_lock_inode",
        program: "flock_lock_inode",
        required: true,
    },
    Hook {
        category: "filelock",
        name: "posix_lock_inode",
        program: "posix_lock_inode",
        required: true,
    },
    Hook {
        category: "filelock",
        name: "fcntl_setlk",
        program: "fcntl_setlk",
        required: true,
    },
    Hook {
        category: "sched",
        name: "sched_process_exit",
        program: "sched_process_exit",
        required: true,
    },
    Hook {
        category: "filelock",
        name: "generic_add_lease",
        program: "generic_add_lease",
        required: false,
    },
    Hook {
        category: "filelock",
        name: "generic_delete_lease",
        program: "generic_delete_lease",
        required: false,
    },
];

/// With `--pid`: processes started by traced processes join the filter, and processes that are
/// gone leave it.
/// The `--pid` filter's and the lineage's: who starts which process, who runs a new program,
/// who passes descriptors over unix sockets, and when a process is gone.
const PROCESS_HOOKS: &[Hook] = &[
    Hook {
        category: "task",
        name: "task_newtask",
        program: "task_newtask",
        required: true,
    },
    Hook {
        category: "sched",
        name: "sched_process_free",
        program: "sched_process_free",
        required: true,
    },
    Hook {
        category: "sched",
        name: "sched_process_exec",
        program: "sched_process_exec",
        required: false,
    },
];

/// Descriptors passed as SCM_RIGHTS (`--follow-unix-sockets`): only with the kernel's BTF,
/// which describes the structs these programs read. Not by default: while any syscall
/// tracepoint is attached, every system call of every process takes the kernel's slower
/// syscall-work path (about 50 ns more per call, measured on a tight flock loop).
const PASSING_HOOKS: &[Hook] = &[
    Hook {
        category: "syscalls",
        name: "sys_enter_sendmsg",
        program: "sys_enter_sendmsg",
        required: false,
    },
    Hook {
        category: "syscalls",
        name: "sys_enter_recvmsg",
        program: "sys_enter_recvmsg",
        required: false,
    },
    Hook {
        category: "syscalls",
        name: "sys_exit_recvmsg",
        program: "sys_exit_recvmsg",
        required: false,
    },
];

/// The loaded and attached programs and the maps user space reads.
pub struct Tracer {
    /// Keeps the programs attached and the maps alive: drop it to detach.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    /// Sends what bursts leave in the CPUs' batches to `events`.
    pub flusher: BatchFlusher,
    pub drops: Drops,
    pub pid_filter: PidFilter,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Where the decoder finds each field of each source's records.
    pub decode: Config,
    /// Optional hooks this kernel lacks.
    pub missing: Vec<String>,
    /// How the lock hooks run: `btf` (BTF tracepoints, which name files and their generation),
    /// `classic` (classic tracepoints) or `mixed`.
    pub lock_hooks: &'static str,
    pub holders: Holders,
    pub inode_filter: InodeFilter,
}

impl Tracer {
    /// Checks privileges and tracefs, reads the tracepoint layouts, loads and attaches.
    /// `classic_lock_hooks` runs the lock hooks as classic tracepoints even where BTF would
    /// allow more, as on kernels without BTF (for tests of that path).
    /// `follow_unix_sockets`: attach the descriptor-passing hooks too (see [`PASSING_HOOKS`]).
    pub fn load(
        filters: &Filters,
        ring_size: u32,
        classic_lock_hooks: bool,
        follow_unix_sockets: bool,
    ) -> Result<Self> {
        check_privileges()?;
        let tracefs = tracefs()?;
        if !ring_size.is_power_of_two() || ring_size < 4096 {
            bail!("--ring-size must be a power of two of at least 4096 bytes, not {ring_size}");
        }
        raise_memlock_limit();

        let mut config = Config::DEFAULT;
        let mut missing = Vec::new();
        // Opened once for both layouts; its error, if any, said for each.
        let kernel_structs = crate::btf::KernelStructs::open().map_err(|err| format!("{err:#}"));
        let structs = || kernel_structs.as_ref().map_err(|err| anyhow!("{err}"));
        let passing_hooks =
            match follow_unix_sockets.then(|| structs().and_then(crate::btf::lineage_layout)) {
                None => &[],
                Some(Ok(fields)) => {
                    config.lineage = fields;
                    PASSING_HOOKS
                }
                Some(Err(err)) => {
                    missing.push(format!("descriptors passed over unix sockets ({err:#})"));
                    &[]
                }
            };
        let hooks: Vec<&Hook> = HOOKS
            .iter()
            .chain(PROCESS_HOOKS)
            .chain(passing_hooks)
            .collect();
        let mut attach = Vec::new();
        for hook in &hooks {
            let format = match Format::read(&tracefs, hook.category, hook.name) {
                Ok(format) => format,
                Err(err) if !hook.required => {
                    missing.push(format!("{}:{} ({err})", hook.category, hook.name));
                    continue;
                }
                Err(err) => return Err(err),
            };
            let layout = |lease: bool| format.lock_fields(lease);
            match hook.name {
                "flock_lock_inode" => config.flock = layout(false)?,
                "posix_lock_inode" => config.posix = layout(false)?,
                "fcntl_setlk" => config.fcntl = layout(false)?,
                "generic_add_lease" => config.lease_add = layout(true)?,
                "generic_delete_lease" => config.lease_delete = layout(true)?,
                "sched_process_exit" => {
                    config.exit = ExitFields {
                        group_dead: format.offset(&["group_dead"], 1).unwrap_or(ABSENT),
                    }
                }
                "task_newtask" => {
                    config.new_task = NewTaskFields {
                        pid: format.required(&["pid"], 4)?,
                        clone_flags: format.required(&["clone_flags"], 8)?,
                    }
                }
                "sched_process_free" => {
                    config.free = FreeFields {
                        pid: format.required(&["pid"], 4)?,
                    }
                }
                "sched_process_exec" => {}
                "sys_enter_sendmsg" => config.lineage.sendmsg_msg = format.required(&["msg"], 8)?,
                "sys_enter_recvmsg" => config.lineage.recvmsg_msg = format.required(&["msg"], 8)?,
                "sys_exit_recvmsg" => config.lineage.recvmsg_ret = format.required(&["ret"], 8)?,
                _ => unreachable!("every hook has a layout"),
            }
            attach.push(*hook);
        }
        // A batch fits the ring eight times over: a ring of a few pages still takes batches
        // while the reader is a little behind.
        config.batch_bytes = (ring_size / 8).min(BATCH_BYTES as u32);
        config.filter_pid = u8::from(!filters.pids.is_empty());
        config.filter_comm = u8::from(!filters.comms.is_empty());
        config.filter_inode = u8::from(!filters.inodes.is_empty());
        // The lock hooks run as BTF tracepoints where the kernel's BTF describes the structs
        // they read, as classic tracepoints otherwise.
        let btf_layout = match structs().and_then(crate::btf::lock_layout) {
            Ok(_) if classic_lock_hooks => None,
            Ok(layout) => {
                config.btf = layout.offsets;
                Some(layout)
            }
            Err(err) => {
                log::info!("lock hooks use classic tracepoints: {err:#}");
                None
            }
        };

        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
            .map_max_entries(names::EVENTS, ring_size)
            .map_max_entries(names::PIDS, filters.pid_capacity)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/aimlock"
            )))
            .context("cannot load the eBPF programs")?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                log::warn!("kernel-side log messages are unavailable: {err}");
                None
            }
        };
        fill_filters(&mut ebpf, filters)?;
        let flusher = BatchFlusher::load(&mut ebpf)?;
        let mut decode = config;
        let mut btf_hooks = 0;
        if let Some(layout) = btf_layout {
            let kernel_btf = Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
            for (field, tracepoint) in [
                (&mut decode.flock, "flock_lock_inode"),
                (&mut decode.posix, "posix_lock_inode"),
                (&mut decode.fcntl, "fcntl_setlk"),
            ] {
                match attach_btf(&mut ebpf, &kernel_btf, tracepoint) {
                    Ok(()) => {
                        *field = layout.fields;
                        attach.retain(|hook| hook.name != tracepoint);
                        btf_hooks += 1;
                    }
                    // The BTF describes the lock, so a refusal is this kernel's verifier: said, as
                    // the classic tracepoint names files only from the locking process's fds.
                    Err(err) => {
                        log::warn!(
                            "{tracepoint}: the BTF program was refused, the classic tracepoint \
                             takes its place ({err})"
                        );
                        log::debug!("{tracepoint}: {err:#}");
                    }
                }
            }
            // What ends a queued flock call that a signal interrupted: its records share the
            // BTF flock layout, and the queued call's BTF event says which call it was.
            if decode.flock == layout.fields
                && let Err(err) = attach_btf(&mut ebpf, &kernel_btf, FLOCK_WAIT_END)
            {
                log::warn!(
                    "a flock wait that a signal interrupts ends only at its waiter's next lock \
                     call or exit: {err:#}"
                );
            }
        }
        for hook in attach {
            let program: &mut TracePoint = ebpf
                .program_mut(hook.program)
                .ok_or_else(|| anyhow!("program {} is missing from the object", hook.program))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("the kernel refused program {}", hook.program))?;
            program
                .attach(hook.category, hook.name)
                .with_context(|| format!("cannot attach to {}:{}", hook.category, hook.name))?;
        }
        let events = RingBuf::try_from(
            ebpf.take_map(names::EVENTS)
                .ok_or_else(|| anyhow!("map {} missing", names::EVENTS))?,
        )?;
        let drops = PerCpuArray::try_from(
            ebpf.take_map(names::DROPS)
                .ok_or_else(|| anyhow!("map {} missing", names::DROPS))?,
        )?;
        let untraced_children = PerCpuArray::try_from(
            ebpf.take_map(names::UNTRACED_CHILDREN)
                .ok_or_else(|| anyhow!("map {} missing", names::UNTRACED_CHILDREN))?,
        )?;
        let holders = BpfHashMap::try_from(
            ebpf.take_map(names::HOLDERS)
                .ok_or_else(|| anyhow!("map {} missing", names::HOLDERS))?,
        )?;
        let inode_filter = BpfHashMap::try_from(
            ebpf.take_map(names::INODES)
                .ok_or_else(|| anyhow!("map {} missing", names::INODES))?,
        )?;
        Ok(Self {
            holders: Holders(holders),
            inode_filter: InodeFilter(inode_filter),
            ebpf,
            events,
            flusher,
            drops: Drops(drops),
            pid_filter: PidFilter {
                untraced_children: (!filters.pids.is_empty()).then_some(untraced_children),
                capacity: filters.pid_capacity,
                next_check: Instant::now(),
                full_said: false,
            },
            logger,
            decode,
            missing,
            lock_hooks: match btf_hooks {
                0 => "classic",
                3 => "btf",
                _ => "mixed",
            },
        })
    }
}

/// The per-CPU counters of records the ring refused.
pub struct Drops(PerCpuArray<MapData, u64>);

impl Drops {
    /// Records the kernel could not put in the ring, summed over CPUs.
    pub fn total(&self) -> Result<u64> {
        sum_over_cpus(&self.0).context("cannot read the drop counters")
    }
}

/// How well `--pid` follows the processes that traced processes start.
/// The kernel's set of processes that hold or may hold locks, whose forks, execs and passed
/// descriptors are recorded.
pub struct Holders(BpfHashMap<MapData, u32, u8>);

impl Holders {
    /// Adds a process found holding locks (at start: it took them before the tracer ran).
    pub fn add(&mut self, pid: u32) {
        if let Err(err) = self.0.insert(pid, 1, 0) {
            log::warn!("cannot follow the children of lock holder {pid}: {err}");
        }
    }

    /// Takes out a pid whose process is gone.
    pub fn remove(&mut self, pid: u32) {
        // Already out if the kernel saw its process freed.
        let _ = self.0.remove(&pid);
    }
}

/// The kernel's `--path` filter: the inodes whose locks are recorded.
pub struct InodeFilter(BpfHashMap<MapData, InodeKey, u8>);

impl InodeFilter {
    pub fn add(&mut self, (dev, ino): (u32, u64)) -> Result<()> {
        self.0
            .insert(InodeKey { dev, _pad: 0, ino }, 1, 0)
            .context("cannot add a file to the --path filter")
    }

    pub fn remove(&mut self, (dev, ino): (u32, u64)) -> Result<()> {
        self.0
            .remove(&InodeKey { dev, _pad: 0, ino })
            .context("cannot take a file out of the --path filter")
    }
}

pub struct PidFilter {
    /// Per-CPU counters of processes the full filter could not take; `None` without `--pid`.
    untraced_children: Option<PerCpuArray<MapData, u64>>,
    capacity: u32,
    next_check: Instant,
    full_said: bool,
}

impl PidFilter {
    /// The counters are read at most this often: the trace loop calls more often.
    const CHECK_INTERVAL: Duration = Duration::from_secs(1);

    /// Says once on stderr that the filter is full, as soon as a child was not followed.
    pub fn say_once_when_full(&mut self) {
        let now = Instant::now();
        if self.full_said || now < self.next_check {
            return;
        }
        self.next_check = now + Self::CHECK_INTERVAL;
        if self.untraced_children().is_some_and(|count| count > 0) {
            self.full_said = true;
            eprintln!(
                "aimlock: --pid filter full ({} entries): children of traced processes are no \
                 longer followed",
                self.capacity
            );
        }
    }

    /// Processes started by traced processes that were not traced because the filter was full;
    /// `None` without `--pid`.
    pub fn untraced_children(&self) -> Option<u64> {
        let counters = self.untraced_children.as_ref()?;
        sum_over_cpus(counters)
            .inspect_err(|err| log::warn!("cannot read the untraced children counters: {err}"))
            .ok()
    }
}

fn sum_over_cpus(counters: &PerCpuArray<MapData, u64>) -> Result<u64, aya::maps::MapError> {
    Ok(counters.get(&0, 0)?.iter().sum())
}

/// The tracepoint at which a signal ends a queued flock(2) call's wait.
const FLOCK_WAIT_END: &str = "signal_deliver";

/// Loads and attaches the BTF tracepoint program for `tracepoint` (named `btf_<tracepoint>`).
fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, tracepoint: &str) -> Result<()> {
    let name = format!("btf_{tracepoint}");
    let program: &mut BtfTracePoint = ebpf
        .program_mut(&name)
        .ok_or_else(|| anyhow!("program {name} is missing from the object"))?
        .try_into()?;
    program
        .load(tracepoint, btf)
        .with_context(|| format!("the kernel refused program {name}"))?;
    program
        .attach()
        .with_context(|| format!("cannot attach {name}"))?;
    Ok(())
}

fn fill_filters(ebpf: &mut Ebpf, filters: &Filters) -> Result<()> {
    let mut pids: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
        ebpf.map_mut(names::PIDS)
            .ok_or_else(|| anyhow!("map {} missing", names::PIDS))?,
    )?;
    for pid in &filters.pids {
        pids.insert(pid, 1, 0)
            .with_context(|| format!("cannot add --pid {pid} to the filter"))?;
    }
    let mut comms: BpfHashMap<_, [u8; 16], u8> = BpfHashMap::try_from(
        ebpf.map_mut(names::COMMS)
            .ok_or_else(|| anyhow!("map {} missing", names::COMMS))?,
    )?;
    for comm in &filters.comms {
        let mut key = [0u8; 16];
        let bytes = comm.as_bytes();
        if bytes.len() > 15 {
            bail!("--comm {comm:?} is longer than the kernel's 15-byte command names");
        }
        key[..bytes.len()].copy_from_slice(bytes);
        comms.insert(key, 1, 0)?;
    }
    let mut inodes: BpfHashMap<_, InodeKey, u8> = BpfHashMap::try_from(
        ebpf.map_mut(names::INODES)
            .ok_or_else(|| anyhow!("map {} missing", names::INODES))?,
    )?;
    for &(dev, ino) in &filters.inodes {
        inodes.insert(InodeKey { dev, _pad: 0, ino }, 1, 0)?;
    }
    Ok(())
}

/// Capability numbers from include/uapi/linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn check_privileges() -> Result<()> {
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| anyhow!("no CapEff line in /proc/self/status"))?;
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!("aimlock trace needs root, or CAP_BPF and CAP_PERFMON, to load eBPF programs")
}

/// Where tracefs is mounted.
pub fn tracefs() -> Result<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.join("events").is_dir())
        .ok_or_else(|| {
            anyhow!(
                "tracefs is not mounted (no /sys/kernel/tracing/events): \
                 run `mount -t tracefs tracefs /sys/kernel/tracing`"
            )
        })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "cannot raise RLIMIT_MEMLOCK ({}); kernels from 5.11 on do not need it",
            std::io::Error::last_os_error()
        );
    }
}

/// The fields of one tracepoint, from its `format` file.
pub struct Format {
    event: String,
    /// name -> (offset, size)
    fields: HashMap<String, (u16, u16)>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|err| {
            anyhow!(
                "this kernel has no tracepoint {category}:{name} ({}: {err})",
                path.display()
            )
        })?;
        Ok(Self::parse(&format!("{category}:{name}"), &text))
    }

    /// Parses lines such as `field:unsigned long i_ino; offset:16; size:8; signed:0;` (tabs
    /// between the parts).
    pub fn parse(event: &str, text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut declaration = None;
            let (mut offset, mut size) = (None, None);
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(decl) = part.strip_prefix("field:") {
                    declaration = Some(decl);
                } else if let Some(value) = part.strip_prefix("offset:") {
                    offset = value.parse::<u16>().ok();
                } else if let Some(value) = part.strip_prefix("size:") {
                    size = value.parse::<u16>().ok();
                }
            }
            if let (Some(decl), Some(offset), Some(size)) = (declaration, offset, size) {
                // The name is the last word, less any array suffix: `char comm[16]`.
                let name = decl.rsplit([' ', '*']).next().unwrap_or(decl);
                let name = name.split('[').next().unwrap_or(name);
                fields.insert(name.to_owned(), (offset, size));
            }
        }
        Self {
            event: event.to_owned(),
            fields,
        }
    }

    /// The offset of the first of `names` present with `size` bytes, if it fits in a record.
    fn offset(&self, names: &[&str], size: u16) -> Option<u16> {
        names.iter().find_map(|name| {
            let &(offset, field_size) = self.fields.get(*name)?;
            (field_size == size && usize::from(offset + size) <= PAYLOAD_LEN).then_some(offset)
        })
    }

    fn required(&self, names: &[&str], size: u16) -> Result<u16> {
        self.offset(names, size).ok_or_else(|| {
            anyhow!(
                "tracepoint {} has no {size}-byte field {} within its first {PAYLOAD_LEN} bytes; \
                 this kernel's layout is not supported",
                self.event,
                names.join(" or ")
            )
        })
    }

    /// The layout of a `filelock` event. Lease events have no range, result or pid.
    pub fn lock_fields(&self, lease: bool) -> Result<LockFields> {
        let optional = |names: &[&str], size| {
            if lease {
                Ok(self.offset(names, size).unwrap_or(ABSENT))
            } else {
                self.required(names, size)
            }
        };
        Ok(LockFields {
            ino: self.required(&["i_ino"], 8)?,
            dev: self.required(&["s_dev"], 4)?,
            owner: self.required(&["owner", "fl_owner"], 8)?,
            flags: self.required(&["flags", "fl_flags"], 4)?,
            lock_type: self.required(&["type", "fl_type"], 1)?,
            fl_pid: optional(&["pid", "fl_pid"], 4)?,
            start: optional(&["fl_start"], 8)?,
            end: optional(&["fl_end"], 8)?,
            ret: optional(&["ret"], 4)?,
            blocker: optional(&["blocker", "fl_blocker"], 8)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOCK_6_1: &str = "name: flock_lock_inode
ID: 1125
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:struct file_lock * fl;	offset:8;	size:8;	signed:0;
	field:unsigned long i_ino;	offset:16;	size:8;	signed:0;
	field:dev_t s_dev;	offset:24;	size:4;	signed:0;
	field:struct file_lock * fl_blocker;	offset:32;	size:8;	signed:0;
	field:fl_owner_t fl_owner;	offset:40;	size:8;	signed:0;
	field:unsigned int fl_pid;	offset:48;	size:4;	signed:0;
	field:unsigned int fl_flags;	offset:52;	size:4;	signed:0;
	field:unsigned char fl_type;	offset:56;	size:1;	signed:0;
	field:loff_t fl_start;	offset:64;	size:8;	signed:1;
	field:loff_t fl_end;	offset:72;	size:8;	signed:1;
	field:int ret;	offset:80;	size:4;	signed:1;

print fmt: \"fl=%p\"";

    #[test]
    fn reads_the_6_1_field_names() {
        let fields = Format::parse("filelock:flock_lock_inode", FLOCK_6_1)
            .lock_fields(false)
            .unwrap();
        assert_eq!(
            (
                fields.ino,
                fields.dev,
                fields.owner,
                fields.flags,
                fields.lock_type
            ),
            (16, 24, 40, 52, 56)
        );
        assert_eq!((fields.start, fields.end, fields.ret), (64, 72, 80));
    }

    #[test]
    fn reads_the_6_12_field_names() {
        let renamed = FLOCK_6_1
            .replace("fl_owner;", "owner;")
            .replace("fl_flags;", "flags;")
            .replace("fl_type;", "type;")
            .replace("fl_pid;", "pid;");
        let fields = Format::parse("filelock:flock_lock_inode", &renamed)
            .lock_fields(false)
            .unwrap();
        assert_eq!((fields.owner, fields.flags, fields.lock_type), (40, 52, 56));
    }

    #[test]
    fn names_the_missing_field() {
        let broken = FLOCK_6_1.replace("i_ino;", "inode_number;");
        let err = Format::parse("filelock:flock_lock_inode", &broken)
            .lock_fields(false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("i_ino"), "{err}");
    }
}
