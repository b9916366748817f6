//! The CPUs' batches of lock records, seen from user space.
//!
//! In a burst, each CPU's lock programs gather their records in a batch that goes to the ring
//! once full (see `aimlock_common::BATCH_BYTES`). What a burst leaves in a batch reaches the ring
//! when user space asks: the `flush_batch` program, run on that CPU through `BPF_PROG_TEST_RUN`
//! with `BPF_F_TEST_RUN_ON_CPU` (Linux 5.10), sends it. The ring's reader does so before each
//! pass over the ring, so that once it has read past where the ring's producer then was, every
//! record timestamped before is read.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::RawTracePoint,
};

use aimlock_common::names;

/// How often a flush that came while a lock program was filling the batch is tried again: the
/// program takes a microsecond or two, an interrupt in between rarely more.
const BUSY_RETRIES: usize = 1000;

/// Runs the flush program on the CPUs whose batch holds records.
pub struct BatchFlusher {
    program: OwnedFd,
    batched: PerCpuArray<MapData, u64>,
    /// A failure is said once: the reader tries again every few milliseconds.
    failure_said: bool,
}

impl BatchFlusher {
    /// Loads the flush program (never attached) and checks that this kernel runs it on a CPU.
    pub fn load(ebpf: &mut Ebpf) -> Result<Self> {
        let program: &mut RawTracePoint = ebpf
            .program_mut(names::FLUSH_BATCH)
            .ok_or_else(|| anyhow!("program {} is missing from the object", names::FLUSH_BATCH))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("the kernel refused program {}", names::FLUSH_BATCH))?;
        let program = program.fd()?.as_fd().try_clone_to_owned()?;
        let batched = PerCpuArray::try_from(
            ebpf.take_map(names::BATCHED)
                .ok_or_else(|| anyhow!("map {} missing", names::BATCHED))?,
        )?;
        let flusher = Self {
            program,
            batched,
            failure_said: false,
        };
        flusher.run_on(0).context(
            "cannot run the batch flush program on a CPU (BPF_PROG_TEST_RUN with \
             BPF_F_TEST_RUN_ON_CPU, Linux 5.10 or later)",
        )?;
        Ok(flusher)
    }

    /// Sends every CPU's batch that holds records to the ring. Returns whether all went: a CPU
    /// that kept a lock program running through every retry, or that the kernel would not run
    /// the program on, keeps its batch until the next call.
    pub fn flush(&mut self) -> bool {
        let batched = match self.batched.get(&0, 0) {
            Ok(batched) => batched,
            Err(err) => {
                self.say_once(format_args!(
                    "cannot read how many records the CPUs' batches hold: {err}"
                ));
                return false;
            }
        };
        let mut all = true;
        for (cpu, &records) in batched.iter().enumerate() {
            if records == 0 {
                continue;
            }
            let cpu = u32::try_from(cpu).expect("fewer than 2^32 CPUs");
            if let Err(err) = self.run_on(cpu) {
                self.say_once(format_args!(
                    "cannot flush CPU {cpu}'s batch of lock records: {err:#}"
                ));
                all = false;
            }
        }
        all
    }

    fn say_once(&mut self, failure: std::fmt::Arguments) {
        if !self.failure_said {
            self.failure_said = true;
            log::warn!("{failure} (said once; the records wait in the batch)");
        }
    }

    /// Runs the flush program on `cpu` until it finds the batch free.
    fn run_on(&self, cpu: u32) -> Result<()> {
        for _ in 0..BUSY_RETRIES {
            if test_run_on(&self.program, cpu)? == 0 {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        Err(anyhow!(
            "a lock program kept the batch through {BUSY_RETRIES} tries"
        ))
    }
}

/// `union bpf_attr` as `BPF_PROG_TEST_RUN` reads it (include/uapi/linux/bpf.h), up to `cpu`:
/// the kernel takes the rest as zero. aya runs a program this way only through a program it
/// owns, which the tracer's `Ebpf` keeps; the reader's thread holds a copy of its descriptor.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// Runs a raw tracepoint program once on `cpu` (with no arguments) and returns its result.
fn test_run_on(program: &OwnedFd, cpu: u32) -> Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: program.as_fd().as_raw_fd() as u32,
        flags: BPF_F_TEST_RUN_ON_CPU,
        cpu,
        ..TestRunAttr::default()
    };
    // SAFETY: bpf(2) with an attribute the size it is told, which it reads and writes for the
    // duration of the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error()).context("bpf(BPF_PROG_TEST_RUN)");
    }
    Ok(attr.retval)
}
