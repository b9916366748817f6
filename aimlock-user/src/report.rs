//! `aimlock report`: the post-mortem of a HOT incident.

use anyhow::{Result, bail};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {}

pub fn run(_args: ReportArgs) -> Result<()> {
    bail!("aimlock report is not built yet")
}
