//! Windows of a log file mapped into memory, read in place rather than copied into buffers:
//! each read of a plain file is a copy by the kernel, and the queries that read a log twice
//! spent a quarter of their time there.
//!
//! A mapped file that shrinks under the reader (a log truncated in place, `copytruncate`)
//! would kill it with SIGBUS at the first page past the new end. The handler installed here
//! maps a page of zeros over such a page of a window and marks the window torn, so that the
//! read goes on and its end is told as cut short: zeros, like a torn write, are no line.

use std::{
    fs::File,
    ops::Deref,
    sync::{
        Once,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use memmap2::{Mmap, MmapOptions};

/// Windows mapped at once, by every read in the process: each read maps at most its jobs and
/// two more.
const SLOTS: usize = 256;

/// Where a window is, for the SIGBUS handler: `start == 0` is a free slot.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    torn: AtomicBool,
}

static WINDOWS: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        torn: AtomicBool::new(false),
    }
}; SLOTS];

/// `len` bytes of a file from `offset`, readable as a slice while the window lives.
pub struct Window {
    map: Mmap,
    /// Its slot in `WINDOWS`, None if every slot was taken (a SIGBUS then kills).
    slot: Option<usize>,
}

impl Window {
    pub fn map(file: &File, offset: u64, len: usize) -> std::io::Result<Self> {
        install_handler();
        // SAFETY: the mapping is read only, and the pages past a shrunk file's end are made
        // readable by the SIGBUS handler once the window is registered below, before any read.
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file)? };
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::Sequential);
        let (start, end) = (map.as_ptr() as usize, map.as_ptr() as usize + map.len());
        let slot = (start != 0).then(|| register(start, end)).flatten();
        Ok(Self { map, slot })
    }

    /// Whether a page of it was past the end of the file when read (and read as zeros).
    pub fn torn(&self) -> bool {
        self.slot
            .is_some_and(|slot| WINDOWS[slot].torn.load(Ordering::Acquire))
    }
}

impl Deref for Window {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let slot = &WINDOWS[slot];
            slot.end.store(0, Ordering::Release);
            slot.torn.store(false, Ordering::Release);
            slot.start.store(0, Ordering::Release);
        }
    }
}

fn register(start: usize, end: usize) -> Option<usize> {
    WINDOWS.iter().position(|slot| {
        if slot
            .start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        slot.torn.store(false, Ordering::Release);
        slot.end.store(end, Ordering::Release);
        true
    })
}

fn install_handler() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler and SA_SIGINFO is a valid one; the handler
        // only reads atomics and makes one system call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                on_sigbus;
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

/// A read past the end of a shrunk file: a page of zeros in its place, and the window torn.
/// Any other SIGBUS is given its default action (the process dies, as it would have).
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    let window = WINDOWS.iter().find(|slot| {
        let start = slot.start.load(Ordering::Acquire);
        start != 0 && (start..slot.end.load(Ordering::Acquire)).contains(&address)
    });
    // SAFETY: sysconf, mmap and signal are system calls, safe in a signal handler; the page
    // replaced is in a window this process mapped read only and reads no other way.
    unsafe {
        if let Some(window) = window {
            let page_size = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let page = address & !(page_size - 1);
            let zeros = libc::mmap(
                page as *mut libc::c_void,
                page_size,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if zeros != libc::MAP_FAILED {
                window.torn.store(true, Ordering::Release);
                return;
            }
        }
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_window_is_the_files_bytes() {
        let mut file = tempfile();
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|n| format!("{n}\n").into_bytes())
            .collect();
        file.write_all(&text).unwrap();
        let window = Window::map(&file, 5_001, 30_000).unwrap();
        assert_eq!(&window[..], &text[5_001..35_001]);
        assert!(!window.torn());
    }

    #[test]
    fn a_file_cut_short_under_its_window_reads_as_zeros_past_its_end() {
        let mut file = tempfile();
        let page = 4096 * 16;
        file.write_all(&vec![b'x'; page * 4]).unwrap();
        let window = Window::map(&file, 0, page * 4).unwrap();
        file.set_len(page as u64).unwrap();
        assert!(window[..page].iter().all(|&byte| byte == b'x'));
        assert!(window[page * 2..].iter().all(|&byte| byte == 0));
        assert!(window.torn());
        drop(window);
        let whole = Window::map(&file, 0, page).unwrap();
        assert!(!whole.torn(), "a slot freed starts untorn");
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "aimlock-mapped-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
