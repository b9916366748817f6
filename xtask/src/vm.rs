//! `cargo xtask vm-test`: the integration suite on other kernels, each booted in qemu.
//!
//! For each kernel series the newest Debian kernel package offered for the architecture is
//! fetched with `apt-get download` and its `vmlinuz` cached under
//! `target/vm/kernels/<package>_<version>`. One initramfs per architecture holds busybox
//! (Debian's static build), the release's static `aimlock` (the very binary `cargo xtask dist`
//! packages, so that every release is proven on each kernel), `lockwork` and the integration
//! test binaries. On x86_64 those are this machine's glibc builds, with the shared libraries and
//! dynamic loader they need copied from this machine; on arm64 they are cross-built static
//! (musl) binaries, and busybox is Debian's arm64 build. qemu boots it under software emulation
//! (`-accel tcg`: KVM does not work on the machines this runs on; arm64 runs on qemu's `virt`
//! machine); its init mounts proc, sys, devtmpfs, tracefs, debugfs, bpffs and a tmpfs on /tmp,
//! runs the test binaries its kernel command line names and prints a verdict line on the serial
//! console. Each kernel boots twice, each boot with half of the suite ([`FIRST_HALF`]). The host
//! reads the console into `target/vm/logs/<series>-<half>.log` (x86_64) or
//! `target/vm/logs/arm64-<series>-<half>.log`, each line after the seconds since qemu started, so
//! that a slow test shows as the gap before its `ok`; no verdict line within [`SUITE_TIMEOUT`] is
//! a failure.
//!
//! `--fail-inside` runs the suite with `AIMLOCK_BIN` pointing at a missing file, so that every
//! tracer test fails inside the VM: it checks that such a failure makes vm-test fail.

use std::{
    cmp::Reverse,
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, BufWriter, LineWriter, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::{Step, arch::Arch, capture, run_step};

/// Integration tests that need tools the VM does not have (util-linux's `lslocks` and
/// `flock(1)`, python), or that try no kernel and would only take the emulated CPUs' time, as
/// (test binary, test name, why). They run on the host only; the VM skips them by exact name
/// and vm-test lists them. The VM has busybox's applets (`nsenter`, `cat`, `mount`, ...), so
/// tests using only those belong in the VM.
const HOST_ONLY_TESTS: &[(&str, &str, &str)] = &[
    (
        "service",
        "the_systemd_unit_passes_systemd_analyze_verify",
        "needs systemd-analyze and the source tree's packaging/",
    ),
    (
        "prometheus",
        "prometheus_reads_the_scenarios_histograms_and_orphan_gauge",
        "needs Debian's prometheus server",
    ),
    (
        "service",
        "a_real_journal_keeps_every_line_and_its_host",
        "needs systemd-journald and journalctl",
    ),
    (
        "lineage",
        "a_background_command_of_flock_is_born_holding_the_lock_and_its_lineage_says_how",
        "needs util-linux's flock(1) and its -c (busybox's flock does not run the command so)",
    ),
    (
        "lineage",
        "a_lock_orphaned_before_the_tracer_started_has_an_unknown_lineage_that_says_why",
        "needs util-linux's flock(1) and its -c (busybox's flock does not run the command so)",
    ),
    (
        "report",
        "a_journal_export_tells_what_the_log_of_the_same_run_tells",
        "needs systemd-journald and journalctl",
    ),
    (
        "report",
        "two_files_that_shared_an_inode_number_are_two_timelines",
        "needs a file system that hands freed inode numbers out again (the VM's tmpfs never does)",
    ),
    (
        "report",
        "lines_beyond_what_memory_keeps_go_to_tmpdir_and_a_tmpdir_that_takes_none_fails_in_one_line",
        "tries no kernel: a report of 1.1 million lines, half a minute on an emulated CPU",
    ),
];

/// The test binaries of a kernel's first boot; its second runs the others. Five kernels' whole
/// suites on two host cores left one VM running alone at the end (about 500 s); ten halves of
/// 180-300 s each share the cores evenly. These are the tracer's own suites, the rest those of
/// its subcommands and sinks.
const FIRST_HALF: &[&str] = &["trace", "kernel_truth", "lineage"];

/// Test binaries of what the tracer does with its records once read (its sinks: files,
/// rotation, journald, syslog, metrics, OTLP) and of `aimlock report`: code no kernel changes.
/// They run on the newest kernel asked of each architecture (and natively), not on every one:
/// about 140 s of each emulated boot's suite.
const ON_THE_NEWEST_KERNEL_ONLY: &[&str] = &["otlp", "report", "service"];

/// Integration test binaries that run on the host only, with what they need: the VM leaves them
/// out whole.
const HOST_ONLY_SUITES: &[(&str, &str)] = &[(
    "package",
    "the Debian package, dpkg, lintian and systemd-analyze",
)];

/// The series `--kernel` accepts for an architecture; all of them run when none is given.
/// Debian 12 ships arm64 kernels of 6.1 and 6.12.
fn series_of(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["5.10", "6.1", "6.12", "running"],
        Arch::Arm64 => &["6.1", "6.12"],
    }
}

/// Debian 11 still ships 5.10; its point-release and security suites, through a private apt
/// configuration so the system's sources stay untouched.
const BULLSEYE_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
";

/// Debian 12 with its updates and security suites, for arm64 kernels and busybox, through a
/// private apt configuration: the system's own lists are amd64 only.
const BOOKWORM_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";

/// Debian 13's backports carry the newest Debian kernels (6.16 to 7.x), the closest Debian has
/// to a recent running kernel.
const TRIXIE_BACKPORTS_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// Boot plus the whole suite under software emulation; well above what one kernel takes (arm64,
/// whose code qemu translates to x86_64, is the slower: up to 8 min against 4.5 for x86_64).
const SUITE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The kernel command line's parameter that names the test binaries a boot runs. Its dot makes
/// the kernel take it for a module's parameter: it is left to /proc/cmdline, not given to init.
const TESTS_PARAMETER: &str = "aimlock.tests=";

/// Marker lines the VM's init prints; the host looks for them on the serial console.
const INIT_MARKER: &str = "AIMLOCK-VM-INIT";
const RELEASE_MARKER: &str = "AIMLOCK-VM-KERNEL: ";
const VERDICT_MARKER: &str = "AIMLOCK-VM-VERDICT: ";

/// What `cargo xtask vm-test` was asked for.
pub struct Options {
    pub arch: Arch,
    /// Series from `--kernel`; every one the architecture has when empty.
    pub kernels: Vec<String>,
    pub fail_inside: bool,
    /// Test binaries to run (`--only`); every one when empty.
    pub only: Vec<String>,
    /// How many times the VM runs the chosen binaries in one boot (`--repeat`).
    pub repeat: u32,
    /// Seconds a test binary may run before the watchdog takes it for hung (`--binary-deadline`).
    pub binary_deadline: u32,
}

/// `cargo xtask vm-test`: setup, the release (`cargo xtask dist`), then the kernel matrix.
pub fn vm_test(options: &Options, jobs: usize) -> Result<()> {
    crate::setup::setup()?;
    crate::dist::build()?;
    matrix(std::slice::from_ref(options), jobs)
}

/// Boots every requested kernel with the integration suite and the release's static binary
/// (built before), `jobs` VMs at a time, and prints a pass/fail line per kernel.
///
/// Each VM has one emulated CPU and keeps one host core busy, so as many run at once as the
/// host has cores: the slowest (arm64, emulated instruction by instruction) start first.
pub fn matrix(runs: &[Options], jobs: usize) -> Result<()> {
    let mut boots = Vec::new();
    for options in runs {
        let arch = options.arch;
        let series = requested_series(arch, &options.kernels)?;
        let suite = build_suite(arch)?.only(&options.only)?;
        let initramfs = write_initramfs(arch, &suite, options)?;
        let halves = suite.halves();
        let offered = series_of(arch);
        let newest = series
            .iter()
            .copied()
            .max_by_key(|name| offered.iter().position(|offer| offer == name));
        for name in series {
            // Fetched one after the other: the package lists and downloads share a cache.
            let kernel = Arc::new(fetch_kernel(arch, name));
            for (index, tests) in halves.iter().enumerate() {
                let mut tests = tests.clone();
                if Some(name) != newest {
                    tests.retain(|test| !ON_THE_NEWEST_KERNEL_ONLY.contains(&test.as_str()));
                }
                if tests.is_empty() {
                    continue;
                }
                let run = Run {
                    arch,
                    series: name,
                    half: (halves.len() > 1).then_some(index + 1),
                };
                boots.push((run, Arc::clone(&kernel), initramfs.clone(), tests));
            }
        }
    }
    boots.sort_by_key(|(run, ..)| run.arch == Arch::X86_64);
    let next = Mutex::new(0..boots.len());
    let verdicts: Mutex<Vec<Option<(String, bool)>>> = Mutex::new(vec![None; boots.len()]);
    let workers = jobs.clamp(1, boots.len().max(1));
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    // Taken in a statement of its own: the lock is let go before the boot.
                    let taken = next.lock().unwrap().next();
                    let Some(index) = taken else { break };
                    let (run, kernel, initramfs, tests) = &boots[index];
                    let verdict = match kernel.as_ref() {
                        Ok(kernel) => {
                            boot_again_after_a_foreign_oops(run, kernel, initramfs, tests)
                        }
                        Err(err) => Err(anyhow!("{err:#}")),
                    };
                    let line = match &verdict {
                        Ok(vm) => vm.summary(run),
                        Err(err) => format!("vm-test {}: FAIL: {err:#}", run.label()),
                    };
                    println!("{line}");
                    let passed = verdict.is_ok_and(|run| run.passed);
                    verdicts.lock().unwrap()[index] = Some((line, passed));
                }
            });
        }
    });
    println!("==> kernel matrix");
    let mut failed = Vec::new();
    for ((run, ..), verdict) in boots.iter().zip(verdicts.into_inner().unwrap()) {
        let (line, passed) = verdict.expect("every boot has a verdict");
        println!("{line}");
        if !passed {
            failed.push(run.label());
        }
    }
    if !failed.is_empty() {
        bail!("step 'vm-test': the suite failed on {}", failed.join(", "));
    }
    Ok(())
}

fn requested_series(arch: Arch, kernels: &[String]) -> Result<Vec<&'static str>> {
    let offered = series_of(arch);
    if kernels.is_empty() {
        return Ok(offered.to_vec());
    }
    kernels
        .iter()
        .map(|kernel| {
            offered
                .iter()
                .copied()
                .find(|series| series == kernel)
                .ok_or_else(|| {
                    anyhow!(
                        "unknown kernel '{kernel}' for {}: choose among {offered:?}",
                        arch.name()
                    )
                })
        })
        .collect()
}

/// One boot: a kernel, and which half of the suite it runs (None: the whole of what was asked).
struct Run {
    arch: Arch,
    series: &'static str,
    half: Option<usize>,
}

impl Run {
    /// How it is named in pass lines and log files: the series alone on x86_64, as it always
    /// was, then the half.
    fn label(&self) -> String {
        let kernel = match self.arch {
            Arch::X86_64 => self.series.to_string(),
            Arch::Arm64 => format!("{}-{}", self.arch.name(), self.series),
        };
        match self.half {
            Some(half) => format!("{kernel}-{half}"),
            None => kernel,
        }
    }
}

fn vm_dir() -> PathBuf {
    crate::workspace_root().join("target/vm")
}

/// A file taken from a package (a kernel image, busybox) and where it came from.
struct Fetched {
    path: PathBuf,
    origin: String,
}

/// Where a series' packages come from.
enum Archive {
    /// This system's apt sources and lists.
    System,
    /// A private apt configuration: its own sources, lists and cache under
    /// `target/vm/apt/<name>`.
    Private {
        name: &'static str,
        sources: &'static str,
        arch: Arch,
    },
}

impl Archive {
    fn apt(&self, tool: &str) -> Result<Command> {
        let mut command = Command::new(tool);
        command.arg("-q");
        if let Archive::Private {
            name,
            sources,
            arch,
        } = self
        {
            let dir = vm_dir().join("apt").join(name);
            for partial in ["lists/partial", "cache/archives/partial"] {
                fs::create_dir_all(dir.join(partial))
                    .with_context(|| format!("cannot create {}", dir.join(partial).display()))?;
            }
            let sources_list = dir.join("sources.list");
            fs::write(&sources_list, sources)
                .with_context(|| format!("cannot write {}", sources_list.display()))?;
            command
                .arg("-o")
                .arg(format!("Dir::Etc::sourcelist={}", sources_list.display()))
                .args(["-o", "Dir::Etc::sourceparts=-"])
                .arg("-o")
                .arg(format!("Dir::State::Lists={}", dir.join("lists").display()))
                .arg("-o")
                .arg(format!("Dir::Cache={}", dir.join("cache").display()))
                .arg("-o")
                .arg(format!("APT::Architecture={}", arch.debian()))
                .arg("-o")
                .arg(format!("APT::Architectures={}", arch.debian()));
        }
        Ok(command)
    }

    fn update(&self) -> Result<()> {
        run_step(
            Step("apt-get update (kernel package lists)"),
            self.apt("apt-get")?.arg("update"),
        )
    }
}

/// Which packages make up a series, and which of them to boot.
struct PackageQuery {
    archive: Archive,
    /// An anchored regular expression over package names, as `apt-cache search` takes it.
    names: String,
    /// Fetched (major, minor) to get closest to; the newest package when `None`.
    closest_to: Option<(u64, u64)>,
}

struct Package {
    name: String,
    version: String,
}

fn fetch_kernel(arch: Arch, series: &str) -> Result<Fetched> {
    let query = match (arch, series) {
        (Arch::Arm64, "6.1") => PackageQuery {
            archive: ARM64_ARCHIVE,
            names: r"^linux-image-6\.1\.0-[0-9]+-arm64$".into(),
            closest_to: None,
        },
        (Arch::Arm64, "6.12") => PackageQuery {
            archive: ARM64_ARCHIVE,
            names: r"^linux-image-6\.12\.[0-9]+\+deb12-arm64-unsigned$".into(),
            closest_to: None,
        },
        (Arch::Arm64, other) => bail!("no arm64 kernel package query for series '{other}'"),
        (Arch::X86_64, "5.10") => PackageQuery {
            archive: Archive::Private {
                name: "bullseye",
                sources: BULLSEYE_SOURCES,
                arch: Arch::X86_64,
            },
            names: r"^linux-image-5\.10\.0-[0-9]+-amd64$".into(),
            closest_to: None,
        },
        (Arch::X86_64, "6.1") => PackageQuery {
            archive: Archive::System,
            names: r"^linux-image-6\.1\.0-[0-9]+-amd64$".into(),
            closest_to: None,
        },
        (Arch::X86_64, "6.12") => PackageQuery {
            archive: Archive::System,
            names: r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$".into(),
            closest_to: None,
        },
        (Arch::X86_64, "running") => return running_kernel(),
        (Arch::X86_64, other) => bail!("no kernel package query for series '{other}'"),
    };
    fetch_package(&query, &KERNEL_IMAGE)
}

/// Debian 12's arm64 packages.
const ARM64_ARCHIVE: Archive = Archive::Private {
    name: "bookworm-arm64",
    sources: BOOKWORM_SOURCES,
    arch: Arch::Arm64,
};

/// The one file vm-test takes from a package, and the name it is cached under.
struct Member {
    /// A `tar --wildcards` pattern matching exactly one file of the package.
    pattern: &'static str,
    cached_as: &'static str,
}

const KERNEL_IMAGE: Member = Member {
    pattern: "./boot/vmlinuz-*",
    cached_as: "vmlinuz",
};

const BUSYBOX: Member = Member {
    pattern: "./bin/busybox",
    cached_as: "busybox",
};

/// The busybox the VM's init runs: this machine's (Debian's static build) on x86_64, Debian's
/// arm64 `busybox-static` for arm64, fetched and cached as kernels are.
fn busybox(arch: Arch) -> Result<PathBuf> {
    match arch {
        Arch::X86_64 => Ok(PathBuf::from("/bin/busybox")),
        Arch::Arm64 => {
            let query = PackageQuery {
                archive: ARM64_ARCHIVE,
                names: "^busybox-static$".into(),
                closest_to: None,
            };
            Ok(fetch_package(&query, &BUSYBOX)?.path)
        }
    }
}

/// The running kernel itself when its image is in /boot. Otherwise the running kernel is not a
/// Debian build (a cloud or custom kernel): the closest Debian kernel stands in for it, taken
/// from Debian 13's backports, which carry the newest Debian kernel series; the newest package
/// of the running major.minor when offered, else of the nearest series.
fn running_kernel() -> Result<Fetched> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read the running kernel's release")?
        .trim()
        .to_string();
    let image = Path::new("/boot").join(format!("vmlinuz-{release}"));
    if image.exists() {
        return Ok(Fetched {
            origin: format!("the running kernel's {}", image.display()),
            path: image,
        });
    }
    let numbers = version_numbers(&release);
    let [major, minor, ..] = numbers[..] else {
        bail!("cannot read a major.minor version from the running kernel's release '{release}'");
    };
    let mut kernel = fetch_package(
        &PackageQuery {
            archive: Archive::Private {
                name: "trixie-backports",
                sources: TRIXIE_BACKPORTS_SOURCES,
                arch: Arch::X86_64,
            },
            names: r"^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb13-amd64$".into(),
            closest_to: Some((major, minor)),
        },
        &KERNEL_IMAGE,
    )?;
    kernel.origin = format!("{} standing in for the running {release}", kernel.origin);
    Ok(kernel)
}

/// The cached `member` of the query's package, downloaded and unpacked on first use. Stale or
/// empty package lists are refreshed once when nothing matches or the download fails.
fn fetch_package(query: &PackageQuery, member: &Member) -> Result<Fetched> {
    let package = match pick_package(query)? {
        Some(package) => package,
        None => {
            query.archive.update()?;
            pick_listed_package(query)?
        }
    };
    cached_member(query, &package, member).or_else(|err| {
        eprintln!("xtask: {err:#}; refreshing the package lists and retrying");
        query.archive.update()?;
        cached_member(query, &pick_listed_package(query)?, member)
    })
}

fn cached_member(query: &PackageQuery, package: &Package, member: &Member) -> Result<Fetched> {
    let dir = vm_dir().join("kernels").join(format!(
        "{}_{}",
        package.name,
        package.version.replace(':', "%3a")
    ));
    if !dir.join(member.cached_as).exists() {
        download(query, package, member, &dir)?;
    }
    Ok(Fetched {
        path: dir.join(member.cached_as),
        origin: format!("{} {}", package.name, package.version),
    })
}

fn pick_listed_package(query: &PackageQuery) -> Result<Package> {
    pick_package(query)?
        .ok_or_else(|| anyhow!("no package matches {} in the apt lists", query.names))
}

fn pick_package(query: &PackageQuery) -> Result<Option<Package>> {
    let found =
        capture(
            query
                .archive
                .apt("apt-cache")?
                .args(["search", "--names-only", &query.names]),
        )
        .context("step 'find kernel packages'")?;
    let names = found
        .lines()
        .filter_map(|line| line.split_whitespace().next());
    let best = match query.closest_to {
        None => names.max_by_key(|name| version_numbers(name)),
        Some((major, minor)) => names.min_by_key(|name| {
            let numbers = version_numbers(name);
            let series =
                numbers.first().copied().unwrap_or(0) * 1000 + numbers.get(1).copied().unwrap_or(0);
            (series.abs_diff(major * 1000 + minor), Reverse(numbers))
        }),
    };
    let Some(name) = best else { return Ok(None) };
    let shown = capture(
        query
            .archive
            .apt("apt-cache")?
            .args(["show", "--no-all-versions", name]),
    )
    .with_context(|| format!("step 'find kernel packages': cannot show {name}"))?;
    let version = shown
        .lines()
        .find_map(|line| line.strip_prefix("Version: "))
        .ok_or_else(|| anyhow!("apt-cache show {name} gives no version"))?;
    Ok(Some(Package {
        name: name.to_string(),
        version: version.trim().to_string(),
    }))
}

/// The numbers in a package name or release, in order, for comparing versions.
fn version_numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|digits| digits.parse().ok())
        .collect()
}

/// Downloads the package and keeps only its `member`, as `<dir>/<member.cached_as>`.
fn download(query: &PackageQuery, package: &Package, member: &Member, dir: &Path) -> Result<()> {
    let staging = vm_dir().join("kernels").join("download");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    run_step(
        Step("download the package"),
        query
            .archive
            .apt("apt-get")?
            // The staging dir is root's; apt's `_apt` download user could not write there.
            .args(["-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{}={}", package.name, package.version))
            .current_dir(&staging),
    )?;
    let deb = only_entry(&staging, ".deb")?;
    let step = "unpack the package";
    let mut unpack = Command::new("dpkg-deb");
    unpack
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped());
    let mut unpacking = unpack
        .spawn()
        .with_context(|| format!("step '{step}': cannot run {unpack:?}"))?;
    let mut extract = Command::new("tar");
    extract
        .arg("-x")
        .arg("-C")
        .arg(&staging)
        .args(["--wildcards", member.pattern])
        .stdin(unpacking.stdout.take().expect("piped stdout"));
    let extracted = extract
        .status()
        .with_context(|| format!("step '{step}': cannot run {extract:?}"))?;
    let unpacked = unpacking.wait()?;
    if !unpacked.success() || !extracted.success() {
        bail!("step '{step}': {unpack:?} | {extract:?} failed ({unpacked}, {extracted})");
    }
    let unpacked_dir = staging.join(
        Path::new(member.pattern)
            .parent()
            .expect("a member pattern names a file in a directory"),
    );
    let image = only_entry(&unpacked_dir, "")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::rename(&image, dir.join(member.cached_as))
        .with_context(|| format!("cannot move {} into {}", image.display(), dir.display()))?;
    fs::remove_dir_all(&staging).with_context(|| format!("cannot remove {}", staging.display()))
}

fn only_entry(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    match &entries[..] {
        [only] => Ok(only.clone()),
        _ => bail!(
            "expected one '*{suffix}' in {}, found {entries:?}",
            dir.display()
        ),
    }
}

/// The integration test binaries (by test target name) and the `lockwork` workload.
struct Suite {
    tests: Vec<(String, PathBuf)>,
    lockwork: PathBuf,
}

impl Suite {
    /// The suite with only the named test binaries; all of them when `names` is empty.
    fn only(mut self, names: &[String]) -> Result<Self> {
        if let Some(unknown) = names
            .iter()
            .find(|name| !self.tests.iter().any(|(test, _)| test == *name))
        {
            let known: Vec<&str> = self.tests.iter().map(|(name, _)| name.as_str()).collect();
            bail!("no test binary '{unknown}' in the VM's suite: choose among {known:?}");
        }
        if !names.is_empty() {
            self.tests.retain(|(name, _)| names.contains(name));
        }
        Ok(self)
    }

    /// The test binaries of each boot: [`FIRST_HALF`] and the others, or one boot when either
    /// is empty.
    fn halves(&self) -> Vec<Vec<String>> {
        let (first, second): (Vec<String>, Vec<String>) = self
            .tests
            .iter()
            .map(|(name, _)| name.clone())
            .partition(|name| FIRST_HALF.contains(&name.as_str()));
        if first.is_empty() || second.is_empty() {
            vec![[first, second].concat()]
        } else {
            vec![first, second]
        }
    }
}

/// On x86_64 the host's own builds; on arm64 static builds for Rust's aarch64 musl target, so
/// that the VM needs no shared library from a foreign architecture.
fn build_suite(arch: Arch) -> Result<Suite> {
    let step = "build the integration tests";
    println!("==> {step} ({})", arch.name());
    let mut command = crate::cargo();
    command
        .args([
            "test",
            "--package",
            "aimlock-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit());
    if !arch.is_host() {
        command.args(["--target", arch.musl_target()]);
    }
    let output = command
        .output()
        .with_context(|| format!("step '{step}': cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "step '{step}' failed: {command:?} exited with {}",
            output.status
        );
    }
    let mut tests = Vec::new();
    let mut lockwork = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let name = message["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let is_kind = |kind: &str| {
            message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == kind))
        };
        let is_test = message["profile"]["test"] == true;
        let host_only = HOST_ONLY_SUITES.iter().any(|(suite, _)| *suite == name);
        if is_test && is_kind("test") && !host_only {
            tests.push((name, PathBuf::from(executable)));
        } else if !is_test && is_kind("bin") && name == "lockwork" {
            lockwork = Some(PathBuf::from(executable));
        }
    }
    tests.sort();
    if tests.is_empty() {
        bail!("step '{step}': {command:?} reported no integration test binary");
    }
    let lockwork = lockwork
        .ok_or_else(|| anyhow!("step '{step}': {command:?} reported no lockwork binary"))?;
    Ok(Suite { tests, lockwork })
}

/// Where the binaries go inside the VM.
const VM_AIMLOCK: &str = "/aimlock/bin/aimlock";
const VM_LOCKWORK: &str = "/aimlock/bin/lockwork";
const VM_TESTS: &str = "/aimlock/tests";

fn write_initramfs(arch: Arch, suite: &Suite, options: &Options) -> Result<PathBuf> {
    let step = "write the VM's initramfs";
    println!("==> {step} ({})", arch.name());
    for (binary, test, why) in HOST_ONLY_TESTS {
        println!("    not in the VM ({why}): {binary}::{test}");
    }
    for (binary, tool) in HOST_ONLY_SUITES {
        println!("    not in the VM (needs {tool}): {binary}");
    }
    let mut binaries = vec![(suite.lockwork.as_path(), VM_LOCKWORK.to_string())];
    for (name, path) in &suite.tests {
        binaries.push((path.as_path(), format!("{VM_TESTS}/{name}")));
    }
    let libraries = if arch.is_host() {
        shared_libraries(binaries.iter().map(|(path, _)| *path))
            .with_context(|| format!("step '{step}'"))?
    } else {
        for (path, _) in &binaries {
            check_static(path).with_context(|| format!("step '{step}'"))?;
        }
        BTreeSet::new()
    };
    // Static: it needs no library, and `ldd` would refuse it.
    let aimlock = arch.static_binary();
    if !aimlock.exists() {
        bail!(
            "step '{step}': {} is missing: `cargo xtask dist` builds it",
            aimlock.display()
        );
    }
    binaries.push((aimlock.as_path(), VM_AIMLOCK.to_string()));

    let path = vm_dir().join(format!("initramfs-{}.cpio", arch.name()));
    fs::create_dir_all(vm_dir())
        .with_context(|| format!("cannot create {}", vm_dir().display()))?;
    let file =
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut archive = Cpio::new(BufWriter::new(file));
    let script = init_script(suite, options);
    archive.file("/init", 0o755, script.as_bytes())?;
    archive.char_device("/dev/console", 5, 1)?;
    for dir in ["/proc", "/sys", "/tmp", "/root"] {
        archive.dir(dir)?;
    }
    let busybox = busybox(arch).with_context(|| format!("step '{step}': busybox"))?;
    let sources = std::iter::once((busybox.as_path(), "/bin/busybox".to_string()))
        .chain(binaries)
        .chain(
            libraries
                .iter()
                .map(|lib| (lib.as_path(), lib.display().to_string())),
        );
    for (source, target) in sources {
        let bytes = fs::read(source)
            .with_context(|| format!("step '{step}': cannot read {}", source.display()))?;
        archive.file(&target, 0o755, &bytes)?;
    }
    archive
        .finish()
        .with_context(|| format!("step '{step}': cannot write {}", path.display()))?;
    Ok(path)
}

/// A cross-built binary must be static: the VM has no loader or library for it.
fn check_static(binary: &Path) -> Result<()> {
    let headers = capture(
        Command::new("readelf")
            .args(["--program-headers", "--wide"])
            .arg(binary),
    )?;
    if headers.contains("INTERP") {
        bail!("{} asks for a dynamic loader", binary.display());
    }
    Ok(())
}

/// The shared libraries and dynamic loader the binaries need, as `ldd` lists them.
fn shared_libraries<'a>(binaries: impl Iterator<Item = &'a Path>) -> Result<BTreeSet<PathBuf>> {
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        let listed = capture(Command::new("ldd").arg(binary))?;
        for line in listed.lines() {
            let path = match line.split_once("=> ") {
                Some((_, resolved)) => resolved,
                None => line.trim_start(),
            };
            if let Some(path) = path
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libraries.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libraries)
}

/// How long one test binary may run in the VM, by default, before its watchdog shows what its
/// processes are doing and kills them: the slowest binary (`trace`) takes 130-290 s under
/// emulation, and a hang must fail that binary with evidence rather than run into
/// [`SUITE_TIMEOUT`].
pub const BINARY_DEADLINE_SECS: u32 = 600;

/// The VM's /init: mounts what the tracer and the tests need, runs every test binary, prints
/// the verdict and powers off. Tests run one at a time: emulation is slow enough that
/// concurrent tests stretch the tracer's start-up and the workloads' timing beyond what the
/// tests allow (the host run covers concurrency). Each binary runs in a session of its own
/// under a watchdog: past its deadline ([`BINARY_DEADLINE_SECS`] by default) it prints every user task's state, wait
/// channel, system call and kernel stack (twice, to tell a spin from a sleep), then kills the
/// session, and the binary fails, even if it ends meanwhile.
fn init_script(suite: &Suite, options: &Options) -> String {
    let aimlock = if options.fail_inside {
        "/aimlock/bin/missing-aimlock"
    } else {
        VM_AIMLOCK
    };
    let deadline = options.binary_deadline;
    let mut script = format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/aimlock/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
verdict=pass
mount_or_fail() {{
    mkdir -p "$3"
    mount -t "$1" "$2" "$3" || {{ echo "vm init: cannot mount $1 on $3"; verdict=fail; }}
}}
mount_or_fail proc proc /proc
mount_or_fail sysfs sysfs /sys
mount_or_fail devtmpfs devtmpfs /dev
mount_or_fail tmpfs tmpfs /tmp
mount_or_fail tracefs tracefs /sys/kernel/tracing
mount_or_fail debugfs debugfs /sys/kernel/debug
mount_or_fail bpf bpffs /sys/fs/bpf
# The metrics tests talk to 127.0.0.1.
ip link set lo up || {{ echo "vm init: cannot bring up lo"; verdict=fail; }}
# 5.10 charges BPF maps to RLIMIT_MEMLOCK.
ulimit -l unlimited
# Every user task (kernel threads have no exe): CPU ticks so far (user, system), state, wait
# channel, system call (number, arguments, stack pointer, pc) and kernel stack.
show_tasks() {{
    for task in /proc/[0-9]*/task/[0-9]*; do
        proc=${{task%/task/*}}
        [ -e "$proc/exe" ] || continue
        echo "vm init: pid ${{proc#/proc/}} tid ${{task##*/}} ($(cat $task/comm))" \
            "ticks $(cut -d' ' -f14,15 $task/stat) $(grep State: $task/status)" \
            "wchan $(cat $task/wchan) syscall $(cat $task/syscall)"
        sed 's/^/vm init:     /' $task/stack
    done
}}
# The watchdog: marks the binary as past its deadline (it fails even if it ends meanwhile),
# shows every task, then kills the binary's session.
hung() {{
    : > /tmp/vm-init-hung-$2
    echo "vm init: $1 still running after {deadline} s; its tasks, twice 2 s apart:"
    show_tasks
    sleep 2
    show_tasks
    echo "vm init: killing $1"
    kill -s KILL -$2
}}
run_binary() {{
    name=$1
    shift
    echo "vm init: running $name"
    setsid "$@" &
    pid=$!
    ( sleep {deadline}; hung "$name" $pid ) &
    watchdog=$!
    wait $pid || verdict=fail
    kill $watchdog 2>/dev/null
    if [ -e /tmp/vm-init-hung-$pid ]; then
        echo "vm init: $name failed: it ran past its deadline of {deadline} s"
        rm /tmp/vm-init-hung-$pid
        verdict=fail
    fi
}}
# The test binaries this boot runs, from the kernel's command line ({TESTS_PARAMETER}a,b).
tests=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^{TESTS_PARAMETER}//p')
wanted() {{
    case ",$tests," in *",$1,"*) return 0 ;; esac
    return 1
}}
echo "{INIT_MARKER}"
echo "{RELEASE_MARKER}$(uname -r)"
# Burst tests take smaller bursts under software emulation (aimlock_tests::burst_size).
export AIMLOCK_BIN={aimlock} LOCKWORK_BIN={VM_LOCKWORK} RUST_BACKTRACE=1 AIMLOCK_TEST_EMULATED=1
"#
    );
    for _ in 0..options.repeat {
        for (name, _) in &suite.tests {
            let skips: String = HOST_ONLY_TESTS
                .iter()
                .filter(|(binary, _, _)| binary == name)
                .map(|(_, test, _)| format!(" --skip {test}"))
                .collect();
            let exact = if skips.is_empty() { "" } else { " --exact" };
            script.push_str(&format!(
                "wanted {name} && run_binary {name} {VM_TESTS}/{name} --test-threads=1{exact}{skips}\n"
            ));
        }
    }
    script.push_str(&format!("echo \"{VERDICT_MARKER}$verdict\"\npoweroff -f\n"));
    script
}

/// A newc (SVR4) cpio archive, the format the kernel unpacks as initramfs. Written here so
/// that files are root-owned and /dev/console exists without needing root or fakeroot.
struct Cpio<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        self.parents(path)?;
        if self.dirs.insert(path.to_string()) {
            self.entry(path, 0o040_755, (0, 0), &[])?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> Result<()> {
        self.parents(path)?;
        self.entry(path, 0o100_000 | permissions, (0, 0), data)
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) -> Result<()> {
        self.parents(path)?;
        self.entry(path, 0o020_600, (major, minor), &[])
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        match Path::new(path).parent().and_then(Path::to_str) {
            Some(parent) if parent != "/" => self.dir(parent),
            _ => Ok(()),
        }
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        (major, minor): (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let name = path.trim_start_matches('/');
        let inode = self.next_inode;
        self.next_inode += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let header = format!(
            "070701{inode:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{:08X}{:08X}{:08X}{major:08X}{minor:08X}{:08X}{:08X}",
            0,
            0,
            0,
            data.len(),
            0,
            0,
            name.len() + 1,
            0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let padding = (4 - self.written % 4) % 4;
        self.write(&[0; 3][..padding as usize])
    }

    fn finish(mut self) -> Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(())
    }
}

/// One kernel's boot and suite, as read from its serial console.
struct VmRun {
    passed: bool,
    origin: String,
    release: Option<String>,
    boot: Option<Duration>,
    suite: Option<Duration>,
    log: PathBuf,
    problem: Option<String>,
    /// Where the kernel died, if it oopsed before the verdict.
    oops: Option<Oops>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Oops {
    InABpfProgram,
    ElsewhereInTheKernel,
}

impl VmRun {
    fn summary(&self, run: &Run) -> String {
        let seconds = |duration: Option<Duration>| {
            duration.map_or("-".to_string(), |d| format!("{:.0} s", d.as_secs_f64()))
        };
        let verdict = if self.passed { "pass" } else { "FAIL" };
        let mut line = format!(
            "vm-test {}: {verdict}: booted {} ({}); boot {}, suite {}",
            run.label(),
            self.release.as_deref().unwrap_or("?"),
            self.origin,
            seconds(self.boot),
            seconds(self.suite),
        );
        if let Some(problem) = &self.problem {
            line.push_str(&format!("; {problem}"));
        }
        if !self.passed {
            line.push_str(&format!("; console log: {}", self.log.display()));
        }
        line
    }
}

/// Boots `kernel` once more if it died in an oops that names no BPF program: the emulated
/// machine, not aimlock, is then the likelier cause (qemu's TCG has been seen to corrupt a
/// guest's registers mid-suite). The first boot's log is kept and named in the verdict line, and
/// an oops in a BPF program, or a second one of any kind, fails the run.
fn boot_again_after_a_foreign_oops(
    run: &Run,
    kernel: &Fetched,
    initramfs: &Path,
    tests: &[String],
) -> Result<VmRun> {
    let first = boot(run, kernel, initramfs, tests)?;
    if first.oops != Some(Oops::ElsewhereInTheKernel) {
        return Ok(first);
    }
    let kept = first.log.with_extension("oops.log");
    fs::rename(&first.log, &kept)
        .with_context(|| format!("cannot keep {} as {}", first.log.display(), kept.display()))?;
    println!(
        "vm-test {}: the kernel died in an oops that names no BPF program (log: {}): booting it \
         once more",
        run.label(),
        kept.display()
    );
    let mut second = boot(run, kernel, initramfs, tests)?;
    let earlier = format!(
        "the first boot's kernel died in an oops that names no BPF program: {}",
        kept.display()
    );
    second.problem = Some(match second.problem.take() {
        Some(problem) => format!("{problem}; {earlier}"),
        None => earlier,
    });
    Ok(second)
}

/// Boots `kernel` with the initramfs, whose init runs the test binaries `tests`.
fn boot(run: &Run, kernel: &Fetched, initramfs: &Path, tests: &[String]) -> Result<VmRun> {
    let (arch, series) = (run.arch, run.label());
    let logs = vm_dir().join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log_path = logs.join(format!("{series}.log"));
    println!(
        "==> boot {series}: {} (console: {})",
        kernel.origin,
        log_path.display()
    );
    let log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut qemu = qemu(arch);
    // One vCPU: under TCG, a tracepoint attached or detached (the kernel patches its own code)
    // while another vCPU runs through that code in a lock loop can stall the guest for good.
    qemu.args(["-accel", "tcg", "-smp", "1", "-m", "2048"])
        .args([
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-nic", "none",
        ])
        .args(["-no-reboot", "-kernel"])
        .arg(&kernel.path)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 {TESTS_PARAMETER}{}",
            console_device(arch),
            tests.join(",")
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?);
    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("step 'boot {series}': cannot run {qemu:?}"))?;
    let console = read_console(&mut child, log, started)?;
    let exited = wait_or_kill(&mut child, Duration::from_secs(30))?;
    let problem = match (&console.verdict, exited) {
        (None, Some(status)) => Some(format!("qemu exited ({status}) without a verdict")),
        (None, None) => Some(format!(
            "no verdict within {} min",
            SUITE_TIMEOUT.as_secs() / 60
        )),
        (Some(_), None) => Some("qemu did not power off after the verdict".to_string()),
        (Some(_), Some(_)) => None,
    };
    let passed = console.verdict.as_deref() == Some("pass");
    let mut oops = None;
    if !passed {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().map(console_text).collect();
        print_failures(&log_path, &lines, console.verdict.is_some());
        oops = console
            .verdict
            .is_none()
            .then(|| kernel_death(&lines))
            .flatten();
    }
    Ok(VmRun {
        passed,
        origin: kernel.origin.clone(),
        release: console.release,
        boot: console.booted.map(|at| at - started),
        suite: console
            .booted
            .zip(console.finished)
            .map(|(booted, finished)| finished - booted),
        log: log_path,
        problem,
        oops,
    })
}

/// qemu for the architecture, with its machine and CPU.
fn qemu(arch: Arch) -> Command {
    match arch {
        Arch::X86_64 => {
            let mut qemu = Command::new("qemu-system-x86_64");
            qemu.args(["-cpu", "max"]);
            qemu
        }
        Arch::Arm64 => {
            let mut qemu = Command::new("qemu-system-aarch64");
            // `virt`: the generic machine, its console a PL011 UART. Pointer authentication
            // with qemu's own cheap algorithm instead of the architected QARMA, which costs
            // much emulation time on every function return.
            qemu.args(["-machine", "virt", "-cpu", "max,pauth-impdef=on"]);
            qemu
        }
    }
}

/// The serial console the kernel writes to: the PC's first UART, or the virt machine's PL011.
fn console_device(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "ttyS0",
        Arch::Arm64 => "ttyAMA0",
    }
}

/// What the serial console said.
#[derive(Default)]
struct Console {
    release: Option<String>,
    verdict: Option<String>,
    booted: Option<Instant>,
    finished: Option<Instant>,
}

/// Between a console line's arrival time and its text in the log.
const CONSOLE_SEPARATOR: &str = " | ";

/// Copies the console into the log until the verdict line, qemu's exit, or the timeout.
fn read_console(child: &mut Child, log: fs::File, started: Instant) -> Result<Console> {
    let (lines, received) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    thread::spawn(move || {
        let mut line = Vec::new();
        while stdout
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if lines.send(text).is_err() {
                break;
            }
            line.clear();
        }
    });
    // Line by line, so that the console log can be followed while the VM runs.
    let mut log = LineWriter::new(log);
    let mut console = Console::default();
    let deadline = started + SUITE_TIMEOUT;
    while console.verdict.is_none() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let line = match received.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => break,
        };
        writeln!(
            log,
            "{:>8.1}{CONSOLE_SEPARATOR}{line}",
            started.elapsed().as_secs_f64()
        )?;
        if line.contains(INIT_MARKER) {
            console.booted = Some(Instant::now());
        } else if let Some((_, release)) = line.split_once(RELEASE_MARKER) {
            console.release = Some(release.trim().to_string());
        } else if let Some((_, verdict)) = line.split_once(VERDICT_MARKER) {
            console.verdict = Some(verdict.trim().to_string());
            console.finished = Some(Instant::now());
        }
    }
    log.flush()?;
    Ok(console)
}

/// Waits for qemu to exit; kills it after `grace`. The exit status, if it exited by itself.
fn wait_or_kill(child: &mut Child, grace: Duration) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait()?;
    Ok(None)
}

/// A log line without its arrival time (qemu's own messages have none).
fn console_text(line: &str) -> &str {
    match line.split_once(CONSOLE_SEPARATOR) {
        Some((time, text)) if time.trim_start().parse::<f64>().is_ok() => text,
        _ => line,
    }
}

/// What went wrong, from the console log: with a verdict, the failed tests and their panic
/// messages; without one (a kernel that did not boot, a hang), the log's last lines.
fn print_failures(log: &Path, lines: &[&str], had_verdict: bool) {
    // In one piece: other VMs print their lines meanwhile.
    let _whole = std::io::stdout().lock();
    println!("---- {} ----", log.display());
    if had_verdict {
        let mut in_panic_message = false;
        for line in lines {
            if line.contains("panicked at") {
                in_panic_message = true;
            } else if line.starts_with("stack backtrace:") || line.starts_with("note: ") {
                in_panic_message = false;
            }
            let wanted = line.starts_with("vm init:")
                || line.ends_with(" FAILED")
                || line.starts_with("test result:");
            if wanted || in_panic_message {
                println!("{line}");
            }
        }
    } else {
        // A kernel that died says why at the top of its oops; the end is only its last frames.
        let running = lines
            .iter()
            .rev()
            .find(|line| line.starts_with("vm init: running") || line.starts_with("test "));
        if let Some(running) = running {
            println!("last test line: {running}");
        }
        let shown = kernel_oops(lines).unwrap_or(&lines[lines.len().saturating_sub(40)..]);
        for line in shown {
            println!("{line}");
        }
    }
    println!("----");
}

/// How much of a kernel oops is kept: its reason, registers, stack and the panic line.
const OOPS_LINES: usize = 120;
/// How the kernel begins what it prints when it oopses or panics.
const DEATHS: [&str; 4] = ["BUG:", "Oops:", "general protection fault", "Kernel panic"];
/// How it begins a warning, which it may go on from.
const WARNING: &str = "------------[ cut here ]";

/// The console's lines from the first the kernel prints when it oopses or warns.
fn kernel_oops<'a, 'b>(lines: &'a [&'b str]) -> Option<&'a [&'b str]> {
    let starts = |line: &str| {
        let text = line.split_once("] ").map_or(line, |(_, text)| text);
        DEATHS
            .iter()
            .chain([&WARNING])
            .any(|start| text.starts_with(start))
    };
    let first = lines.iter().position(|line| starts(line))?;
    Some(&lines[first..lines.len().min(first + OOPS_LINES)])
}

/// How the kernel died, if its console says it did: an oops or a panic, not a warning it went
/// on from.
fn kernel_death(lines: &[&str]) -> Option<Oops> {
    let oops = kernel_oops(lines)?;
    if !oops
        .iter()
        .any(|line| DEATHS.iter().any(|death| line.contains(death)))
    {
        return None;
    }
    Some(if oops.iter().any(|line| names_a_bpf_program(line)) {
        Oops::InABpfProgram
    } else {
        Oops::ElsewhereInTheKernel
    })
}

/// Whether an oops line names a BPF program or the trampoline that calls one: JIT-ed programs
/// show in stack traces as `bpf_prog_<tag>_<name>`.
fn names_a_bpf_program(line: &str) -> bool {
    line.contains("bpf_prog_") || line.contains("bpf_trampoline_")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head and tail of an oops as a Debian 6.12 kernel printed it under TCG.
    const FOREIGN: &str = "\
[  119.9] test two_thousand_processes_locking_and_deleting_their_own_file_each_name_it ... ok
[  120.36] Oops: general protection fault, probably for non-canonical address 0x1: 0000 [#1] PREEMPT SMP NOPTI
[  120.36] RIP: 0010:kmem_cache_alloc_lru_noprof+0x72/0x300
[  120.36] Call Trace:
[  120.36]  do_filp_open+0xc4/0x170
[  120.37] Kernel panic - not syncing: Fatal exception in interrupt";

    #[test]
    fn an_oops_is_shown_from_its_first_line_and_told_apart_from_one_in_a_bpf_program() {
        let lines: Vec<&str> = FOREIGN.lines().collect();
        let oops = kernel_oops(&lines).expect("an oops");
        assert!(oops[0].contains("Oops: general protection fault"));
        assert_eq!(oops.len(), lines.len() - 1);
        assert!(!oops.iter().any(|line| names_a_bpf_program(line)));

        let in_a_program = FOREIGN.replace(
            " do_filp_open+0xc4/0x170",
            " bpf_prog_6deef7357e7b4530_btf_flock_lock_inode+0x2e/0x1c0",
        );
        let lines: Vec<&str> = in_a_program.lines().collect();
        let oops = kernel_oops(&lines).expect("an oops");
        assert!(oops.iter().any(|line| names_a_bpf_program(line)));

        assert!(kernel_oops(&lines[..1]).is_none());
        assert_eq!(kernel_death(&lines), Some(Oops::InABpfProgram));
        let lines: Vec<&str> = FOREIGN.lines().collect();
        assert_eq!(kernel_death(&lines), Some(Oops::ElsewhereInTheKernel));

        // A warning the kernel went on from is shown, but is no death to boot again for.
        let warned = [
            "[  3.1] ------------[ cut here ]------------",
            "[  3.1] WARNING: CPU: 0 PID: 1 at mm/slub.c:100 kmem_cache_free+0x1/0x2",
            "[  3.2] ---[ end trace 0000000000000000 ]---",
        ];
        assert_eq!(kernel_oops(&warned).map(<[_]>::len), Some(3));
        assert_eq!(kernel_death(&warned), None);
    }
}
