//! `aimlock locks`: the current lock table.

use anyhow::{Result, bail};

#[derive(Debug, clap::Args)]
pub struct LocksArgs {}

pub fn run(_args: LocksArgs) -> Result<()> {
    bail!("aimlock locks is not built yet")
}
