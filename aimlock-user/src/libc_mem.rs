//! The static release's `memcmp` and `bcmp`, and on x86_64 its `memcpy` for up to 512 bytes
//! and `memmove` for up to 256.
//!
//! musl's x86_64 `memcpy` moves the bytes before an 8-byte boundary and after the last one with
//! one `movsb` instruction each, around a `rep movsq`: a dozen microcoded instructions for a
//! copy of a few bytes, where glibc's takes two loads and two stores; its `memcmp` (and `bcmp`,
//! which calls it) compares a byte at a time, on every architecture. The tracer and the report
//! copy small values all the time (events, lines, the strings of a JSON line) and compare keys
//! of a few dozen bytes: with musl's functions the tracer took 2.5 times the CPU of the glibc
//! build for the same SQLite workload. The linker sends every call of these functions (Rust's,
//! mimalloc's and musl's own) to the `__wrap_` functions here (`--wrap`, see build.rs); longer
//! copies go on to musl's (`__real_`), whose `rep movsq` is fast on them. Its start-up is not
//! on a few hundred bytes (the tracer's events and lines): up to twice [`COPIED_HERE`], a
//! `memcpy`, whose ranges are apart, copies both ends here.
//!
//! No loop here copies bytes: the compiler makes such a loop a call of `memcpy`, which would
//! come back here.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};

/// Copies up to this many bytes here: sixteen 16-byte registers.
#[cfg(target_arch = "x86_64")]
const COPIED_HERE: usize = 256;

/// Copies `len` bytes from `src` to `dst`, reading all before writing any, so that the ranges
/// may overlap; false if `len` is over [`COPIED_HERE`], and nothing is copied. Two loads that
/// overlap in the middle cover any length from one width to twice it.
///
/// # Safety
/// `src` is readable and `dst` writable for `len` bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> bool {
    // SAFETY: every load and store below is within the first `len` bytes of its range.
    unsafe {
        let load = |at: usize| _mm_loadu_si128(src.add(at).cast::<__m128i>());
        let store = |at: usize, value| _mm_storeu_si128(dst.add(at).cast::<__m128i>(), value);
        // Sixteen-byte words from the front, then as many ending at `len`: all read, then
        // all written.
        macro_rules! halves {
            ($($at:literal)*) => {{
                let front = [$(load($at)),*];
                let back = [$(load(len - 16 - $at)),*];
                let mut word = 0;
                $(
                    store($at, front[word]);
                    store(len - 16 - $at, back[word]);
                    word += 1;
                )*
                let _ = word;
            }};
        }
        if len > COPIED_HERE {
            return false;
        } else if len > 128 {
            halves!(0 16 32 48 64 80 96 112);
        } else if len > 64 {
            halves!(0 16 32 48);
        } else if len > 32 {
            halves!(0 16);
        } else if len >= 16 {
            halves!(0);
        } else if len >= 8 {
            let (a, b) = (read::<u64>(src, 0), read::<u64>(src, len - 8));
            write(dst, 0, a);
            write(dst, len - 8, b);
        } else if len >= 4 {
            let (a, b) = (read::<u32>(src, 0), read::<u32>(src, len - 4));
            write(dst, 0, a);
            write(dst, len - 4, b);
        } else if len >= 2 {
            let (a, b) = (read::<u16>(src, 0), read::<u16>(src, len - 2));
            write(dst, 0, a);
            write(dst, len - 2, b);
        } else if len == 1 {
            *dst = *src;
        }
    }
    true
}

/// As [`copy`], for ranges that are apart (`memcpy`'s) and up to twice as long: the first
/// [`COPIED_HERE`] bytes and the last, which overlap in the middle.
///
/// # Safety
/// `src` is readable and `dst` writable for `len` bytes, and the ranges do not overlap.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy_apart(dst: *mut u8, src: *const u8, len: usize) -> bool {
    // SAFETY: as the caller says; both halves are within the first `len` bytes.
    unsafe {
        if len <= COPIED_HERE {
            return copy(dst, src, len);
        }
        if len > 2 * COPIED_HERE {
            return false;
        }
        let tail = len - COPIED_HERE;
        copy(dst, src, COPIED_HERE) && copy(dst.add(tail), src.add(tail), COPIED_HERE)
    }
}

/// # Safety
/// `src + at` is readable for a `T`.
#[inline(always)]
unsafe fn read<T>(src: *const u8, at: usize) -> T {
    // SAFETY: as the caller says.
    unsafe { src.add(at).cast::<T>().read_unaligned() }
}

/// # Safety
/// `dst + at` is writable for a `T`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn write<T>(dst: *mut u8, at: usize, value: T) {
    // SAFETY: as the caller says.
    unsafe { dst.add(at).cast::<T>().write_unaligned(value) }
}

/// As C's `memcmp`: 0 if the bytes are equal, else less or more than 0 as the first byte that
/// differs is, unsigned, in `a` than in `b`. Eight bytes at a time; the last eight of a length
/// over eight overlap those before (equal, they order nothing).
///
/// # Safety
/// `a` and `b` are readable for `len` bytes.
#[inline(always)]
unsafe fn compare(a: *const u8, b: *const u8, len: usize) -> i32 {
    // Read as big-endian numbers, two words order as their first bytes that differ.
    let order = |x: u64, y: u64| {
        if u64::from_be(x) < u64::from_be(y) {
            -1
        } else {
            1
        }
    };
    // SAFETY: every read below is within the first `len` bytes of `a` and `b`.
    unsafe {
        if len < 8 {
            if len >= 4 {
                let word = |at, from| u64::from(read::<u32>(from, at));
                let (x, y) = (
                    word(0, a) | word(len - 4, a) << 32,
                    word(0, b) | word(len - 4, b) << 32,
                );
                return if x == y { 0 } else { order(x, y) };
            }
            for at in 0..len {
                let (x, y) = (*a.add(at), *b.add(at));
                if x != y {
                    return i32::from(x) - i32::from(y);
                }
            }
            return 0;
        }
        let mut at = 0;
        while at < len {
            // The last word ends at `len`.
            let from = at.min(len - 8);
            let (x, y) = (read::<u64>(a, from), read::<u64>(b, from));
            if x != y {
                return order(x, y);
            }
            at += 8;
        }
    }
    0
}

#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
mod copies {
    unsafe extern "C" {
        fn __real_memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8;
        fn __real_memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8;
    }

    /// # Safety
    /// As C's `memcpy`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn __wrap_memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
        // SAFETY: as the caller of `memcpy` says.
        unsafe {
            if !super::copy_apart(dst, src, len) {
                __real_memcpy(dst, src, len);
            }
        }
        dst
    }

    /// # Safety
    /// As C's `memmove`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn __wrap_memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
        // SAFETY: as the caller of `memmove` says.
        unsafe {
            if !super::copy(dst, src, len) {
                __real_memmove(dst, src, len);
            }
        }
        dst
    }
}

#[cfg(target_env = "musl")]
mod comparisons {
    /// # Safety
    /// As C's `memcmp`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn __wrap_memcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
        // SAFETY: as the caller of `memcmp` says.
        unsafe { super::compare(a, b, len) }
    }

    /// # Safety
    /// As C's `bcmp`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn __wrap_bcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
        // SAFETY: as the caller of `bcmp` says.
        unsafe { super::compare(a, b, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of distinct bytes.
    fn numbered(len: usize) -> Vec<u8> {
        (0..len).map(|index| (index * 7 + 3) as u8).collect()
    }

    /// Checks that `copy` copies exactly `len` bytes between buffers apart, for every length up
    /// to `longest`, from several alignments, and leaves a longer copy to musl's.
    #[cfg(target_arch = "x86_64")]
    fn copies_exactly(copy: unsafe fn(*mut u8, *const u8, usize) -> bool, longest: usize) {
        for len in 0..=longest {
            for offset in [0, 1, 7, 15] {
                let src = numbered(offset + len + 32);
                let mut dst = vec![0xaa; offset + len + 32];
                // SAFETY: both buffers hold `offset + len` bytes and more, and are apart.
                let copied =
                    unsafe { copy(dst.as_mut_ptr().add(offset), src.as_ptr().add(offset), len) };
                assert!(copied);
                assert_eq!(
                    dst[offset..offset + len],
                    src[offset..offset + len],
                    "len {len}"
                );
                assert!(dst[..offset].iter().all(|&byte| byte == 0xaa), "len {len}");
                assert!(
                    dst[offset + len..].iter().all(|&byte| byte == 0xaa),
                    "len {len}"
                );
            }
        }
        // SAFETY: nothing is read or written: the copy is left to musl's.
        assert!(!unsafe { copy(std::ptr::null_mut(), std::ptr::null(), longest + 1) });
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_length_copies_exactly_its_bytes() {
        copies_exactly(copy, COPIED_HERE);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn copies_of_ranges_apart_copy_exactly_their_bytes_up_to_twice_the_length() {
        copies_exactly(copy_apart, 2 * COPIED_HERE);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn overlapping_copies_move_the_bytes_as_memmove_does() {
        for len in 0..=COPIED_HERE {
            for shift in [1, 3, 8, 16, 33, 64] {
                for forward in [true, false] {
                    let original = numbered(len + shift);
                    let mut buffer = original.clone();
                    let (from, to) = if forward { (0, shift) } else { (shift, 0) };
                    let base = buffer.as_mut_ptr();
                    // SAFETY: both ranges are within `buffer`.
                    let copied = unsafe { copy(base.add(to), base.add(from), len) };
                    assert!(copied);
                    let mut expected = original.clone();
                    expected.copy_within(from..from + len, to);
                    assert_eq!(
                        buffer, expected,
                        "len {len} shift {shift} forward {forward}"
                    );
                }
            }
        }
        // SAFETY: nothing is read or written: the move is left to musl's.
        let moved = unsafe { copy(std::ptr::null_mut(), std::ptr::null(), COPIED_HERE + 1) };
        assert!(!moved);
    }

    #[test]
    fn comparisons_order_as_memcmp_does() {
        for len in 0..=40 {
            let a = numbered(len);
            // SAFETY: both hold `len` bytes.
            assert_eq!(unsafe { compare(a.as_ptr(), a.clone().as_ptr(), len) }, 0);
            for differ in 0..len {
                for (x, y) in [(0x10, 0x90), (0x90, 0x10), (0x7f, 0x80)] {
                    let (mut left, mut right) = (a.clone(), a.clone());
                    left[differ] = x;
                    right[differ] = y;
                    // Bytes after the first difference, ordered the other way, change nothing.
                    if len - 1 > differ {
                        left[len - 1] = 0xff - x;
                        right[len - 1] = 0xff - y;
                    }
                    // SAFETY: both hold `len` bytes.
                    let told = unsafe { compare(left.as_ptr(), right.as_ptr(), len) };
                    assert_eq!(
                        told.signum(),
                        left.cmp(&right) as i32,
                        "len {len}, differing at {differ}: {x:#x} against {y:#x}"
                    );
                }
            }
        }
    }
}
