//! lockwork: a scripted lock workload for aimlock's tests and benchmarks.
//!
//! It runs its arguments as steps, in order, on one "current" file descriptor, and prints one
//! JSON line per step to stdout (`{"step":..,"pid":..,"ok":..}`) so a test can follow it.
//! It needs no shell, python or util-linux, so it also runs inside a minimal VM.
//!
//! Steps:
//!   open:PATH                 open (create) PATH read-write; it becomes the current fd
//!   close                     close the current fd
//!   keep                      keep the current fd open to the end (its locks stay held) and
//!                             leave no current fd, so that the next `open` takes another file
//!   memfd:NAME                create a memfd named NAME; it becomes the current fd
//!   unlink:PATH               remove PATH
//!   rename:FROM:TO            rename FROM to TO (paths without ':')
//!   flock:ex|sh|un[:nb][:go-on]  flock(2) on the current fd; with go-on, a call that a
//!                             signal interrupts (EINTR) is no error: the steps go on
//!   posix:w|r|u:START:LEN[:wait]   fcntl F_SETLK (F_SETLKW with :wait); LEN 0 = to EOF
//!   ofd:w|r|u:START:LEN[:wait]     fcntl F_OFD_SETLK (F_OFD_SETLKW with :wait)
//!   random-ranges:SEED:N      N random POSIX F_SETLK calls (write, read or unlock, on bytes
//!                             0-255, a few to EOF) on the current fd; a call refused by
//!                             another process's lock is not an error. Prints each call as
//!                             {"call":"w:START:LEN","ok":..,"errno":..}
//!   getlk:START:LEN           fcntl F_GETLK (a probe that takes nothing)
//!   lease:r|w|u               fcntl F_SETLEASE on the current fd
//!   churn:DIR:N[:pids]        N short-lived processes one after the other, each creating its
//!                             own file DIR/job-I, locking it (flock), deleting it and exiting;
//!                             prints {"churn":{"jobs":..,"seconds":..}} first, and with `pids`
//!                             {"job":I,"pid":PID} for each job before it
//!   hold-many:DIR:N           open N new files DIR/PID-I and lock each, in turn with flock,
//!                             a POSIX and an OFD write lock; the fds stay open (the open
//!                             files limit is raised for them where it may be)
//!   sleep:SECONDS             sleep (fractions allowed)
//!   alarm:SECONDS             SIGALRM in SECONDS, which interrupts a blocking lock call (EINTR)
//!   hold-in-child:SECONDS     fork a child that keeps every fd for SECONDS, then exits;
//!                             the parent goes on at once
//!   fork                      run the remaining steps in a forked child (it reports
//!                             "forked" first); the parent waits and ends with it
//!   in-thread                 run the remaining steps on a second thread (so that `fork`
//!                             forks from a thread that does not lead the process); the
//!                             step is reported from that thread, once it runs
//!   threads:N                 start and end N threads, 100 at a time
//!   fork-reap:N               fork N children one after another, each exiting at once and
//!                             reaped before the next
//!   sendfd:SOCKET             connect to a unix socket and pass the current fd over it
//!   recvfd:SOCKET             listen on a unix socket, receive one fd; it becomes current
//!   pidns                     unshare a PID and mount namespace, mount a private /proc, and
//!                             run the remaining steps as pid 1's child in it
//!   mountns:SOURCE:TARGET     unshare a mount namespace and bind-mount SOURCE on TARGET in it
//!                             (a container's view of a host directory)
//!   wait-stdin                block until a line (or EOF) arrives on stdin
//!   loop:N:flock|posix|ofd    N lock/unlock pairs on the current fd (benchmarks)
//!   loop:N:posix-sqlite       N transactions of SQLite's POSIX locks (its pending,
//!                             reserved and shared bytes at 1 GiB: shared, reserved, exclusive,
//!                             unlocked), three holds each
//!   loop:N:posix-bytes        N POSIX lock/unlock pairs, each on the next of 1024 bytes: no
//!                             call repeats the lock of the one before
//!   rate:EVENTS:SECONDS:flock|posix|ofd[:THREADS]
//!                             lock/unlock pairs on the current fd at EVENTS lock events a
//!                             second (two per pair) for SECONDS, on THREADS threads (1 by
//!                             default), paced in 1 ms batches; prints
//!                             {"rate":{"pairs":..,"seconds":..,"events_per_sec":..}} first
//!   exit:CODE                 exit now with CODE
use std::{
    io::{BufRead as _, Write as _},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    os::unix::net::{UnixListener, UnixStream},
    process::exit,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::{
    fcntl::{FcntlArg, FlockArg, OFlag, fcntl, open},
    sys::{
        socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg},
        stat::Mode,
        wait::{WaitStatus, waitpid},
    },
    unistd::{ForkResult, fork, getpid},
};

fn main() {
    let steps: Vec<String> = std::env::args().skip(1).collect();
    if steps.is_empty() {
        eprintln!("usage: lockwork STEP... (see the source for the steps)");
        exit(2);
    }
    let mut state = State {
        fd: None,
        many: Vec::new(),
    };
    state.run_steps(&steps);
}

fn report(step: &str, ok: bool, error: Option<&str>) {
    let line = serde_json::json!({
        "step": step,
        "pid": getpid().as_raw(),
        "ok": ok,
        "error": error,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

enum Flow {
    Next,
    /// The remaining steps ran elsewhere (in a child, on another thread).
    Stop,
}

struct State {
    fd: Option<OwnedFd>,
    /// The fds of `hold-many` and `keep`, kept open so that their locks stay held.
    many: Vec<OwnedFd>,
}

impl State {
    fn fd(&self) -> Result<RawFd> {
        self.fd
            .as_ref()
            .map(|fd| fd.as_raw_fd())
            .ok_or_else(|| anyhow!("no open file: use open:PATH first"))
    }

    /// Runs `steps` in order; exits the process with 1 on the first that fails.
    fn run_steps(&mut self, steps: &[String]) {
        for (index, step) in steps.iter().enumerate() {
            match self.run(step, &steps[index + 1..]) {
                Ok(Flow::Next) => report(step, true, None),
                Ok(Flow::Stop) => return,
                Err(err) => {
                    report(step, false, Some(&format!("{err:#}")));
                    exit(1);
                }
            }
        }
    }

    fn run(&mut self, step: &str, rest: &[String]) -> Result<Flow> {
        let parts: Vec<&str> = step.split(':').collect();
        match parts.as_slice() {
            ["open", path @ ..] => {
                let path = path.join(":");
                let fd = open(
                    path.as_str(),
                    OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .with_context(|| format!("open {path}"))?;
                self.fd = Some(fd);
            }
            ["close"] => {
                self.fd.take().ok_or_else(|| anyhow!("no open file"))?;
            }
            ["keep"] => {
                let fd = self.fd.take().ok_or_else(|| anyhow!("no open file"))?;
                self.many.push(fd);
            }
            ["memfd", name] => {
                let fd =
                    nix::sys::memfd::memfd_create(*name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                        .with_context(|| format!("memfd_create {name}"))?;
                self.fd = Some(fd);
            }
            ["unlink", path @ ..] => {
                let path = path.join(":");
                std::fs::remove_file(&path).with_context(|| format!("unlink {path}"))?;
            }
            ["rename", from, to] => {
                std::fs::rename(from, to).with_context(|| format!("rename {from} {to}"))?;
            }
            ["flock", how, options @ ..] => {
                let nonblocking = options.contains(&"nb");
                let arg = match (*how, nonblocking) {
                    ("ex", false) => FlockArg::LockExclusive,
                    ("ex", true) => FlockArg::LockExclusiveNonblock,
                    ("sh", false) => FlockArg::LockShared,
                    ("sh", true) => FlockArg::LockSharedNonblock,
                    ("un", _) => FlockArg::Unlock,
                    _ => bail!("flock wants ex, sh or un"),
                };
                #[allow(deprecated)]
                match nix::fcntl::flock(self.fd()?, arg) {
                    Err(nix::errno::Errno::EINTR) if options.contains(&"go-on") => {}
                    result => result?,
                }
            }
            [family @ ("posix" | "ofd"), how, start, len, options @ ..] => {
                let lock = flock_struct(how, start, len)?;
                let wait = options.contains(&"wait");
                let fd = self.fd.as_ref().ok_or_else(|| anyhow!("no open file"))?;
                let borrowed = fd.as_fd();
                match (*family, wait) {
                    ("posix", false) => fcntl(borrowed, FcntlArg::F_SETLK(&lock))?,
                    ("posix", true) => fcntl(borrowed, FcntlArg::F_SETLKW(&lock))?,
                    ("ofd", false) => fcntl(borrowed, FcntlArg::F_OFD_SETLK(&lock))?,
                    _ => fcntl(borrowed, FcntlArg::F_OFD_SETLKW(&lock))?,
                };
            }
            ["random-ranges", seed, count] => {
                let fd = self.fd.as_ref().ok_or_else(|| anyhow!("no open file"))?;
                random_ranges(fd.as_fd(), seed.parse()?, count.parse()?)?;
            }
            ["getlk", start, len] => {
                let mut lock = flock_struct("w", start, len)?;
                let fd = self.fd.as_ref().ok_or_else(|| anyhow!("no open file"))?;
                fcntl(fd.as_fd(), FcntlArg::F_GETLK(&mut lock))?;
            }
            ["lease", how] => {
                let lease = match *how {
                    "r" => libc::F_RDLCK,
                    "w" => libc::F_WRLCK,
                    "u" => libc::F_UNLCK,
                    _ => bail!("lease wants r, w or u"),
                };
                // SAFETY: F_SETLEASE takes an integer argument.
                if unsafe { libc::fcntl(self.fd()?, libc::F_SETLEASE, lease) } < 0 {
                    return Err(std::io::Error::last_os_error()).context("F_SETLEASE");
                }
            }
            ["hold-many", dir @ .., count] => {
                let dir = dir.join(":");
                let count: usize = count.parse()?;
                self.many.extend(hold_many(&dir, count)?);
            }
            ["sleep", seconds] => std::thread::sleep(Duration::from_secs_f64(seconds.parse()?)),
            ["alarm", seconds] => {
                use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
                extern "C" fn on_alarm(_: libc::c_int) {}
                // Without SA_RESTART, the signal ends a blocking call with EINTR: a waiter that
                // gives up, as `flock -w` does.
                let action = SigAction::new(
                    SigHandler::Handler(on_alarm),
                    SaFlags::empty(),
                    SigSet::empty(),
                );
                // SAFETY: the handler does nothing, which is async-signal-safe.
                unsafe { sigaction(Signal::SIGALRM, &action) }?;
                // SAFETY: alarm(2) has no memory effects.
                unsafe { libc::alarm(seconds.parse()?) };
            }
            ["churn", dir, count] => churn(dir, count.parse()?, false)?,
            ["churn", dir, count, "pids"] => churn(dir, count.parse()?, true)?,
            ["hold-in-child", seconds] => {
                let seconds: f64 = seconds.parse()?;
                // SAFETY: single-threaded; the child only sleeps and exits.
                if let ForkResult::Child = unsafe { fork() }? {
                    report("holder", true, None);
                    std::thread::sleep(Duration::from_secs_f64(seconds));
                    // SAFETY: _exit leaves at once, without running the parent's atexit work.
                    unsafe { libc::_exit(0) };
                }
            }
            ["sendfd", socket @ ..] => {
                let stream = UnixStream::connect(socket.join(":")).context("connect")?;
                let fds = [self.fd()?];
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[std::io::IoSlice::new(b"x")],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )?;
            }
            ["recvfd", socket @ ..] => {
                let path = socket.join(":");
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path).context("bind")?;
                report("listening", true, None);
                let (stream, _) = listener.accept()?;
                let mut byte = [0u8; 1];
                let mut iov = [std::io::IoSliceMut::new(&mut byte)];
                let mut space = nix::cmsg_space!([RawFd; 1]);
                let msg = recvmsg::<()>(
                    stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::empty(),
                )?;
                let received = msg
                    .cmsgs()?
                    .find_map(|cmsg| match cmsg {
                        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    })
                    .ok_or_else(|| anyhow!("no fd received"))?;
                // SAFETY: the kernel just installed this fd for us.
                self.fd = Some(unsafe { OwnedFd::from_raw_fd(received) });
            }
            ["pidns"] => return enter_pid_namespace(rest),
            ["mountns", source, target] => enter_mount_namespace(source, target)?,
            ["fork"] => {
                // SAFETY: any other thread of this process is waiting for this one (`in-thread`)
                // and holds no lock the child could need.
                match unsafe { fork() }? {
                    ForkResult::Child => {
                        report("forked", true, None);
                        self.run_steps(rest);
                        // SAFETY: leaves at once, as the child of a fork should.
                        unsafe { libc::_exit(0) };
                    }
                    ForkResult::Parent { child } => match waitpid(child, None)? {
                        WaitStatus::Exited(_, 0) => return Ok(Flow::Stop),
                        other => bail!("the forked child ended with {other:?}"),
                    },
                }
            }
            ["in-thread"] => {
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            report(step, true, None);
                            self.run_steps(rest);
                        })
                        .join()
                        .map_err(|_| anyhow!("the thread panicked"))
                })?;
                return Ok(Flow::Stop);
            }
            ["threads", count] => {
                let count: usize = count.parse()?;
                for batch in (0..count).step_by(100) {
                    let threads: Vec<_> = (batch..count.min(batch + 100))
                        .map(|_| std::thread::spawn(|| {}))
                        .collect();
                    for thread in threads {
                        thread.join().map_err(|_| anyhow!("a thread panicked"))?;
                    }
                }
            }
            ["fork-reap", count] => {
                for _ in 0..count.parse::<u32>()? {
                    // SAFETY: the child exits at once.
                    match unsafe { fork() }? {
                        // SAFETY: as above.
                        ForkResult::Child => unsafe { libc::_exit(0) },
                        ForkResult::Parent { child } => {
                            waitpid(child, None)?;
                        }
                    }
                }
            }
            ["wait-stdin"] => {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
            }
            ["loop", count, family] => {
                let count: u64 = count.parse()?;
                let fd = self.fd.as_ref().ok_or_else(|| anyhow!("no open file"))?;
                lock_loop(fd.as_fd(), count, family)?;
            }
            ["rate", events_per_sec, seconds, family, threads @ ..] => {
                let threads = match threads {
                    [] => 1,
                    [threads] => threads.parse()?,
                    _ => bail!("rate wants EVENTS:SECONDS:FAMILY[:THREADS]"),
                };
                let fd = self.fd.as_ref().ok_or_else(|| anyhow!("no open file"))?;
                paced_locks(
                    fd.as_fd(),
                    events_per_sec.parse()?,
                    seconds.parse()?,
                    family,
                    threads,
                )?;
            }
            ["exit", code] => exit(code.parse()?),
            _ => bail!("unknown step {step:?}"),
        }
        Ok(Flow::Next)
    }
}

fn flock_struct(how: &str, start: &str, len: &str) -> Result<libc::flock> {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = match how {
        "w" => libc::F_WRLCK,
        "r" => libc::F_RDLCK,
        "u" => libc::F_UNLCK,
        _ => bail!("lock type must be w, r or u"),
    } as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    lock.l_start = start.parse()?;
    lock.l_len = len.parse()?;
    Ok(lock)
}

fn hold_many(dir: &str, count: usize) -> Result<Vec<OwnedFd>> {
    make_room_for_fds(count)?;
    let write = flock_struct("w", "0", "0")?;
    let pid = getpid();
    (0..count)
        .map(|index| {
            let path = format!("{dir}/{pid}-{index}");
            let fd = open(
                path.as_str(),
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .with_context(|| format!("open {path}"))?;
            match index % 3 {
                0 => {
                    #[allow(deprecated)]
                    nix::fcntl::flock(fd.as_raw_fd(), FlockArg::LockExclusiveNonblock)?;
                }
                1 => {
                    fcntl(fd.as_fd(), FcntlArg::F_SETLK(&write))?;
                }
                _ => {
                    fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&write))?;
                }
            }
            Ok(fd)
        })
        .collect()
}

fn lock_loop(fd: std::os::fd::BorrowedFd<'_>, count: u64, family: &str) -> Result<()> {
    let write = flock_struct("w", "0", "0")?;
    let unlock = flock_struct("u", "0", "0")?;
    for pair in 0..count {
        match family {
            "flock" => {
                #[allow(deprecated)]
                nix::fcntl::flock(fd.as_raw_fd(), FlockArg::LockExclusive)?;
                #[allow(deprecated)]
                nix::fcntl::flock(fd.as_raw_fd(), FlockArg::Unlock)?;
            }
            "posix" => {
                fcntl(fd, FcntlArg::F_SETLK(&write))?;
                fcntl(fd, FcntlArg::F_SETLK(&unlock))?;
            }
            "ofd" => {
                fcntl(fd, FcntlArg::F_OFD_SETLK(&write))?;
                fcntl(fd, FcntlArg::F_OFD_SETLK(&unlock))?;
            }
            "posix-bytes" => {
                let byte = (pair % 1024) as libc::off_t;
                let on_byte = |lock: libc::flock| libc::flock {
                    l_start: byte,
                    l_len: 1,
                    ..lock
                };
                fcntl(fd, FcntlArg::F_SETLK(&on_byte(write)))?;
                fcntl(fd, FcntlArg::F_SETLK(&on_byte(unlock)))?;
            }
            "posix-sqlite" => sqlite_transaction(fd)?,
            _ => bail!("loop family must be flock, posix, ofd, posix-sqlite or posix-bytes"),
        }
    }
    Ok(())
}

/// The POSIX locks of one SQLite write transaction on its database (os_unix.c): a shared lock
/// (a read lock on the pending byte, one on the shared range, the pending byte released), the
/// reserved byte, the exclusive lock (the shared range made a write lock, which the kernel
/// merges with the reserved byte), then everything unlocked. Three holds: the pending byte's,
/// the shared range's read lock, the write lock.
fn sqlite_transaction(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    const PENDING: libc::off_t = 0x4000_0000;
    let range = |how: &str, start: libc::off_t, len: libc::off_t| -> Result<libc::flock> {
        flock_struct(how, &start.to_string(), &len.to_string())
    };
    let (reserved, shared) = (PENDING + 1, PENDING + 2);
    for lock in [
        range("r", PENDING, 1)?,
        range("r", shared, 510)?,
        range("u", PENDING, 1)?,
        range("w", reserved, 1)?,
        range("w", shared, 510)?,
        range("u", 0, 0)?,
    ] {
        fcntl(fd, FcntlArg::F_SETLK(&lock))?;
    }
    Ok(())
}

/// Random POSIX calls from a seeded xorshift generator, so that a test can replay them.
fn random_ranges(fd: std::os::fd::BorrowedFd<'_>, seed: u64, count: u32) -> Result<()> {
    let mut state = seed.max(1);
    let mut next = |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut out = std::io::stdout().lock();
    for _ in 0..count {
        let how = ["w", "w", "r", "r", "u"][next(5) as usize];
        let start = next(256);
        // One call in twenty reaches to the end of the file.
        let len = if next(20) == 0 { 0 } else { 1 + next(40) };
        let call = format!("{how}:{start}:{len}");
        let lock = flock_struct(how, &start.to_string(), &len.to_string())?;
        let errno = match fcntl(fd, FcntlArg::F_SETLK(&lock)) {
            Ok(_) => None,
            Err(errno @ (nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES)) => Some(errno),
            Err(errno) => return Err(errno).with_context(|| format!("F_SETLK {call}")),
        };
        let line = serde_json::json!({
            "call": call,
            "ok": errno.is_none(),
            "errno": errno.map(|errno| format!("{errno:?}")),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// Lock/unlock pairs at a fixed total rate of lock events (two per pair), split over threads
/// that share the fd: each does a batch, then sleeps until the clock says the next one is due,
/// so a thread that falls behind runs flat out and the achieved rate shows it.
fn paced_locks(
    fd: std::os::fd::BorrowedFd<'_>,
    events_per_sec: f64,
    seconds: f64,
    family: &str,
    threads: u32,
) -> Result<()> {
    if events_per_sec <= 0.0 || seconds <= 0.0 || threads == 0 {
        bail!("rate wants a positive rate, duration and thread count");
    }
    let pairs_per_sec = events_per_sec / 2.0 / f64::from(threads);
    let pairs_per_thread = (pairs_per_sec * seconds).round() as u64;
    let batch = ((pairs_per_sec / 1000.0).round() as u64).max(1);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> Result<()> {
                    let mut done = 0;
                    while done < pairs_per_thread {
                        let count = batch.min(pairs_per_thread - done);
                        lock_loop(fd, count, family)?;
                        done += count;
                        let due = started + Duration::from_secs_f64(done as f64 / pairs_per_sec);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().map_err(|_| anyhow!("a thread panicked"))?)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let pairs = pairs_per_thread * u64::from(threads);
    let line = serde_json::json!({"rate": {
        "pairs": pairs,
        "threads": threads,
        "seconds": elapsed,
        "events_per_sec": (2 * pairs) as f64 / elapsed,
    }});
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// `unshare -p -f --mount-proc`, then the remaining steps in the namespace's first child.
fn enter_mount_namespace(source: &str, target: &str) -> Result<()> {
    use nix::{
        mount::{MsFlags, mount},
        sched::{CloneFlags, unshare},
    };
    unshare(CloneFlags::CLONE_NEWNS).context("unshare")?;
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .context("make / private")?;
    mount::<str, str, str, str>(Some(source), target, None, MsFlags::MS_BIND, None)
        .with_context(|| format!("bind {source} on {target}"))
}

fn enter_pid_namespace(rest: &[String]) -> Result<Flow> {
    use nix::{
        mount::{MsFlags, mount},
        sched::{CloneFlags, unshare},
    };
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS).context("unshare")?;
    // SAFETY: single-threaded.
    match unsafe { fork() }? {
        ForkResult::Child => {
            mount::<str, str, str, str>(
                None,
                "/",
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )
            .context("make / private")?;
            mount::<str, str, str, str>(
                Some("proc"),
                "/proc",
                Some("proc"),
                MsFlags::empty(),
                None,
            )
            .context("mount /proc")?;
            report("pidns", true, None);
            // As the namespace's init, run the steps in a child and reap every process that
            // ends up here, so that holders left behind keep running until they finish.
            let mut steps = std::process::Command::new(std::env::current_exe()?)
                .args(rest)
                .spawn()?;
            let code = steps.wait()?.code().unwrap_or(1);
            while waitpid(None, None).is_ok() {}
            exit(code);
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None)?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(Flow::Stop),
                other => bail!("namespace child ended with {other:?}"),
            }
        }
    }
}

/// Raises RLIMIT_NOFILE for `count` more fds: both limits where the caller may (root with
/// CAP_SYS_RESOURCE, as in a VM's init), else the soft limit up to the hard one.
fn make_room_for_fds(count: usize) -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let wanted = count as u64 + 64;
    if soft >= wanted {
        return Ok(());
    }
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted.max(hard)).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

/// Job runners' lock files: each job a process of its own that creates, locks and deletes its
/// file, then exits, so the kernel hands freed inode numbers to the next jobs.
fn churn(dir: &str, count: usize, report_pids: bool) -> Result<()> {
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    for index in 0..count {
        let path = format!("{dir}/job-{index}");
        // SAFETY: single-threaded; the child only makes system calls and exits.
        match unsafe { fork() }? {
            ForkResult::Child => {
                let ok = open(
                    path.as_str(),
                    OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .and_then(|fd| {
                    nix::fcntl::Flock::lock(fd, FlockArg::LockExclusive).map_err(|(_, err)| err)
                })
                .and_then(|locked| {
                    nix::unistd::unlink(path.as_str())?;
                    // The lock goes with the process: released at its exit, as a job's is.
                    std::mem::forget(locked);
                    Ok(())
                })
                .is_ok();
                // SAFETY: _exit leaves at once, without running the parent's atexit work.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            ForkResult::Parent { child } => {
                match waitpid(child, None)? {
                    WaitStatus::Exited(_, 0) => {}
                    other => bail!("job {index} ended with {other:?}"),
                }
                if report_pids {
                    let line = serde_json::json!({"job": index, "pid": child.as_raw()});
                    writeln!(out, "{line}")?;
                }
            }
        }
    }
    let line = serde_json::json!({
        "churn": {"jobs": count, "seconds": started.elapsed().as_secs_f64()}
    });
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
