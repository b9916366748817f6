// Builds the kernel programs (aimlock-ebpf) for bpfel-unknown-none with the nightly toolchain
// and bpf-linker, leaving their objects (`aimlock`, `hookfloor`) in OUT_DIR for
// `include_bytes_aligned!`. aimlock-tests' build script is this one, included.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "aimlock-ebpf")
        .ok_or_else(|| anyhow!("aimlock-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
