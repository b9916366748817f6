//! Helpers for aimlock's integration tests: run the real `aimlock` binary and real lock
//! workloads (`lockwork`), and read what the tracer wrote.
//!
//! Tests run concurrently and the tracer sees every process on the machine, so each test picks
//! out its own events by pid or inode.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockWriteGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod otlp_collector;

/// The `aimlock` binary under test: `$AIMLOCK_BIN` (set by `cargo xtask test`).
pub fn aimlock_bin() -> PathBuf {
    let path = std::env::var_os("AIMLOCK_BIN")
        .map(PathBuf::from)
        .expect("AIMLOCK_BIN is not set: run the integration tests with `cargo xtask test`");
    assert!(
        path.exists(),
        "AIMLOCK_BIN={} does not exist",
        path.display()
    );
    path
}

/// The `lockwork` workload: `$LOCKWORK_BIN`, or the one cargo built beside the test binary.
pub fn lockwork_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LOCKWORK_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let candidates = [
        exe.with_file_name("lockwork"),
        exe.parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("lockwork"))
            .unwrap_or_default(),
    ];
    candidates
        .into_iter()
        .find(|path| path.exists())
        .expect("lockwork not found beside the test binary; set LOCKWORK_BIN")
}

/// A burst's size: `native` on a real CPU, `emulated` in `cargo xtask vm-test`'s software
/// emulated machines (`$AIMLOCK_TEST_EMULATED`), which run about 25 times slower. A burst test
/// keeps its proportions there (twice what the ring holds, more threads than the filter),
/// only not its absolute size.
pub fn burst_size<T>(native: T, emulated: T) -> T {
    if emulated_machine() { emulated } else { native }
}

/// Whether the tests run in `cargo xtask vm-test`'s software emulated machines.
pub fn emulated_machine() -> bool {
    std::env::var_os("AIMLOCK_TEST_EMULATED").is_some()
}

/// These tests load eBPF programs and drive other users' locks: they need root. They fail,
/// rather than skip, when they cannot run.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this integration test needs root (it loads eBPF programs)"
    );
}

/// A fresh directory for one test's files, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("aimlock-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates an empty file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, b"").expect("create test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The inode number of a file.
pub fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").ino()
}

/// Lines read from a child's stdout, shared with a reader thread. The reader only keeps each
/// line as it comes, so that the child never waits on a full pipe while a slow (emulated)
/// machine parses; they are parsed as JSON when looked at, a torn line failing the test then.
#[derive(Clone, Default)]
struct Lines(Arc<SharedLines>);

#[derive(Default)]
struct SharedLines {
    /// Lines read and not yet parsed.
    arrived: Mutex<Vec<String>>,
    changed: Condvar,
    /// Every line parsed so far, in order.
    parsed: Mutex<Vec<Value>>,
    /// The child's stdout has ended: every line has arrived.
    ended: AtomicBool,
}

impl Lines {
    fn follow(&self, stdout: impl std::io::Read + Send + 'static) {
        let lines = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.0.arrived.lock().unwrap().push(line);
                lines.0.changed.notify_all();
            }
            lines.0.ended.store(true, Ordering::Release);
        });
    }

    /// Waits until the child's stdout has ended (every line read, none parsed meanwhile: on an
    /// emulated machine the parse of a burst's lines alone can take longer than the wait).
    fn wait_for_end(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.0.ended.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Every line so far, the new ones parsed (outside the reader's lock).
    fn parsed(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        let mut parsed = self.0.parsed.lock().unwrap();
        let arrived = std::mem::take(&mut *self.0.arrived.lock().unwrap());
        parsed.extend(arrived.into_iter().map(|line| {
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"))
        }));
        parsed
    }

    fn snapshot(&self) -> Vec<Value> {
        self.parsed().clone()
    }

    /// Waits until a line matches; panics with what was seen after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let mut looked = 0;
        self.find_within(&mut looked, timeout, pred)
            .unwrap_or_else(|| panic!("timed out waiting for {what}; saw {:#?}", *self.parsed()))
    }

    /// The first line from `looked` on that matches, waiting up to `timeout` for it; `looked`
    /// moves past the lines seen, so that a burst's tens of thousands of lines are each looked
    /// at once over several calls.
    fn find_within(
        &self,
        looked: &mut usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let parsed = self.parsed();
                if let Some(found) = parsed[*looked..].iter().find(|value| pred(value)) {
                    return Some(found.clone());
                }
                *looked = parsed.len();
                if Instant::now() >= deadline {
                    return None;
                }
            }
            let arrived = self.0.arrived.lock().unwrap();
            if arrived.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                drop(self.0.changed.wait_timeout(arrived, left).unwrap());
            }
        }
    }
}

/// How the tests of one binary share the machine: any number of tracers at once, or one test
/// alone (see [`alone_on_the_machine`]).
struct MachineUse {
    tracers: usize,
    alone: bool,
}

static MACHINE: (Mutex<MachineUse>, Condvar) = (
    Mutex::new(MachineUse {
        tracers: 0,
        alone: false,
    }),
    Condvar::new(),
);

fn machine_use() -> MutexGuard<'static, MachineUse> {
    MACHINE
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A tracer's share of the machine, taken when it starts (unless its test runs alone) and given
/// back when it is dropped.
struct SharedMachine {
    counted: bool,
}

impl SharedMachine {
    fn take() -> Self {
        if ALONE.get() {
            return Self { counted: false };
        }
        let mut using = machine_use();
        while using.alone {
            using = MACHINE.1.wait(using).unwrap();
        }
        using.tracers += 1;
        Self { counted: true }
    }
}

impl Drop for SharedMachine {
    fn drop(&mut self) {
        if self.counted {
            machine_use().tracers -= 1;
            MACHINE.1.notify_all();
        }
    }
}

thread_local! {
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The machine to one test while the guard lives: no other test of the binary runs a tracer
/// meanwhile.
pub struct Alone(());

/// Waits until no other test of this binary runs a tracer, and keeps them from starting one
/// until the guard is dropped. For a test that asks whether the tracer keeps pace with a burst
/// on the machine's CPUs: other tests' bursts, which load every CPU on purpose, would decide
/// that instead. A waiting test lets tracers start meanwhile, so that a test running two never
/// waits for itself.
pub fn alone_on_the_machine() -> Alone {
    let mut using = machine_use();
    while using.alone || using.tracers > 0 {
        using = MACHINE.1.wait(using).unwrap();
    }
    using.alone = true;
    ALONE.set(true);
    Alone(())
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.set(false);
        machine_use().alone = false;
        MACHINE.1.notify_all();
    }
}

/// A running `aimlock trace --format json --output -`.
pub struct Tracer {
    child: Child,
    _machine: SharedMachine,
    lines: Lines,
    /// Its stderr so far (also passed on to the test's stderr).
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Tracer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the tracer with extra arguments and waits for its `start` line, which it writes
    /// once every program is attached.
    pub fn start(extra: &[&str]) -> Self {
        require_root();
        let machine = SharedMachine::take();
        let mut child = Command::new(aimlock_bin())
            .args(["trace", "--format", "json", "--output", "-"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn aimlock trace");
        let lines = Lines::default();
        lines.follow(child.stdout.take().expect("stdout"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let reader = BufReader::new(child.stderr.take().expect("stderr"));
        let stderr_reader = thread::spawn({
            let stderr = stderr.clone();
            move || {
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    eprintln!("{line}");
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
        let mut tracer = Self {
            child,
            _machine: machine,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        tracer.wait_for_start(Duration::from_secs(60));
        tracer
    }

    /// Waits for the `start` line; a tracer that exits first fails the test at once, with
    /// its stderr.
    fn wait_for_start(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut looked = 0;
        while Instant::now() < deadline {
            let start = self
                .lines
                .find_within(&mut looked, Duration::from_millis(200), |e| {
                    e["event"] == "start"
                });
            if start.is_some() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("wait for aimlock trace") {
                if let Some(reader) = self.stderr_reader.take() {
                    reader.join().expect("the stderr reader");
                }
                panic!(
                    "aimlock trace exited with {status} before its start line: {}",
                    self.stderr.lock().unwrap().trim_end()
                );
            }
        }
        panic!(
            "timed out waiting for the start line; saw {:#?}",
            self.lines.snapshot()
        );
    }

    pub fn events(&self) -> Vec<Value> {
        self.lines.snapshot()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.lines.wait_for(what, timeout, pred)
    }

    /// Waits until the tracer's stderr has a line containing `text`.
    pub fn wait_for_stderr(&self, text: &str, timeout: Duration) {
        eventually(&format!("{text:?} on the tracer's stderr"), timeout, || {
            self.stderr.lock().unwrap().contains(text).then_some(())
        });
    }

    /// SIGINT, then every line written; asserts a clean exit and a `stop` line last.
    pub fn stop(self) -> Vec<Value> {
        self.stop_with(nix::sys::signal::Signal::SIGINT)
    }

    /// As [`Tracer::stop`], with everything the tracer wrote to stderr.
    pub fn stop_with_stderr(mut self) -> (Vec<Value>, String) {
        let events = self.stop_in_place(nix::sys::signal::Signal::SIGINT);
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().expect("the stderr reader");
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (events, stderr)
    }

    /// Sends `signal`, then as [`Tracer::stop`].
    pub fn stop_with(mut self, signal: nix::sys::signal::Signal) -> Vec<Value> {
        self.stop_in_place(signal)
    }

    fn stop_in_place(&mut self, signal: nix::sys::signal::Signal) -> Vec<Value> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal the tracer");
        let status = wait_within(&mut self.child, "aimlock trace", PROCESS_DEADLINE);
        assert!(status.success(), "aimlock trace exited with {status}");
        // The reader thread ends at EOF; give it a moment to push the last lines.
        let ended = self.lines.wait_for_end(Duration::from_secs(10));
        let events = self.lines.snapshot();
        assert!(ended, "stdout did not end: {events:#?}");
        assert!(
            events.last().is_some_and(|e| e["event"] == "stop"),
            "no stop line at the end: {events:#?}"
        );
        events
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `aimlock trace` writing its log to a file, as in production.
pub struct TraceToFile {
    child: Child,
    _machine: SharedMachine,
    log: PathBuf,
}

impl TraceToFile {
    /// Starts `aimlock trace --format json --output LOG ARGS` and waits for its start line
    /// (after any that LOG already has).
    pub fn start(log: &Path, args: &[&str]) -> Self {
        require_root();
        let starts = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches(r#""event":"start""#)
                .count()
        };
        let before = starts(log);
        let machine = SharedMachine::take();
        let child = Command::new(aimlock_bin())
            .args(["trace", "--format", "json", "--output"])
            .arg(log)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aimlock trace");
        let tracer = Self {
            child,
            _machine: machine,
            log: log.to_owned(),
        };
        eventually("the start line", Duration::from_secs(60), || {
            (starts(log) > before).then_some(())
        });
        tracer
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until a line of the log matches; panics with the log after a minute.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.lines().into_iter().find(|line| pred(line)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the log has {:#?}",
                self.lines()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT; returns once the tracer has written its stop line and exited.
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT the tracer");
        let status = wait_within(&mut self.child, "aimlock trace", PROCESS_DEADLINE);
        assert!(status.success(), "aimlock trace exited with {status}");
    }
}

impl Drop for TraceToFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `lockwork` with its per-step report lines.
pub struct Workload {
    child: Child,
    lines: Lines,
}

impl Workload {
    pub fn start(steps: &[&str]) -> Self {
        Self::start_as(&lockwork_bin(), steps)
    }

    /// As [`Workload::start`], with a copy of lockwork under another name (for `--comm`).
    pub fn start_as(lockwork: &Path, steps: &[&str]) -> Self {
        let mut child = Command::new(lockwork)
            .args(steps)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lockwork");
        let lines = Lines::default();
        lines.follow(child.stdout.take().expect("stdout"));
        Self { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs a burst at nice 19: it takes only the CPU the scenario leaves, and still fills the
    /// ring whenever it runs. Where the burst shares the one CPU of an emulated machine with the
    /// tracer and the test, the test would otherwise run several times slower.
    pub fn only_on_spare_cpu(&self) {
        // SAFETY: a plain system call on a pid this harness started.
        let reniced = unsafe { libc::setpriority(libc::PRIO_PROCESS, self.pid(), 19) };
        assert_eq!(
            reniced,
            0,
            "renice the burst: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the report of `step` (its first occurrence) and returns it; fails on a step
    /// that failed.
    pub fn wait_step(&self, step: &str) -> Value {
        let line = self
            .lines
            .wait_for(&format!("step {step}"), Duration::from_secs(30), |l| {
                l["step"] == step
            });
        assert_eq!(line["ok"], true, "step {step} failed: {line}");
        line
    }

    /// The pid reported by a `hold-in-child` step's child.
    pub fn holder_pid(&self) -> u32 {
        let line = self.wait_step("holder");
        line["pid"].as_u64().expect("pid") as u32
    }

    /// Answers a `wait-stdin` step.
    pub fn proceed(&mut self) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("write to lockwork");
        stdin.flush().expect("flush");
    }

    /// Waits for the workload to exit; asserts it succeeded.
    pub fn finish(mut self) {
        let status = wait_within(&mut self.child, "lockwork", PROCESS_DEADLINE);
        assert!(status.success(), "lockwork exited with {status}");
    }

    /// Waits for the workload to exit, whatever its status.
    pub fn finish_any(mut self) -> ExitStatus {
        wait_within(&mut self.child, "lockwork", PROCESS_DEADLINE)
    }

    pub fn lines(&self) -> Vec<Value> {
        self.lines.snapshot()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events about one inode.
pub fn on_inode(events: &[Value], ino: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|event| event["ino"] == ino)
        .cloned()
        .collect()
}

/// The event types of lines, in order.
pub fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["event"].as_str().unwrap_or_default())
        .collect()
}

/// The lines of one event type.
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["event"] == kind)
        .collect()
}

/// Whether a process is still alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Runs `aimlock ARGS` to completion (within [`PROCESS_DEADLINE`]).
pub fn run_aimlock(args: &[&str]) -> Output {
    output_within(Command::new(aimlock_bin()).args(args), PROCESS_DEADLINE)
}

/// How long a process a test waits for may take to exit before the test fails: far above what
/// any takes, even emulated, so that a hang fails with evidence instead of never ending.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(120);

/// As [`Command::output`], but a command still running after `timeout` fails the test with
/// what the kernel shows it doing, and is killed.
pub fn output_within(command: &mut Command, timeout: Duration) -> Output {
    use std::io::Read as _;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let status = wait_within(&mut child, &format!("{command:?}"), timeout);
    Output {
        status,
        stdout: stdout.join().expect("the stdout reader"),
        stderr: stderr.join().expect("the stderr reader"),
    }
}

/// Waits for a child to exit. Past `timeout` the test fails, naming `what` and the state of
/// each of its threads (see [`task_states`]), after the child is killed.
pub fn wait_within(child: &mut Child, what: &str, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if Instant::now() >= deadline {
            let states = task_states(child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} (pid {}) still running after {} s; killed. Its threads:\n{states}",
                child.id(),
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What the kernel shows each thread of a process doing: CPU ticks so far (user and system),
/// state, wait channel, system call (number, arguments, stack and program counters; "running"
/// when in user space) and kernel stack.
pub fn task_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("pid {pid} is gone\n");
    };
    let mut text = String::new();
    for task in tasks.flatten() {
        let read = |name: &str| {
            std::fs::read_to_string(task.path().join(name))
                .map(|value| value.trim().to_string())
                .unwrap_or_else(|err| format!("({name}: {err})"))
        };
        let stat = read("stat");
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |index: usize| fields.get(index).copied().unwrap_or("?");
        text.push_str(&format!(
            "  tid {} ({}): state {}, user {} system {} ticks, wchan {}, syscall {}\n",
            task.file_name().to_string_lossy(),
            read("comm"),
            ticks(0),
            ticks(11),
            ticks(12),
            read("wchan"),
            read("syscall"),
        ));
        for frame in read("stack").lines() {
            text.push_str(&format!("    {frame}\n"));
        }
    }
    text
}

/// `aimlock locks --json ARGS`: the locks, after asserting a clean exit and one document.
pub fn lock_table(args: &[&str]) -> Vec<Value> {
    let output = run_aimlock(&[&["locks", "--json"], args].concat());
    parse_lock_table(&output)
}

/// The locks of a finished `aimlock locks --json`.
pub fn parse_lock_table(output: &std::process::Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "aimlock locks exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let document: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    document["locks"].as_array().expect("a locks array").clone()
}

/// Held for writing by the tests that make locks come and go by the thousand, and for reading
/// by [`proc_locks_lines`]: under such churn in the same test binary, successive reads of
/// /proc/locks can even agree on a wrong list (new locks go to the head of the kernel's list,
/// so every read that crosses a page shifts the same way).
pub static LOCK_CHURN: RwLock<()> = RwLock::new(());

/// Makes locks come and go while the guard lives (see [`LOCK_CHURN`]).
pub fn churning() -> RwLockWriteGuard<'static, ()> {
    LOCK_CHURN
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The lines of /proc/locks about one inode.
pub fn proc_locks_lines(ino: u64) -> Vec<String> {
    // One read is no snapshot: the kernel writes the file a page per read, and locks taken or
    // released elsewhere meanwhile (other tests) shift its list, so a line can show twice or
    // not at all. Not while a test of this binary churns locks; and three reads in a row that
    // agree are taken as the truth.
    let _calm = LOCK_CHURN
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let read = || -> Vec<String> {
        std::fs::read_to_string("/proc/locks")
            .expect("read /proc/locks")
            .lines()
            .filter(|line| {
                line.split_whitespace()
                    .any(|word| word.ends_with(&format!(":{ino}")))
            })
            .map(str::to_owned)
            .collect()
    };
    // Without the ordinal, which is the line's place in the list.
    let content = |lines: &[String]| -> Vec<String> {
        let mut content: Vec<String> = lines
            .iter()
            .map(|line| {
                line.split_once(':')
                    .map_or(line.as_str(), |(_, rest)| rest)
                    .to_owned()
            })
            .collect();
        content.sort();
        content
    };
    let mut last = read();
    let mut agreeing = 1;
    for _ in 0..100 {
        let next = read();
        if content(&next) == content(&last) {
            agreeing += 1;
            if agreeing == 3 {
                return next;
            }
        } else {
            agreeing = 1;
        }
        last = next;
    }
    panic!("/proc/locks never read the same three times in a row for inode {ino}: {last:?}")
}

/// Polls `probe` until it returns something, for up to `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now (tests running at once each get their
/// own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Kills a process (a workload's forked holder, which no `Child` owns) when dropped.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Writes events as JSON lines, as `aimlock trace --output FILE` would have.
pub fn write_log(path: &Path, events: &[Value]) {
    let text: String = events.iter().map(|event| format!("{event}\n")).collect();
    std::fs::write(path, text).expect("write the log");
}

/// A systemd-journald of the test's own, in a journal namespace of its own, so that
/// `--journald` entries go to a real journal and are read back with `journalctl`, apart from
/// the machine's journal and other tests'. Stopped, and its files removed, when dropped.
pub struct PrivateJournal {
    journald: Child,
    namespace: String,
}

impl PrivateJournal {
    pub fn start(name: &str) -> Self {
        require_root();
        let namespace = format!("aimlock-test-{name}-{}", std::process::id());
        let journald = Command::new("/lib/systemd/systemd-journald")
            .arg(&namespace)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journald (the systemd package; cargo xtask setup installs it)");
        let journal = Self {
            journald,
            namespace,
        };
        let socket = journal.socket();
        eventually(
            "the private journal's socket",
            Duration::from_secs(10),
            || socket.exists().then_some(()),
        );
        journal
    }

    /// The socket to give `--journald=`.
    pub fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/systemd/journal.{}/socket", self.namespace))
    }

    /// `journalctl -o json -t aimlock` of this journal: one object per entry, in order, every
    /// value a string (or an array of bytes, for a value that is not UTF-8).
    pub fn aimlock_entries(&self) -> Vec<Value> {
        String::from_utf8(self.journalctl(&["-o", "json", "-t", "aimlock"]))
            .expect("journalctl writes UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("journalctl -o json line"))
            .collect()
    }

    /// What `journalctl ARGS` prints for this journal, once journald has written out what it
    /// has received.
    pub fn journalctl(&self, args: &[&str]) -> Vec<u8> {
        let journalctl = |args: &[&str]| {
            let output = Command::new("journalctl")
                .arg(format!("--namespace={}", self.namespace))
                .args(args)
                .output()
                .expect("journalctl (the systemd package; cargo xtask setup installs it)");
            assert!(
                output.status.success(),
                "journalctl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            output.stdout
        };
        journalctl(&["--sync"]);
        journalctl(args)
    }
}

impl Drop for PrivateJournal {
    fn drop(&mut self) {
        let _ = self.journald.kill();
        let _ = self.journald.wait();
        let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
        let files = format!("{}.{}", machine_id.trim(), self.namespace);
        for dir in [
            format!("/run/systemd/journal.{}", self.namespace),
            format!("/var/log/journal/{files}"),
            format!("/run/log/journal/{files}"),
        ] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts `program ARGS` as a process with exactly pid `pid` (clone3 with `set_tid`, which
/// needs CAP_SYS_ADMIN: root), its output discarded: a pid reused on purpose. Errors with
/// EEXIST when a process has that pid now. Returns the child's pid (`pid`), to wait for with
/// [`wait_pid`].
pub fn spawn_with_pid(pid: u32, program: &Path, args: &[&str]) -> nix::Result<u32> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    /// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1), include/uapi/linux/sched.h.
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
    }
    // Everything the child needs is made before the fork: it only calls dup2, execv and _exit.
    let program = CString::new(program.as_os_str().as_bytes()).expect("no NUL in the path");
    let args: Vec<CString> = std::iter::once(program.clone())
        .chain(args.iter().map(|arg| CString::new(*arg).expect("no NUL")))
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|arg| arg.as_ptr()).collect();
    argv.push(std::ptr::null());
    let null = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let tids = [libc::pid_t::try_from(pid).expect("a pid")];
    let clone_args = CloneArgs {
        flags: 0,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
    };
    // SAFETY: clone3 without CLONE_VM is a fork; the child only makes async-signal-safe calls
    // on memory prepared above, then execs or exits.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &clone_args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => unsafe {
            use std::os::fd::AsRawFd as _;
            libc::dup2(null.as_raw_fd(), 1);
            libc::execv(program.as_ptr(), argv.as_ptr());
            libc::_exit(127)
        },
        child if child > 0 => Ok(child as u32),
        _ => Err(nix::errno::Errno::last()),
    }
}

/// Waits for a child started by [`spawn_with_pid`]; returns its exit status.
pub fn wait_pid(pid: u32) -> nix::sys::wait::WaitStatus {
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).expect("waitpid")
}

/// When a running process started, as the tracer's `start_time` gives it: field 22 of
/// /proc/PID/stat (clock ticks since boot) in nanoseconds.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks: u64 = stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some(ticks * (1_000_000_000 / per_second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_fails_the_test_with_its_state_and_is_killed() {
        let panic = std::panic::catch_unwind(|| {
            output_within(Command::new("sleep").arg("30"), Duration::from_secs(1))
        })
        .expect_err("sleep 30 ended within 1 s");
        let message = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(message.contains("still running after 1 s"), "{message}");
        assert!(message.contains("(sleep): state S"), "{message}");
        assert!(message.contains("syscall "), "{message}");
        let pid: u32 = message
            .split_once("(pid ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(pid, _)| pid.parse().ok())
            .expect("the message names the pid");
        assert!(!alive(pid), "sleep still runs: {message}");
    }
}
