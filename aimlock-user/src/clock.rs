//! Kernel timestamps (CLOCK_MONOTONIC) as wall-clock time.

use std::{
    cell::{Cell, RefCell},
    time::{Duration, UNIX_EPOCH},
};

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
///
/// The wall clock moves against the monotonic one when it is stepped (an NTP step,
/// settimeofday) and across a suspend, which the monotonic clock does not count: the offset
/// between them is measured again on every [`Clock::refresh`].
pub struct Clock {
    /// realtime - monotonic, in nanoseconds.
    offset_ns: Cell<i128>,
    /// The last second formatted and its "YYYY-MM-DDTHH:MM:SS" text: a burst of events in one
    /// second formats the date once. Keyed by the wall-clock second, so it stays right when the
    /// offset changes.
    second: RefCell<(u64, String)>,
}

/// A measurement is only trusted when the monotonic reads around it were this close: a reader
/// preempted in between measures garbage.
const MEASURE_WINDOW_NS: i128 = 200_000;

/// Changes of the offset smaller than this are measurement noise (NTP slews both clocks
/// alike): taking them would make timestamps jitter. Larger than two measurement errors.
const STEP_NS: i128 = 1_000_000;

impl Clock {
    pub fn new() -> Self {
        // The tightest of a few measurements, however loose: a clock is needed now.
        let (offset_ns, _) = (1..5)
            .map(|_| Self::measure())
            .fold(
                Self::measure(),
                |best, next| if next.1 < best.1 { next } else { best },
            );
        Self {
            offset_ns: Cell::new(offset_ns),
            second: RefCell::new((u64::MAX, String::new())),
        }
    }

    /// Measures the offset again (two or three vDSO reads: cheap enough for every tick) and
    /// takes it when the wall clock was stepped.
    pub fn refresh(&self) {
        let (offset_ns, window) = Self::measure();
        if window <= MEASURE_WINDOW_NS {
            self.adopt(offset_ns);
        }
    }

    fn adopt(&self, offset_ns: i128) {
        if (offset_ns - self.offset_ns.get()).abs() >= STEP_NS {
            self.offset_ns.set(offset_ns);
        }
    }

    /// realtime - monotonic, from a realtime read between two monotonic reads, and the time
    /// between those two (twice the largest error).
    fn measure() -> (i128, i128) {
        let before = i128::from(Self::read(libc::CLOCK_MONOTONIC));
        let realtime = i128::from(Self::read(libc::CLOCK_REALTIME));
        let after = i128::from(Self::read(libc::CLOCK_MONOTONIC));
        (realtime - (before + after) / 2, after - before)
    }

    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes a timespec; these clocks always exist.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    pub fn monotonic_now(&self) -> u64 {
        Self::read_monotonic()
    }

    /// When this machine booted, as nanoseconds since the Unix epoch: the wall clock less
    /// CLOCK_BOOTTIME, the clock of processes' start times (`procfs::start_time`).
    pub fn boot_unix_ns() -> u64 {
        let boot = Self::read(libc::CLOCK_BOOTTIME);
        Self::read(libc::CLOCK_REALTIME).saturating_sub(boot)
    }

    /// CLOCK_MONOTONIC, the kernel programs' clock (bpf_ktime_get_ns), in nanoseconds.
    pub fn read_monotonic() -> u64 {
        Self::read(libc::CLOCK_MONOTONIC)
    }

    fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns.get()).max(0) as u64
    }

    /// RFC 3339, UTC, nanoseconds: the same text as [`rfc3339`], faster.
    pub fn format(&self, monotonic_ns: u64) -> String {
        let unix_ns = self.unix_ns(monotonic_ns);
        let (seconds, nanos) = (unix_ns / 1_000_000_000, unix_ns % 1_000_000_000);
        let mut cache = self.second.borrow_mut();
        if cache.0 != seconds {
            let whole = UNIX_EPOCH + Duration::from_secs(seconds);
            *cache = (
                seconds,
                humantime::format_rfc3339_seconds(whole).to_string(),
            );
            cache.1.pop(); // the 'Z'
        }
        let mut text = String::with_capacity(31);
        text.push_str(&cache.1);
        text.push('.');
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(nanos);
        for _ in digits.len()..9 {
            text.push('0');
        }
        text.push_str(digits);
        text.push('Z');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::rfc3339;
    use std::time::UNIX_EPOCH;

    #[test]
    fn fast_timestamps_match_humantime() {
        let clock = Clock::new();
        for monotonic in [0, 1, 999_999_999, 1_000_000_000, 123_456_789_012_345] {
            let unix = UNIX_EPOCH + Duration::from_nanos(clock.unix_ns(monotonic));
            assert_eq!(clock.format(monotonic), rfc3339(unix));
        }
    }

    #[test]
    fn a_stepped_wall_clock_is_picked_up() {
        let clock = Clock::new();
        let event = 5_000_000_000_123;
        let before = clock.format(event);
        // As if the wall clock had been set back an hour and a half second.
        let step = -(3_600_500_000_000_i128);
        clock.adopt(clock.offset_ns.get() + step);
        let after = clock.format(event);
        let expected = UNIX_EPOCH + Duration::from_nanos(clock.unix_ns(event));
        assert_eq!(after, rfc3339(expected));
        let parse = |text: &str| humantime::parse_rfc3339(text).unwrap();
        assert_eq!(
            parse(&before).duration_since(parse(&after)).unwrap(),
            Duration::from_nanos(3_600_500_000_000)
        );
    }

    #[test]
    fn measurement_noise_does_not_move_timestamps() {
        let clock = Clock::new();
        let offset = clock.offset_ns.get();
        clock.adopt(offset + STEP_NS - 1);
        assert_eq!(clock.offset_ns.get(), offset);
        clock.refresh();
        assert!((clock.offset_ns.get() - offset).abs() < STEP_NS);
    }
}
