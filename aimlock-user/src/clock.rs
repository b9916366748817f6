//! Kernel timestamps (CLOCK_MONOTONIC) as wall-clock time.

use std::time::{Duration, UNIX_EPOCH};

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
pub struct Clock {
    /// realtime - monotonic, in nanoseconds, measured once at start.
    offset_ns: i128,
    /// The last second formatted and its "YYYY-MM-DDTHH:MM:SS" text: a burst of events in one
    /// second formats the date once.
    second: std::cell::RefCell<(u64, String)>,
}

impl Clock {
    pub fn new() -> Self {
        let monotonic = Self::read(libc::CLOCK_MONOTONIC);
        let realtime = Self::read(libc::CLOCK_REALTIME);
        Self {
            offset_ns: i128::from(realtime) - i128::from(monotonic),
            second: std::cell::RefCell::new((u64::MAX, String::new())),
        }
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

    /// CLOCK_MONOTONIC, the kernel programs' clock (bpf_ktime_get_ns), in nanoseconds.
    pub fn read_monotonic() -> u64 {
        Self::read(libc::CLOCK_MONOTONIC)
    }

    fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns).max(0) as u64
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
}
