// Builds the kernel programs (aimlock-ebpf) for bpfel-unknown-none with the nightly toolchain
// and bpf-linker, leaving their objects (`aimlock`, `hookfloor`) in OUT_DIR for
// `include_bytes_aligned!`. aimlock-tests' build script is this one, included.
//
// The objects depend on the target's architecture only, not on the profile or the libc of the
// binary that embeds them. So they are built once per architecture, under
// `target/ebpf/<arch>`, where aya-build's own cargo keeps them up to date, and copied into each
// OUT_DIR. A lock on that directory keeps build scripts that run at once (aimlock's and the
// tests') from copying an object while another build writes it.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "aimlock-ebpf")
        .ok_or_else(|| anyhow!("aimlock-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let shared = metadata
        .target_directory
        .as_std_path()
        .join("ebpf")
        .join(&arch);
    fs::create_dir_all(&shared).with_context(|| format!("create {}", shared.display()))?;
    let lock_path = shared.join(".lock");
    let lock =
        fs::File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("lock {}", lock_path.display()))?;
    // SAFETY: no other thread runs yet; aya-build reads OUT_DIR as where to build and copy to.
    unsafe { std::env::set_var("OUT_DIR", &shared) };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    for object in ebpf.targets.iter().filter(|target| target.is_bin()) {
        let (from, to) = (shared.join(&object.name), out_dir.join(&object.name));
        fs::copy(&from, &to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    }
    send_memory_functions_to_aimlock(&arch);
    Ok(())
}

/// In the static release, every call of `memcmp` and `bcmp`, and on x86_64 of `memcpy` and
/// `memmove`, goes to aimlock's own (src/libc_mem.rs), which leave only long copies to musl's.
fn send_memory_functions_to_aimlock(arch: &str) {
    let musl = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "musl");
    let binary = std::env::var("CARGO_PKG_NAME").is_ok_and(|name| name == "aimlock-user");
    if !(musl && binary) {
        return;
    }
    let copies: &[&str] = if arch == "x86_64" {
        &["memcpy", "memmove"]
    } else {
        &[]
    };
    for function in ["memcmp", "bcmp"].iter().chain(copies) {
        println!("cargo::rustc-link-arg-bin=aimlock=-Wl,--wrap={function}");
    }
}
