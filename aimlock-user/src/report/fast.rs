//! Reading a line as the tracer writes it without serde: no whitespace, strings without
//! escapes, numbers as plain digits. Anything else (or any doubt) gives None, and serde_json
//! reads the line instead; a line this reads, serde_json reads the same (a test holds them
//! side by side on damaged and altered lines).

use std::borrow::Cow;

use crate::events::{LockKind, Mode, ReleaseReason};

use super::line::{RawLine, RawProc};

/// Nesting serde_json would still read in a skipped value.
const MAX_DEPTH: usize = 64;

pub fn raw_line(line: &[u8]) -> Option<RawLine<'_>> {
    let mut cursor = Cursor { bytes: line, at: 0 };
    let mut raw = RawLine {
        event: None,
        ts: "",
        host: None,
        pid: None,
        start_time: None,
        ns_pid: None,
        comm: None,
        kind: None,
        mode: None,
        dev: None,
        ino: None,
        path: None,
        host_path: None,
        start: None,
        end: None,
        wait_ns: None,
        held_ns: None,
        orphan_ns: None,
        reason: None,
        errno: None,
        holders: None,
        by: None,
        taker_exit: None,
        orphan: None,
        generation: None,
    };
    // Fields seen, by their bit: serde_json refuses a field given twice.
    let mut seen = 0u32;
    let mut has_ts = false;
    cursor.object(|cursor, key| {
        let bit = match key {
            b"event" => 0,
            b"ts" => 1,
            b"host" => 2,
            b"pid" => 3,
            b"ns_pid" => 4,
            b"comm" => 5,
            b"kind" => 6,
            b"mode" => 7,
            b"dev" => 8,
            b"ino" => 9,
            b"path" => 10,
            b"start" => 11,
            b"end" => 12,
            b"wait_ns" => 13,
            b"held_ns" => 14,
            b"orphan_ns" => 15,
            b"reason" => 16,
            b"errno" => 17,
            b"holders" => 18,
            b"by" => 19,
            b"taker_exit" => 20,
            b"orphan" => 21,
            b"generation" => 22,
            b"start_time" => 23,
            b"host_path" => 24,
            _ => return cursor.skip_field(key, 0),
        };
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        match key {
            b"event" => {
                raw.event = cursor.nullable(|c| {
                    c.string()
                        .map(|name| super::line::event_kind(name.as_bytes()))
                })?
            }
            b"ts" => {
                raw.ts = cursor.string()?;
                has_ts = true;
            }
            b"host" => raw.host = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            b"pid" => raw.pid = cursor.nullable(Cursor::u32)?,
            b"ns_pid" => raw.ns_pid = cursor.nullable(Cursor::u32)?,
            b"comm" => raw.comm = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            b"kind" => raw.kind = cursor.nullable(|c| c.string().and_then(kind))?,
            b"mode" => raw.mode = cursor.nullable(|c| c.string().and_then(mode))?,
            b"dev" => raw.dev = cursor.nullable(Cursor::string)?,
            b"ino" => raw.ino = cursor.nullable(Cursor::u64)?,
            b"path" => raw.path = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            b"host_path" => raw.host_path = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            b"start" => raw.start = cursor.nullable(Cursor::u64)?,
            b"end" => raw.end = cursor.nullable(Cursor::u64)?,
            b"wait_ns" => raw.wait_ns = cursor.nullable(Cursor::u64)?,
            b"held_ns" => raw.held_ns = cursor.nullable(Cursor::u64)?,
            b"orphan_ns" => raw.orphan_ns = cursor.nullable(Cursor::u64)?,
            b"reason" => raw.reason = cursor.nullable(|c| c.string().and_then(reason))?,
            b"errno" => raw.errno = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            b"holders" => raw.holders = cursor.nullable(Cursor::procs)?,
            b"by" => raw.by = cursor.nullable(Cursor::proc)?,
            b"taker_exit" => raw.taker_exit = cursor.nullable(Cursor::string)?,
            b"orphan" => raw.orphan = cursor.nullable(Cursor::bool)?,
            b"generation" => raw.generation = cursor.nullable(Cursor::u32)?,
            _ => raw.start_time = cursor.nullable(Cursor::u64)?,
        }
        Some(())
    })?;
    (has_ts && cursor.at == line.len()).then_some(raw)
}

fn kind(name: &str) -> Option<LockKind> {
    Some(match name {
        "flock" => LockKind::Flock,
        "posix" => LockKind::Posix,
        "ofd" => LockKind::Ofd,
        "lease" => LockKind::Lease,
        _ => return None,
    })
}

fn mode(name: &str) -> Option<Mode> {
    Some(match name {
        "read" => Mode::Read,
        "write" => Mode::Write,
        "unlock" => Mode::Unlock,
        _ => return None,
    })
}

fn reason(name: &str) -> Option<ReleaseReason> {
    Some(match name {
        "unlock" => ReleaseReason::Unlock,
        "close" => ReleaseReason::Close,
        "exit" => ReleaseReason::Exit,
        "convert" => ReleaseReason::Convert,
        "lost" => ReleaseReason::Lost,
        _ => return None,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    fn eat_word(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// `null` as None, else what `read` reads.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.eat_word(b"null") {
            return Some(None);
        }
        read(self).map(Some)
    }

    /// `{"key":value,...}`, each value read by `field`. A key the caller knows is ASCII: it
    /// is checked to be UTF-8 only when `field` passes over it (see [`Cursor::skip`]).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.bytes()?;
            self.eat(b':')?;
            field(self, key)?;
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// A string without escapes or control characters, not yet checked to be UTF-8.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.at..];
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[len] != b'"' || rest[..len].iter().any(|&byte| byte < 0x20) {
            return None;
        }
        self.at += len + 1;
        Some(&rest[..len])
    }

    /// Digits without a leading zero, a sign, a fraction or an exponent.
    fn u64(&mut self) -> Option<u64> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        let next = rest.get(len).copied();
        if len == 0 || (len > 1 && rest[0] == b'0') || matches!(next, Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let value = rest[..len].iter().try_fold(0u64, |value, &digit| {
            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })?;
        self.at += len;
        Some(value)
    }

    fn u32(&mut self) -> Option<u32> {
        self.u64().and_then(|value| u32::try_from(value).ok())
    }

    fn bool(&mut self) -> Option<bool> {
        if self.eat_word(b"true") {
            Some(true)
        } else if self.eat_word(b"false") {
            Some(false)
        } else {
            None
        }
    }

    fn procs(&mut self) -> Option<Vec<RawProc<'a>>> {
        self.eat(b'[')?;
        let mut procs = Vec::new();
        if self.eat(b']').is_some() {
            return Some(procs);
        }
        loop {
            procs.push(self.proc()?);
            if self.eat(b',').is_none() {
                self.eat(b']')?;
                return Some(procs);
            }
        }
    }

    fn proc(&mut self) -> Option<RawProc<'a>> {
        let (mut pid, mut ns_pid, mut comm, mut start_time) = (None, None, None, None);
        let mut seen = 0u8;
        self.object(|cursor, key| {
            let bit = match key {
                b"pid" => 0,
                b"ns_pid" => 1,
                b"comm" => 2,
                b"start_time" => 3,
                _ => return cursor.skip_field(key, 0),
            };
            if seen & (1 << bit) != 0 {
                return None;
            }
            seen |= 1 << bit;
            match key {
                b"pid" => pid = Some(cursor.u32()?),
                b"ns_pid" => ns_pid = cursor.nullable(Cursor::u32)?,
                b"start_time" => start_time = cursor.nullable(Cursor::u64)?,
                _ => comm = Some(cursor.string()?),
            }
            Some(())
        })?;
        Some(RawProc {
            pid: pid?,
            start_time,
            ns_pid,
            comm: Cow::Borrowed(comm?),
        })
    }

    /// Passes over a field the report does not use: its key, which serde_json reads as UTF-8,
    /// and its value.
    fn skip_field(&mut self, key: &[u8], depth: usize) -> Option<()> {
        std::str::from_utf8(key).ok()?;
        self.skip(depth)
    }

    /// Passes over a value of a field the report does not use.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|cursor, key| cursor.skip_field(key, depth + 1)),
            b'[' => {
                self.at += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
            }
            b'0'..=b'9' => self.u64().map(drop),
            _ if self.eat_word(b"null") || self.eat_word(b"true") || self.eat_word(b"false") => {
                Some(())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &[&str] = &[
        r#"{"event":"acquire","ts":"2026-11-27T05:04:50.603984745Z","host":"web-1","pid":812,"start_time":12340000000,"ns_pid":7,"comm":"orchestrator","kind":"flock","mode":"write","dev":"254:0","ino":42,"path":"/tmp/x","host_path":"/srv/c/tmp/x","start":0,"end":null,"wait_ns":12,"generation":3}"#,
        r#"{"event":"orphan","ts":"2026-11-27T05:04:50Z","pid":812,"comm":"o","kind":"ofd","mode":"read","dev":"8:1","ino":9,"start":10,"end":20,"taker_exit":"2026-11-27T05:04:49Z","holders":[{"pid":840,"start_time":5670000000,"comm":"sleep","fd":3,"cgroup":"/a"},{"pid":841,"ns_pid":null,"comm":"x"}]}"#,
        r#"{"event":"orphan_end","ts":"2026-11-27T05:04:50Z","pid":1,"comm":"a","kind":"lease","dev":"8:1","ino":9,"held_ns":5,"orphan_ns":3,"reason":"exit","by":{"pid":840,"comm":"sleep"},"orphan":true}"#,
        r#"{"event":"stop","ts":"2026-11-27T05:04:50Z","lost":0,"new":[1,{"a":[true,false,null]},"s"],"records":10}"#,
        r#"{"event":"teleport","ts":"2026-11-27T05:04:50Z","ino":77,"new_field":[1]}"#,
        r#"{"event":"fail","ts":"2026-11-27T05:04:50Z","pid":5,"comm":"c","kind":"posix","mode":"write","dev":"8:1","ino":9,"errno":"EAGAIN","reason":"lost"}"#,
        r#"{}"#,
    ];

    /// Every line the fast reader reads, serde_json reads the same; on the lines above, and on
    /// each of them cut short or with a byte changed at every place.
    #[test]
    fn reads_what_serde_json_reads() {
        let mut read = 0;
        let mut check = |line: &[u8]| {
            let serde: Result<RawLine, _> = serde_json::from_slice(line);
            if let Some(fast) = raw_line(line) {
                read += 1;
                assert_eq!(
                    serde.as_ref().ok(),
                    Some(&fast),
                    "{}",
                    String::from_utf8_lossy(line)
                );
            }
        };
        for line in LINES {
            let line = line.as_bytes();
            check(line);
            for cut in 0..line.len() {
                check(&line[..cut]);
                for byte in [
                    b'"', b'\\', b'{', b'}', b'[', b',', b':', b'0', b'-', b'a', b' ', 1, 0xff,
                ] {
                    let mut changed = line.to_vec();
                    changed[cut] = byte;
                    check(&changed);
                }
            }
        }
        assert!(
            read > LINES.len(),
            "the fast reader read too little: {read}"
        );
        for line in &LINES[..6] {
            assert!(raw_line(line.as_bytes()).is_some(), "{line}");
        }
        let twice = br#"{"event":"stop","ts":"2026-11-27T05:04:50Z","pid":1,"pid":2}"#;
        assert!(raw_line(twice).is_none());
    }
}
