//! The Debian packages `cargo xtask dist` builds: the amd64 one installed into a fresh root, its
//! files, modes, binary, unit and configuration; its maintainer scripts; and lintian's verdict;
//! the arm64 one, the same files around a static aarch64 binary.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use aimlock_tests::TempDir;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The amd64 package under test: `$AIMLOCK_DEB` (set by `cargo xtask test`).
fn package() -> PathBuf {
    package_named_by("AIMLOCK_DEB")
}

/// The arm64 package under test: `$AIMLOCK_DEB_ARM64` (set by `cargo xtask test`).
fn arm64_package() -> PathBuf {
    package_named_by("AIMLOCK_DEB_ARM64")
}

fn package_named_by(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{variable} is not set: run `cargo xtask test`, or `cargo xtask dist` and set it"
            )
        });
    assert!(
        path.exists(),
        "{variable}={} does not exist",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).expect("UTF-8 output")
}

/// The package unpacked into a fresh root, as `dpkg -i` would lay its files.
fn installed(name: &str) -> TempDir {
    unpacked(&package(), name)
}

fn unpacked(package: &Path, name: &str) -> TempDir {
    let root = TempDir::new(name);
    run(Command::new("dpkg").arg("-x").arg(package).arg(root.path()));
    root
}

/// The package's files and directories: path (without the leading `.`) to mode and owner,
/// as `dpkg-deb --contents` lists them.
fn contents() -> BTreeMap<String, (String, String)> {
    contents_of(&package())
}

fn contents_of(package: &Path) -> BTreeMap<String, (String, String)> {
    stdout(Command::new("dpkg-deb").arg("--contents").arg(package))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields[5].trim_start_matches('.').trim_end_matches('/');
            (
                path.to_string(),
                (fields[0].to_string(), fields[1].to_string()),
            )
        })
        .collect()
}

#[test]
fn the_package_holds_its_files_with_their_modes() {
    let contents = contents();
    let expected = [
        ("/usr/bin/aimlock", "-rwxr-xr-x"),
        ("/lib/systemd/system/aimlock.service", "-rw-r--r--"),
        ("/etc/default/aimlock", "-rw-r--r--"),
        ("/usr/share/man/man1/aimlock.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/aimlock-trace.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/aimlock-locks.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/aimlock-report.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/aimlock-break.1.gz", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/aimlock",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_aimlock", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/aimlock.fish",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/aimlock/copyright", "-rw-r--r--"),
        ("/usr/share/doc/aimlock/changelog.gz", "-rw-r--r--"),
        ("/usr/share/lintian/overrides/aimlock", "-rw-r--r--"),
    ];
    for (path, mode) in expected {
        let found = contents.get(path).map(|(mode, _)| mode.as_str());
        assert_eq!(found, Some(mode), "{path} in {contents:#?}");
    }
    for (path, (mode, owner)) in &contents {
        assert_eq!(owner, "root/root", "{path} is not root's");
        let known = expected.iter().any(|(file, _)| file == path)
            || (path.starts_with("/usr/share/man/man1/aimlock-") && path.ends_with(".1.gz"));
        match mode.chars().next() {
            Some('d') => assert_eq!(mode, "drwxr-xr-x", "directory {path}"),
            _ => {
                assert!(
                    known,
                    "{path} ({mode}) is not a file the package should hold"
                );
                if path.starts_with("/usr/share/man/") {
                    assert_eq!(mode, "-rw-r--r--", "{path}");
                }
            }
        }
    }
}

#[test]
fn the_installed_binary_is_static_and_runs() {
    let root = installed("package-binary");
    let binary = root.path().join("usr/bin/aimlock");
    let version = stdout(Command::new(&binary).arg("--version"));
    assert_eq!(version.trim(), format!("aimlock {VERSION}"));
    let headers = stdout(
        Command::new("readelf")
            .args(["--program-headers", "--wide"])
            .arg(&binary),
    );
    assert!(
        !headers.contains("INTERP"),
        "the packaged binary asks for a dynamic loader: {headers}"
    );
    // The man pages name the binary's own subcommands.
    let help = stdout(Command::new(&binary).arg("--help"));
    for subcommand in ["trace", "locks", "report", "break"] {
        assert!(help.contains(&format!("  {subcommand} ")), "{help}");
        let page = root
            .path()
            .join(format!("usr/share/man/man1/aimlock-{subcommand}.1.gz"));
        assert!(page.exists(), "{} is missing", page.display());
    }
}

/// A field of the package's control file.
fn control_field(package: &Path, field: &str) -> String {
    stdout(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(package)
            .arg(field),
    )
    .trim()
    .to_string()
}

#[test]
fn the_arm64_package_holds_the_same_files_with_the_same_modes() {
    let arm64 = arm64_package();
    assert_eq!(control_field(&arm64, "Architecture"), "arm64");
    assert_eq!(control_field(&package(), "Architecture"), "amd64");
    assert_eq!(control_field(&arm64, "Version"), VERSION);
    let listed = contents_of(&arm64);
    assert!(
        listed.contains_key("/usr/bin/aimlock"),
        "no /usr/bin/aimlock in {listed:#?}"
    );
    assert_eq!(listed, contents(), "arm64 and amd64 packages differ");
}

#[test]
fn the_arm64_package_holds_a_static_aarch64_executable() {
    let root = unpacked(&arm64_package(), "package-arm64");
    let binary = root.path().join("usr/bin/aimlock");
    let described = stdout(Command::new("file").arg("--brief").arg(&binary));
    for wanted in ["ELF 64-bit LSB", "executable", "ARM aarch64"] {
        assert!(
            described.contains(wanted),
            "file says of the arm64 binary: {described}"
        );
    }
    // Rust's musl targets link position-independent static binaries: `file` says static-pie.
    assert!(
        described.contains("statically linked") || described.contains("static-pie linked"),
        "file says of the arm64 binary: {described}"
    );
    // Everything but the binary is the same bytes as in the amd64 package: man pages,
    // completions, unit and configuration come from one release.
    let amd64 = installed("package-amd64-beside-arm64");
    for path in contents_of(&arm64_package())
        .into_iter()
        .filter(|(path, (mode, _))| !mode.starts_with('d') && path != "/usr/bin/aimlock")
        .map(|(path, _)| path)
    {
        let relative = path.trim_start_matches('/');
        assert!(
            std::fs::read(root.path().join(relative)).unwrap()
                == std::fs::read(amd64.path().join(relative)).unwrap(),
            "{path} differs between the arm64 and amd64 packages"
        );
    }
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    let root = installed("package-unit");
    let unit = std::fs::read_to_string(root.path().join("lib/systemd/system/aimlock.service"))
        .expect("the installed unit");
    assert!(
        unit.contains("\nExecStart=/usr/bin/aimlock trace $AIMLOCK_TRACE_OPTS\n"),
        "{unit}"
    );
    assert!(
        unit.contains("\nEnvironmentFile=/etc/default/aimlock\n"),
        "{unit}"
    );
    // The fresh root has no systemd of its own: the targets the unit's dependencies name are
    // the host's.
    let targets = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&targets).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg("/lib/systemd/system")
        .arg(&targets));
    // Within the root: the binary ExecStart names is the packaged one.
    let output = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg("aimlock.service"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("aimlock.service"))
        .collect();
    assert!(about_unit.is_empty(), "{stderr}");
}

/// The options the unit passes, as systemd splits an unbraced `$AIMLOCK_TRACE_OPTS`.
fn default_trace_options(root: &Path) -> Vec<String> {
    let defaults = std::fs::read_to_string(root.join("etc/default/aimlock")).expect("defaults");
    let value = defaults
        .lines()
        .find_map(|line| line.strip_prefix("AIMLOCK_TRACE_OPTS="))
        .expect("AIMLOCK_TRACE_OPTS in /etc/default/aimlock");
    value
        .trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_default_configuration_is_a_conffile_the_tracer_accepts() {
    let control = TempDir::new("package-conffiles");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(package())
        .arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/default/aimlock\n");

    let root = installed("package-defaults");
    let options = default_trace_options(root.path());
    assert!(
        options.contains(&"--output".to_string())
            && options.contains(&"/var/log/aimlock/aimlock.log".to_string()),
        "{options:?}"
    );
    // Every option and value is parsed before --help is acted on: a misspelt option or a bad
    // size or address in the file fails here.
    let binary = root.path().join("usr/bin/aimlock");
    run(Command::new(&binary)
        .arg("trace")
        .args(&options)
        .arg("--help"));
    let refused = Command::new(&binary)
        .args(["trace", "--rotate-size", "lots", "--help"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a bad value before --help must be refused"
    );
}

#[test]
fn the_maintainer_scripts_are_valid_and_never_start_the_tracer_on_install() {
    let control = TempDir::new("package-scripts");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(package())
        .arg(control.path()));
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(script);
        run(Command::new("sh").arg("-n").arg(&path));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
        // The operator enables the service; the package only restarts a running one on upgrade.
        let commands = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'));
        for command in commands {
            assert!(
                !command.contains(" enable ") && !command.contains(" start "),
                "{script} enables or starts the service: {command}"
            );
        }
    }
}

#[test]
fn lintian_finds_nothing_unexplained() {
    assert_lintian_finds_nothing_unexplained(&package());
}

#[test]
fn lintian_finds_nothing_unexplained_in_the_arm64_package() {
    assert_lintian_finds_nothing_unexplained(&arm64_package());
}

fn assert_lintian_finds_nothing_unexplained(package: &Path) {
    // Every finding, down to pedantic ones; the package's overrides (each with its reason) are
    // applied, and an override that no longer matches is itself a finding. One tag is left
    // out: the static binary's machine code and its crates' tables hold short printable runs
    // that lintian reads as misspelt words (`thIk` for think), and which runs those are
    // changes with every build, so no override could name them for long.
    let output = Command::new("lintian")
        .args(["--display-level", ">=pedantic", "--tag-display-limit", "0"])
        .args(["--display-experimental", "--display-info"])
        .args(["--suppress-tags", "spelling-error-in-binary"])
        .arg(package)
        .output()
        .expect("lintian (cargo xtask setup installs it)");
    let findings = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "lintian on {} ({}):\n{findings}{stderr}",
        package.display(),
        output.status
    );
}
