//! hookfloor: attaches empty programs to the hooks aimlock uses for lock events and exits, and
//! keeps them attached until SIGINT or SIGTERM. A workload timed under it measures the floor:
//! what the hooks alone cost, whatever a program does.
//!
//!   hookfloor btf      BTF tracepoints (tp_btf), the cheapest kind of hook
//!   hookfloor tp       classic tracepoints
//!   hookfloor record   BTF tracepoints whose programs read the clock and write a 16-byte
//!                      record per event to a ring, which a thread here drains every
//!                      millisecond: the least a tracer writing one record per event costs
//!
//! It prints `{"ready":true,"kind":..}` on stdout once every program is attached.
use std::io::Write as _;

use anyhow::{Context as _, Result, bail};
use aya::{
    Btf, Ebpf,
    maps::RingBuf,
    programs::{BtfTracePoint, TracePoint},
};
use nix::sys::signal::{SigSet, Signal};

/// (category, tracepoint) of each hook; the programs are `floor_btf_NAME` and `floor_tp_NAME`.
const HOOKS: [(&str, &str); 4] = [
    ("filelock", "flock_lock_inode"),
    ("filelock", "posix_lock_inode"),
    ("filelock", "fcntl_setlk"),
    ("sched", "sched_process_exit"),
];

fn main() -> Result<()> {
    let kind = std::env::args().nth(1).unwrap_or_default();
    // Blocked before anything is attached, so that a signal sent as soon as the ready line
    // appears is waited for rather than killing the process with the programs still attached.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("block SIGINT and SIGTERM")?;

    let mut ebpf = Ebpf::load(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/hookfloor"
    )))
    .context("load the eBPF object")?;
    match kind.as_str() {
        "btf" | "record" => {
            let prefix = if kind == "btf" { "floor" } else { "record" };
            let btf = Btf::from_sys_fs().context("read /sys/kernel/btf/vmlinux")?;
            for (_, name) in HOOKS {
                let program: &mut BtfTracePoint =
                    program(&mut ebpf, &format!("{prefix}_btf_{name}"))?.try_into()?;
                program
                    .load(name, &btf)
                    .with_context(|| format!("load tp_btf/{name}"))?;
                program
                    .attach()
                    .with_context(|| format!("attach tp_btf/{name}"))?;
            }
            if kind == "record" {
                drain_records(&mut ebpf)?;
            }
        }
        "tp" => {
            for (category, name) in HOOKS {
                let program: &mut TracePoint =
                    program(&mut ebpf, &format!("floor_tp_{name}"))?.try_into()?;
                program
                    .load()
                    .with_context(|| format!("load {category}:{name}"))?;
                program
                    .attach(category, name)
                    .with_context(|| format!("attach {category}:{name}"))?;
            }
        }
        _ => bail!("usage: hookfloor btf|tp|record"),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::json!({"ready": true, "kind": kind}))?;
    out.flush()?;
    stop.wait().context("wait for SIGINT or SIGTERM")?;
    Ok(())
}

/// Reads the minimal records out of their ring, a millisecond apart, on a thread of its own.
fn drain_records(ebpf: &mut Ebpf) -> Result<()> {
    let map = ebpf
        .take_map("FLOOR_RECORDS")
        .context("map FLOOR_RECORDS is missing from the object")?;
    let mut ring = RingBuf::try_from(map).context("FLOOR_RECORDS is not a ring buffer")?;
    std::thread::spawn(move || {
        loop {
            while let Some(record) = ring.next() {
                std::hint::black_box(&*record);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} is missing from the object"))
}
