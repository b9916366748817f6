//! Reading a line as the tracer writes it without serde: no whitespace, strings without
//! escapes, numbers as plain digits. Anything else (or any doubt) gives None, and serde_json
//! reads the line instead; a line this reads, serde_json reads the same (a test holds them
//! side by side on damaged and altered lines).

use std::borrow::Cow;

use crate::events::{LockKind, Mode, ReleaseReason};

use super::line::{RawLine, RawProc};

/// Nesting serde_json would still read in a skipped value.
const MAX_DEPTH: usize = 64;

/// The fields of a line the report reads; each one's bit in the set of fields seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Event,
    Ts,
    Host,
    Pid,
    NsPid,
    Comm,
    Kind,
    Mode,
    Dev,
    Ino,
    Path,
    Start,
    End,
    WaitNs,
    HeldNs,
    OrphanNs,
    Reason,
    Errno,
    Holders,
    By,
    TakerExit,
    Orphan,
    Generation,
    StartTime,
    HostPath,
}

impl Field {
    fn of(key: &[u8]) -> Option<Self> {
        Some(match key {
            b"event" => Self::Event,
            b"ts" => Self::Ts,
            b"host" => Self::Host,
            b"pid" => Self::Pid,
            b"ns_pid" => Self::NsPid,
            b"comm" => Self::Comm,
            b"kind" => Self::Kind,
            b"mode" => Self::Mode,
            b"dev" => Self::Dev,
            b"ino" => Self::Ino,
            b"path" => Self::Path,
            b"start" => Self::Start,
            b"end" => Self::End,
            b"wait_ns" => Self::WaitNs,
            b"held_ns" => Self::HeldNs,
            b"orphan_ns" => Self::OrphanNs,
            b"reason" => Self::Reason,
            b"errno" => Self::Errno,
            b"holders" => Self::Holders,
            b"by" => Self::By,
            b"taker_exit" => Self::TakerExit,
            b"orphan" => Self::Orphan,
            b"generation" => Self::Generation,
            b"start_time" => Self::StartTime,
            b"host_path" => Self::HostPath,
            _ => return None,
        })
    }

    /// The field as a line gives it, up to its value.
    fn key(self) -> &'static Key {
        match self {
            Self::Event => const { &Key::new(br#""event":"#) },
            Self::Ts => const { &Key::new(br#""ts":"#) },
            Self::Host => const { &Key::new(br#""host":"#) },
            Self::Pid => const { &Key::new(br#""pid":"#) },
            Self::NsPid => const { &Key::new(br#""ns_pid":"#) },
            Self::Comm => const { &Key::new(br#""comm":"#) },
            Self::Kind => const { &Key::new(br#""kind":"#) },
            Self::Mode => const { &Key::new(br#""mode":"#) },
            Self::Dev => const { &Key::new(br#""dev":"#) },
            Self::Ino => const { &Key::new(br#""ino":"#) },
            Self::Path => const { &Key::new(br#""path":"#) },
            Self::Start => const { &Key::new(br#""start":"#) },
            Self::End => const { &Key::new(br#""end":"#) },
            Self::WaitNs => const { &Key::new(br#""wait_ns":"#) },
            Self::HeldNs => const { &Key::new(br#""held_ns":"#) },
            Self::OrphanNs => const { &Key::new(br#""orphan_ns":"#) },
            Self::Reason => const { &Key::new(br#""reason":"#) },
            Self::Errno => const { &Key::new(br#""errno":"#) },
            Self::Holders => const { &Key::new(br#""holders":"#) },
            Self::By => const { &Key::new(br#""by":"#) },
            Self::TakerExit => const { &Key::new(br#""taker_exit":"#) },
            Self::Orphan => const { &Key::new(br#""orphan":"#) },
            Self::Generation => const { &Key::new(br#""generation":"#) },
            Self::StartTime => const { &Key::new(br#""start_time":"#) },
            Self::HostPath => const { &Key::new(br#""host_path":"#) },
        }
    }

    /// The field the tracer most often writes after this one: a line in its order has each
    /// key found by one comparison.
    fn usually_after(self) -> Self {
        match self {
            Self::Event => Self::Ts,
            Self::Ts => Self::Host,
            Self::Host => Self::Pid,
            Self::Pid => Self::StartTime,
            Self::NsPid => Self::Comm,
            Self::Comm => Self::Kind,
            Self::Kind => Self::Mode,
            Self::Mode => Self::Dev,
            Self::Dev => Self::Ino,
            Self::Ino => Self::Generation,
            Self::Path => Self::Start,
            Self::Start => Self::End,
            Self::End => Self::HeldNs,
            Self::WaitNs => Self::HeldNs,
            Self::HeldNs => Self::Reason,
            Self::OrphanNs => Self::TakerExit,
            Self::Reason => Self::Errno,
            Self::Errno => Self::Holders,
            Self::Holders => Self::Orphan,
            Self::By => Self::OrphanNs,
            Self::TakerExit => Self::Event,
            Self::Orphan => Self::By,
            Self::Generation => Self::Path,
            Self::StartTime => Self::Comm,
            Self::HostPath => Self::Start,
        }
    }
}

/// A key with its quotes and colon, also as a little-endian word.
pub(super) struct Key {
    text: &'static [u8],
    word: u128,
    mask: u128,
}

impl Key {
    pub(super) const fn new(text: &'static [u8]) -> Self {
        assert!(text.len() < 16, "a key fits in a word");
        let mut word = 0;
        let mut index = 0;
        while index < text.len() {
            word |= (text[index] as u128) << (8 * index);
            index += 1;
        }
        Self {
            text,
            word,
            mask: (1 << (8 * text.len())) - 1,
        }
    }

    /// Whether `bytes` start with it: one comparison of words, where they have a word.
    #[inline]
    pub(super) fn starts(&self, bytes: &[u8]) -> bool {
        match bytes.first_chunk::<16>() {
            Some(word) => u128::from_le_bytes(*word) & self.mask == self.word,
            None => bytes.starts_with(self.text),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.text.len()
    }
}

/// Reads a line in the tracer's own form into `raw`, an empty line ([`RawLine::empty`]); None
/// if it is not in that form (`raw` then holds part of it). Filled in place rather than
/// returned: a line's fields are 392 bytes, and moving them out took two calls of memcpy a
/// line.
pub fn raw_line_into<'a>(line: &'a [u8], raw: &mut RawLine<'a>) -> Option<()> {
    let mut cursor = Cursor { bytes: line, at: 0 };
    // Fields seen, by their bit: serde_json refuses a field given twice.
    let mut seen = 0u32;
    let mut has_ts = false;
    cursor.eat(b'{')?;
    let mut expected = Field::Event;
    let mut more = cursor.eat(b'}').is_none();
    while more {
        let field = if cursor.eat_key(expected.key()) {
            expected
        } else {
            let key = cursor.bytes()?;
            cursor.eat(b':')?;
            match Field::of(key) {
                Some(field) => field,
                None => {
                    cursor.skip_field(key, 0)?;
                    more = cursor.next_field()?;
                    continue;
                }
            }
        };
        let bit = field as u32;
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        match field {
            Field::Event => {
                raw.event = cursor.nullable(|c| {
                    c.usual_string(&["acquire", "release", "wait", "fail"], |name| {
                        Some(super::line::event_kind(name.as_bytes()))
                    })
                })?
            }
            Field::Ts => {
                raw.ts = cursor.string()?;
                has_ts = true;
            }
            Field::Host => raw.host = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            Field::Pid => raw.pid = cursor.nullable(Cursor::u32)?,
            Field::NsPid => raw.ns_pid = cursor.nullable(Cursor::u32)?,
            Field::Comm => raw.comm = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            Field::Kind => {
                raw.kind = cursor.nullable(|c| c.usual_string(&["flock", "posix", "ofd"], kind))?
            }
            Field::Mode => {
                raw.mode = cursor.nullable(|c| c.usual_string(&["write", "read"], mode))?
            }
            Field::Dev => raw.dev = cursor.nullable(Cursor::string)?,
            Field::Ino => raw.ino = cursor.nullable(Cursor::u64)?,
            Field::Path => raw.path = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            Field::HostPath => {
                raw.host_path = cursor.nullable(|c| c.string().map(Cow::Borrowed))?
            }
            Field::Start => raw.start = cursor.nullable(Cursor::u64)?,
            Field::End => raw.end = cursor.nullable(Cursor::u64)?,
            Field::WaitNs => raw.wait_ns = cursor.nullable(Cursor::u64)?,
            Field::HeldNs => raw.held_ns = cursor.nullable(Cursor::u64)?,
            Field::OrphanNs => raw.orphan_ns = cursor.nullable(Cursor::u64)?,
            Field::Reason => {
                raw.reason =
                    cursor.nullable(|c| c.usual_string(&["unlock", "close", "exit"], reason))?
            }
            Field::Errno => raw.errno = cursor.nullable(|c| c.string().map(Cow::Borrowed))?,
            Field::Holders => raw.holders = cursor.nullable(Cursor::procs)?,
            Field::By => raw.by = cursor.nullable(Cursor::proc)?,
            Field::TakerExit => raw.taker_exit = cursor.nullable(Cursor::string)?,
            Field::Orphan => raw.orphan = cursor.nullable(Cursor::bool)?,
            Field::Generation => raw.generation = cursor.nullable(Cursor::u32)?,
            Field::StartTime => raw.start_time = cursor.nullable(Cursor::u64)?,
        }
        expected = field.usually_after();
        more = cursor.next_field()?;
    }
    (has_ts && cursor.at == line.len()).then_some(())
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

/// How many bytes at the start of `bytes` are printable ASCII other than a quote or a
/// backslash.
fn plain_ascii_len(bytes: &[u8]) -> usize {
    let special = |word: u64| {
        (word.wrapping_sub(ONES * 0x20) & !word & HIGH)
            | zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | zero_bytes(word ^ (ONES * 0x7f))
            | (word & HIGH)
    };
    let special_byte = |byte: u8| !(0x20..0x7f).contains(&byte) || byte == b'"' || byte == b'\\';
    first_flagged(bytes, special, special_byte).unwrap_or(bytes.len())
}

pub(super) const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH: u64 = ONES * 0x80;

/// A byte's high bit set where the byte is zero. Carries only run upwards from a zero byte,
/// so the lowest one flagged is always a zero byte.
pub(super) fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGH
}

/// Where the first byte is that `flags` marks, read eight at a time, as one word each:
/// `flags` sets the high bit of the bytes it marks in a little-endian word (the lowest set one
/// always a byte marked), `flagged` tells the same of each byte of the tail.
pub(super) fn first_flagged(
    bytes: &[u8],
    flags: impl Fn(u64) -> u64,
    flagged: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    for (index, chunk) in chunks.by_ref().enumerate() {
        let found = flags(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if found != 0 {
            return Some(index * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let read = bytes.len() - chunks.remainder().len();
    let tail = chunks.remainder().iter().position(|&byte| flagged(byte));
    tail.map(|at| read + at)
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

    #[inline]
    fn eat_word(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// `key`, if the line goes on with it: one comparison of words, where the line has a word
    /// left.
    #[inline]
    fn eat_key(&mut self, key: &Key) -> bool {
        let found = key.starts(&self.bytes[self.at..]);
        if found {
            self.at += key.text.len();
        }
        found
    }

    /// `null` as None, else what `read` reads.
    #[inline]
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
            if !self.next_field()? {
                return Some(());
            }
        }
    }

    /// After a field of an object: whether another follows (a comma) or the object ends.
    fn next_field(&mut self) -> Option<bool> {
        if self.eat(b',').is_some() {
            return Some(true);
        }
        self.eat(b'}').map(|()| false)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        let (bytes, ascii) = self.string_bytes()?;
        if ascii {
            // SAFETY: ASCII is UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).ok()
    }

    /// A string that is usually one of a few `words`, read by `read`: each word is compared in
    /// place, quotes included, before the string is scanned for its end as any other.
    fn usual_string<T>(
        &mut self,
        words: &[&'static str],
        read: impl Fn(&'a str) -> Option<T>,
    ) -> Option<T> {
        let rest = &self.bytes[self.at..];
        for word in words {
            let len = word.len();
            if rest.get(len + 1) == Some(&b'"')
                && rest[0] == b'"'
                && &rest[1..=len] == word.as_bytes()
            {
                self.at += len + 2;
                return read(word);
            }
        }
        self.string().and_then(read)
    }

    /// A string without escapes or control characters, not yet checked to be UTF-8.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        self.string_bytes().map(|(bytes, _)| bytes)
    }

    /// A string without escapes or control characters, and whether it is all ASCII. Nearly
    /// every string the tracer writes is short printable ASCII: one pass over its bytes tells,
    /// where a search for its end and a check of what it holds would be two.
    fn string_bytes(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.at..];
        let plain = plain_ascii_len(rest);
        if plain == rest.len() {
            return None;
        }
        let (len, ascii) = if rest[plain] == b'"' {
            (plain, true)
        } else {
            let len = plain + memchr::memchr2(b'"', b'\\', &rest[plain..])?;
            if rest[len] != b'"' || rest[plain..len].iter().any(|&byte| byte < 0x20) {
                return None;
            }
            (len, false)
        };
        self.at += len + 1;
        Some((&rest[..len], ascii))
    }

    /// Digits without a leading zero, a sign, a fraction or an exponent.
    fn u64(&mut self) -> Option<u64> {
        let rest = &self.bytes[self.at..];
        // Digits are read and added up in one pass; nineteen cannot overflow, more are checked.
        let mut value = 0u64;
        let mut len = 0;
        while let Some(digit) = rest.get(len).map(|byte| byte.wrapping_sub(b'0'))
            && digit <= 9
        {
            value = if len < 19 {
                value * 10 + u64::from(digit)
            } else {
                value.checked_mul(10)?.checked_add(u64::from(digit))?
            };
            len += 1;
        }
        let next = rest.get(len).copied();
        if len == 0 || (len > 1 && rest[0] == b'0') || matches!(next, Some(b'.' | b'e' | b'E')) {
            return None;
        }
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
        "{\"event\":\"acquire\",\"ts\":\"2026-11-27T05:04:50Z\",\"pid\":3,\"comm\":\"caf\u{e9} \u{7f}\",\"kind\":\"flock\",\"dev\":\"8:1\",\"ino\":1,\"path\":\"/tmp/\u{1F512}/a-path-longer-than-a-word\"}",
        r#"{}"#,
        r#"{"event":"release","ts":"2026-11-27T05:04:50Z","pid":4294967295,"start_time":18446744073709551615,"comm":"c","kind":"flock","mode":"read","dev":"8:1","ino":1234567890123456789,"held_ns":9999999999999999999,"reason":"close"}"#,
        r#"{"event":"wait","ts":"2026-11-27T05:04:50Z","pid":18446744073709551616,"kind":"ofd","mode":"unlock","ino":00,"held_ns":1.5,"wait_ns":1e3,"reason":"unlocked"}"#,
    ];

    /// After each key of the tracer's usual lines, the key it writes next is the one guessed.
    #[test]
    fn the_guessed_next_key_is_the_one_the_tracer_writes() {
        for keys in crate::report::tests::usual_tracer_keys() {
            for pair in keys.windows(2) {
                let field = |key: &str| Field::of(key.as_bytes()).unwrap();
                assert_eq!(
                    field(&pair[0]).usually_after(),
                    field(&pair[1]),
                    "after {} in {keys:?}",
                    pair[0]
                );
            }
        }
    }

    fn raw_line(line: &[u8]) -> Option<RawLine<'_>> {
        let mut raw = RawLine::empty();
        raw_line_into(line, &mut raw).map(|()| raw)
    }

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
        for line in &LINES[..7] {
            assert!(raw_line(line.as_bytes()).is_some(), "{line}");
        }
        let twice = br#"{"event":"stop","ts":"2026-11-27T05:04:50Z","pid":1,"pid":2}"#;
        assert!(raw_line(twice).is_none());
        let most = LINES[LINES.len() - 2];
        assert_eq!(
            raw_line(most.as_bytes()).and_then(|raw| raw.start_time),
            Some(u64::MAX)
        );
    }
}
