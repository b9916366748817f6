//! `cargo xtask setup`: everything a fresh machine needs, each step idempotent and named.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{Step, arch::Arch, capture, run_step};

/// Debian packages the tests and benchmarks use, with the command that shows each is there.
const PACKAGES: &[(&str, &str)] = &[
    ("util-linux", "/usr/bin/lslocks"),
    ("e2fsprogs", "/usr/sbin/mkfs.ext4"),
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("qemu-system-arm", "/usr/bin/qemu-system-aarch64"),
    ("busybox-static", "/bin/busybox"),
    ("cpio", "/usr/bin/cpio"),
    ("bpftrace", "/usr/bin/bpftrace"),
    ("strace", "/usr/bin/strace"),
    ("jq", "/usr/bin/jq"),
    ("time", "/usr/bin/time"),
    ("binutils", "/usr/bin/readelf"),
    ("systemd", "/usr/bin/systemd-analyze"),
    ("prometheus", "/usr/bin/prometheus"),
    ("lintian", "/usr/bin/lintian"),
    // musl-gcc compiles mimalloc, the static release's allocator, against musl.
    ("musl-tools", "/usr/bin/musl-gcc"),
    // The arm64 release is cross-built: this gcc compiles mimalloc and links the binary (with
    // Rust's own musl C library); its binutils strip it.
    ("gcc-aarch64-linux-gnu", "/usr/bin/aarch64-linux-gnu-gcc"),
    // The C headers mimalloc's code includes. They are glibc's: Debian has no musl headers for a
    // foreign architecture. mimalloc only calls functions musl has too, with the kernel's
    // constants, and the static link fails on any symbol musl lacks.
    (
        "libc6-dev-arm64-cross",
        "/usr/aarch64-linux-gnu/include/stdio.h",
    ),
    // The package test checks what the arm64 binary is.
    ("file", "/usr/bin/file"),
    ("gcc", "/usr/bin/gcc"),
    ("libsqlite3-dev", "/usr/include/sqlite3.h"),
    ("linux-perf", "/usr/bin/perf"),
];

pub fn setup() -> Result<()> {
    ebpf_build_tools()?;
    for arch in Arch::ALL {
        musl_target(arch)?;
    }
    packages()?;
    tracefs()?;
    Ok(())
}

/// What building the kernel programs needs: the nightly's rust-src and bpf-linker.
pub fn ebpf_build_tools() -> Result<()> {
    rust_src()?;
    bpf_linker()
}

fn rust_src() -> Result<()> {
    let installed = capture(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .map_err(|err| {
        anyhow!("step 'nightly toolchain': {err}; aimlock's kernel programs need a nightly Rust")
    })?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        println!("==> rust-src for nightly: already installed");
        return Ok(());
    }
    run_step(
        Step("install rust-src for nightly"),
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )
}

/// The release binaries are static: Rust's musl targets bring their own libc and C runtime.
fn musl_target(arch: Arch) -> Result<()> {
    let target = arch.musl_target();
    let installed = capture(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        "stable",
    ]))
    .map_err(|err| anyhow!("step 'musl target': {err}"))?;
    if installed.lines().any(|line| line.trim() == target) {
        println!("==> Rust target {target}: already installed");
        return Ok(());
    }
    run_step(
        Step("install the Rust target for static binaries"),
        Command::new("rustup").args(["target", "add", target, "--toolchain", "stable"]),
    )
}

/// bpf-linker must use the same LLVM as the nightly rustc, so it is linked against the LLVM
/// library that ships inside the nightly toolchain (Debian has no LLVM that recent).
fn bpf_linker() -> Result<()> {
    let sysroot = PathBuf::from(
        capture(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
            .map_err(|err| anyhow!("step 'find the nightly sysroot': {err}"))?
            .trim(),
    );
    let (library, major) = nightly_llvm(&sysroot.join("lib"))?;
    let prefix = cache_dir()?.join(format!("llvm-{}", file_name(&library)));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("step 'bpf-linker': cannot create {}", prefix_lib.display()))?;
    // `libLLVM.so` for the build, and the versioned name so that bpf-linker also runs outside
    // `rustup run` (its RUNPATH points here).
    for name in ["libLLVM.so", file_name(&library).as_str()] {
        let link = prefix_lib.join(name);
        if fs::read_link(&link).ok().as_deref() != Some(library.as_path()) {
            let _ = fs::remove_file(&link);
            symlink(&library, &link)
                .with_context(|| format!("step 'bpf-linker': cannot link {}", link.display()))?;
        }
    }

    let cargo_bin = cargo_home()?.join("bin").join("bpf-linker");
    if cargo_bin.exists() && links_against(&cargo_bin, &file_name(&library)) {
        println!(
            "==> bpf-linker: already built against LLVM {major} ({})",
            file_name(&library)
        );
        return Ok(());
    }
    run_step(
        Step("build bpf-linker against the nightly's LLVM"),
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
}

/// The nightly's `libLLVM.so.<MAJOR>.<minor>-rust-...` and its major version.
fn nightly_llvm(lib: &Path) -> Result<(PathBuf, u32)> {
    let entries = fs::read_dir(lib)
        .with_context(|| format!("step 'bpf-linker': cannot list {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            let major = version
                .split('.')
                .next()
                .and_then(|major| major.parse().ok())
                .ok_or_else(|| anyhow!("step 'bpf-linker': cannot read LLVM version of {name}"))?;
            return Ok((entry.path(), major));
        }
    }
    bail!(
        "step 'bpf-linker': no libLLVM.so.<version> in {}; is the nightly toolchain complete?",
        lib.display()
    )
}

/// Whether `binary` needs exactly the shared library `soname`.
fn links_against(binary: &Path, soname: &str) -> bool {
    capture(Command::new("readelf").arg("-d").arg(binary))
        .map(|dynamic| dynamic.contains(&format!("[{soname}]")))
        .unwrap_or(false)
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        println!("==> Debian packages: all present");
        return Ok(());
    }
    run_step(
        Step("apt-get update"),
        Command::new("apt-get").args(["update", "-q"]),
    )?;
    run_step(
        Step("install Debian packages"),
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        println!("==> tracefs: mounted");
        return Ok(());
    }
    run_step(
        Step("mount tracefs"),
        Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]),
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    Ok(home()?.join(".cargo"))
}

fn cache_dir() -> Result<PathBuf> {
    if let Some(cache) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(cache).join("aimlock"));
    }
    Ok(home()?.join(".cache").join("aimlock"))
}

fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("HOME is not set"))
}
