//! `aimlock break`: release an orphaned flock or OFD lock.

use anyhow::{Result, bail};

#[derive(Debug, clap::Args)]
pub struct BreakArgs {}

pub fn run(_args: BreakArgs) -> Result<()> {
    bail!("aimlock break is not built yet")
}
