//! The architectures aimlock is released for and proven on, and what differs between them in
//! the build: Rust's target, Debian's name, the tools that handle its binaries, where its
//! release goes.

use std::path::PathBuf;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// The build machine's own architecture.
    #[value(name = "x86_64")]
    X86_64,
    /// Cross-built: Rust's aarch64 musl target, linked and its C code compiled by Debian's
    /// aarch64 cross gcc (set in .cargo/config.toml).
    #[value(name = "arm64")]
    Arm64,
}

impl Arch {
    /// Every release architecture, the build machine's first.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// Rust's target for static binaries: musl's libc, linked in.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name for it, as a package's `Architecture:` and kernel package names give it.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The name `cargo xtask` and the console logs use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The `strip` that understands this architecture's binaries.
    pub fn strip(self) -> &'static str {
        match self {
            Arch::X86_64 => "strip",
            Arch::Arm64 => "aarch64-linux-gnu-strip",
        }
    }

    /// The release's static binary: `target/dist/aimlock` for x86_64 (where the package test,
    /// the host suite and the kernel matrix have always found it), `target/dist/aarch64/aimlock`
    /// for arm64.
    pub fn static_binary(self) -> PathBuf {
        let dist = crate::dist::dist_dir();
        match self {
            Arch::X86_64 => dist.join("aimlock"),
            Arch::Arm64 => dist.join("aarch64").join("aimlock"),
        }
    }

    /// The Debian package, beside the others in `target/dist/`.
    pub fn package_path(self) -> PathBuf {
        crate::dist::dist_dir().join(format!(
            "aimlock_{}_{}.deb",
            crate::dist::VERSION,
            self.debian()
        ))
    }

    /// Whether binaries built for it run on the build machine.
    pub fn is_host(self) -> bool {
        self == Arch::X86_64
    }
}
