//! aimlock's tasks: `cargo xtask setup | build | dist | run -- ARGS | test | vm-test | bench`.

mod arch;
mod bench;
mod dist;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "aimlock's build, setup and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: rust-src, the musl targets, bpf-linker, Debian
    /// packages (the aarch64 cross compiler, qemu), tracefs.
    Setup,
    /// Release build of the `aimlock` binary (target/release/aimlock), after installing what the
    /// kernel programs' build needs (rust-src, bpf-linker).
    Build,
    /// Setup, then the release under target/dist/: static binaries (musl), `aimlock` for x86_64
    /// and `aarch64/aimlock` for arm64, and the Debian packages aimlock_<version>_amd64.deb and
    /// aimlock_<version>_arm64.deb.
    Dist,
    /// Setup, build, then run `aimlock` with the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, the release (as `dist`), then every test: formatting, clippy, unit tests,
    /// integration tests of the release's binary and package as root on the running kernel,
    /// then the integration suite in VMs (as `vm-test`): x86_64's 5.10 and 6.12, and arm64's 6.1
    /// and 6.12.
    Test,
    /// Run the integration suite in qemu: on x86_64, Debian's 5.10, 6.1 and 6.12 kernels and the
    /// running kernel's version; on arm64 (emulated `virt` machine), Debian's 6.1 and 6.12.
    VmTest {
        /// Architecture of the kernels, the VM and the binaries it runs.
        #[arg(long, value_enum, default_value_t = arch::Arch::X86_64)]
        arch: arch::Arch,
        /// Kernel series to test (x86_64: 5.10, 6.1, 6.12, running; arm64: 6.1, 6.12); all of
        /// the architecture's when none is given.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Run the suite with a missing aimlock binary, so that it fails inside every VM: checks
        /// that a failure inside a VM fails vm-test.
        #[arg(long)]
        fail_inside: bool,
        /// Run only this integration test binary (repeatable), e.g. `break_lock`.
        #[arg(long)]
        only: Vec<String>,
        /// Run the chosen test binaries this many times in each boot (to catch a rare hang).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
        /// Seconds a test binary may run in the VM before a watchdog shows what its processes
        /// are doing (state, system call, kernel stack) on the console and kills them.
        #[arg(long, default_value_t = vm::BINARY_DEADLINE_SECS, value_parser = clap::value_parser!(u32).range(1..))]
        binary_deadline: u32,
        /// VMs run at once (each keeps one host core busy); the host's cores by default.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        jobs: Option<u32>,
    },
    /// Setup, build, then the benchmarks: aimlock against the floor and the tools operators
    /// would use instead; writes docs/bench.md and checks the figures against the goals.
    Bench {
        /// Rounds of each comparison (at least 3).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Run only this section.
        #[arg(long, value_enum)]
        only: Option<bench::Section>,
    },
}

/// A named step, for messages.
pub struct Step(pub &'static str);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup(),
        Task::Build => build(),
        Task::Dist => dist::dist(),
        Task::Run { args } => run(&args),
        Task::Test => test(),
        Task::VmTest {
            arch,
            kernels,
            fail_inside,
            only,
            repeat,
            binary_deadline,
            jobs,
        } => vm::vm_test(
            &vm::Options {
                arch,
                kernels,
                fail_inside,
                only,
                repeat,
                binary_deadline,
            },
            jobs.map_or_else(host_cores, |jobs| jobs as usize),
        ),
        Task::Bench { runs, only } => bench::bench(&bench::Options { runs, only }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs a step, printing its name; a failure names the step and the command.
pub fn run_step(step: Step, command: &mut Command) -> Result<()> {
    println!("==> {}", step.0);
    let status = command
        .status()
        .with_context(|| format!("step '{}': cannot run {command:?}", step.0))?;
    if !status.success() {
        bail!("step '{}' failed: {command:?} exited with {status}", step.0);
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn capture(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn build() -> Result<()> {
    setup::ebpf_build_tools()?;
    run_step(
        Step("build aimlock (release)"),
        cargo().args([
            "build",
            "--release",
            "--package",
            "aimlock-user",
            "--bin",
            "aimlock",
        ]),
    )
}

fn aimlock_binary() -> PathBuf {
    workspace_root().join("target/release/aimlock")
}

fn run(args: &[String]) -> Result<()> {
    setup::setup()?;
    build()?;
    let binary = aimlock_binary();
    println!("==> {} {}", binary.display(), args.join(" "));
    let status = Command::new(&binary)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !status.success() {
        bail!("aimlock exited with {status}");
    }
    Ok(())
}

fn test() -> Result<()> {
    setup::setup()?;
    run_step(Step("rustfmt"), cargo().args(["fmt", "--all", "--check"]))?;
    run_step(
        Step("clippy"),
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "aimlock-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The kernel programs only build for the BPF target, with nightly and core from source.
    run_step(
        Step("clippy (kernel programs)"),
        Command::new("rustup")
            .current_dir(workspace_root())
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--package",
                "aimlock-ebpf",
            ])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            .env(
                "CARGO_TARGET_DIR",
                workspace_root().join("target/ebpf-clippy"),
            ),
    )?;
    // The release is what the integration tests, the package test and the kernel matrix run:
    // the static binary that ships, not a development build.
    let releases = dist::build()?;
    run_step(
        Step("unit tests"),
        cargo().args([
            "test",
            "--workspace",
            "--exclude",
            "aimlock-tests",
            "--exclude",
            "aimlock-ebpf",
        ]),
    )?;
    if !nix_is_root() {
        return Err(anyhow!(
            "step 'integration tests': they load eBPF programs and need root; run as root"
        ));
    }
    run_step(
        Step("integration tests (real kernel, as root)"),
        cargo()
            .args([
                "test",
                "--package",
                "aimlock-tests",
                "--",
                "--test-threads=4",
            ])
            .env("AIMLOCK_BIN", &releases.x86_64.binary)
            .env("AIMLOCK_DEB", &releases.x86_64.package)
            .env("AIMLOCK_DEB_ARM64", &releases.arm64.package),
    )?;
    let all_of = |arch, kernels: &[&str]| vm::Options {
        arch,
        kernels: kernels.iter().map(|k| k.to_string()).collect(),
        fail_inside: false,
        only: Vec::new(),
        repeat: 1,
        binary_deadline: vm::BINARY_DEADLINE_SECS,
    };
    vm::matrix(
        &[
            all_of(arch::Arch::X86_64, X86_64_CI_KERNELS),
            all_of(arch::Arch::Arm64, ARM64_CI_KERNELS),
        ],
        host_cores(),
    )
}

/// The x86_64 kernels CI boots: the oldest and the newest Debian series. The running kernel is
/// left out, since the integration suite has just passed on it, natively and with the same
/// static binary; so is 6.1, which arm64 boots: its ten emulated halves had grown to 24 of
/// CI's 40 minutes. `cargo xtask vm-test` boots both.
const X86_64_CI_KERNELS: &[&str] = &["5.10", "6.12"];

/// The arm64 kernels CI boots: both that Debian 12 ships. Emulated on x86_64 the suite takes
/// about 6 minutes per kernel, the x86_64 ones about 5 each.
const ARM64_CI_KERNELS: &[&str] = &["6.1", "6.12"];

/// The host's cores: how many VMs run at once, each keeping one busy.
fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
