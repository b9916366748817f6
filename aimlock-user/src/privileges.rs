//! Least privilege: once the programs are attached and their maps open, the tracer keeps only
//! the capabilities it still uses.

use anyhow::{Context as _, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// What the trace still needs after attaching: reading other processes' /proc/PID/fd and
/// fdinfo (`CAP_SYS_PTRACE` for the access check, `CAP_DAC_READ_SEARCH` for their mode 0500
/// directories), and reading the drop counters map (`CAP_BPF`: kernels before 6.4 check it
/// on every bpf() call).
const KEPT: [Capability; 3] = [
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_BPF,
];

/// Drops every other capability from the bounding, ambient, inheritable, permitted and
/// effective sets, so that none can come back, even through exec.
pub fn drop_after_attach() -> Result<()> {
    let permitted = caps::read(None, CapSet::Permitted).context("cannot read capabilities")?;
    keep_only(
        &KEPT
            .into_iter()
            .filter(|cap| permitted.contains(cap))
            .collect(),
    )
}

/// Drops every capability of the calling thread (Linux keeps them per thread) but `CAP_BPF`,
/// for a thread that only makes bpf() calls (kernels before 6.4 check it on each).
pub fn keep_only_bpf_in_this_thread() -> Result<()> {
    let permitted = caps::read(None, CapSet::Permitted).context("cannot read capabilities")?;
    keep_only(
        &[Capability::CAP_BPF]
            .into_iter()
            .filter(|cap| permitted.contains(cap))
            .collect(),
    )
}

/// Leaves the calling thread `kept` alone, and nothing can bring any other back.
fn keep_only(kept: &CapsHashSet) -> Result<()> {
    // Dropping from the bounding set needs CAP_SETPCAP, which a service may not have been
    // given (its bounding set is then already what its unit allows).
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        let bounding = caps::read(None, CapSet::Bounding).context("cannot read capabilities")?;
        for cap in bounding.difference(kept) {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("cannot drop {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("cannot clear the ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("cannot clear the inheritable capabilities")?;
    caps::set(None, CapSet::Effective, kept).context("cannot reduce the capabilities")?;
    caps::set(None, CapSet::Permitted, kept).context("cannot reduce the capabilities")?;
    Ok(())
}
