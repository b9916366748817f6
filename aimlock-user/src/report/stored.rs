//! A lock line as the report keeps it from the read until its lock is folded: what every line
//! has, inline and without `Option`'s padding, and what few lines have (an orphan's holders,
//! a taker's exit) boxed; its byte range only for a POSIX lock (another lock's lines all have
//! its own). A report keeps every line of the locks it tells, so this is most of its memory: 64
//! bytes a line (80 for POSIX locks) rather than a [`Record`]'s 136.

use crate::events::{EventKind, Mode, ReleaseReason};

use super::line::{Actor, ByteRange, Name, Nanos, Origin, Record};

#[derive(Debug)]
pub struct Stored {
    at: Nanos,
    line: u64,
    /// The actor's start time, if `START_TIME`.
    start_time: u64,
    /// If `DURATION`.
    duration_ns: u64,
    source: u32,
    pid: u32,
    comm: Name,
    /// If `NS_PID`.
    ns_pid: u32,
    /// If `ERRNO`.
    errno: Name,
    event: EventKind,
    mode: Option<Mode>,
    reason: Option<ReleaseReason>,
    flags: u8,
    rare: Option<Box<Rare>>,
}

const START_TIME: u8 = 1;
const NS_PID: u8 = 2;
const DURATION: u8 = 4;
const ORPHAN: u8 = 8;
const ERRNO: u8 = 16;

/// What few lines say.
#[derive(Debug)]
struct Rare {
    taker_exit: Option<Nanos>,
    others: Box<[Actor]>,
}

impl Stored {
    /// The line kept, and its range, which is kept apart.
    pub fn new(record: Record) -> (Self, ByteRange) {
        let Record {
            at,
            origin,
            event,
            actor,
            mode,
            range,
            reason,
            duration_ns,
            taker_exit,
            errno,
            others,
            orphan,
        } = record;
        let flag = |set: bool, flag: u8| if set { flag } else { 0 };
        let rare = (taker_exit.is_some() || !others.is_empty())
            .then(|| Box::new(Rare { taker_exit, others }));
        let stored = Self {
            at,
            line: origin.line,
            start_time: actor.start_time.unwrap_or(0),
            duration_ns: duration_ns.unwrap_or(0),
            source: origin.source,
            pid: actor.pid,
            comm: actor.comm,
            ns_pid: actor.ns_pid.unwrap_or(0),
            // Any name where there is none: the flag tells.
            errno: errno.unwrap_or(actor.comm),
            event,
            mode,
            reason,
            flags: flag(actor.start_time.is_some(), START_TIME)
                | flag(actor.ns_pid.is_some(), NS_PID)
                | flag(duration_ns.is_some(), DURATION)
                | flag(orphan, ORPHAN)
                | flag(errno.is_some(), ERRNO),
            rare,
        };
        (stored, range)
    }

    /// The line read, with its range.
    pub fn into_record(self, range: ByteRange) -> Record {
        let stored = self;
        let actor = stored.actor();
        let has = |flag: u8| stored.flags & flag != 0;
        let (taker_exit, others) = match stored.rare {
            Some(rare) => (rare.taker_exit, rare.others),
            None => (None, Box::default()),
        };
        Record {
            at: stored.at,
            origin: Origin {
                source: stored.source,
                line: stored.line,
            },
            event: stored.event,
            actor,
            mode: stored.mode,
            range,
            reason: stored.reason,
            duration_ns: has(DURATION).then_some(stored.duration_ns),
            taker_exit,
            errno: has(ERRNO).then_some(stored.errno),
            others,
            orphan: has(ORPHAN),
        }
    }

    pub fn at(&self) -> Nanos {
        self.at
    }

    pub fn origin(&self) -> Origin {
        Origin {
            source: self.source,
            line: self.line,
        }
    }

    /// Whether `other` is this line read twice (from overlapping rotated copies), as far as a
    /// lock whose lines all have one range can tell: the same time, event, process, mode,
    /// duration and reason.
    pub fn repeats(&self, other: &Stored) -> bool {
        let duration = |line: &Stored| (line.flags & DURATION != 0).then_some(line.duration_ns);
        self.at == other.at
            && self.event == other.event
            && self.actor() == other.actor()
            && self.mode == other.mode
            && duration(self) == duration(other)
            && self.reason == other.reason
    }

    pub fn event(&self) -> EventKind {
        self.event
    }

    /// How long the process waited (an acquire) or held the lock (a release), if told.
    pub fn duration_ns(&self) -> Option<u64> {
        (self.flags & DURATION != 0).then_some(self.duration_ns)
    }

    /// The process the line is about.
    pub fn actor(&self) -> Actor {
        let has = |flag: u8| self.flags & flag != 0;
        Actor {
            pid: self.pid,
            comm: self.comm,
            start_time: has(START_TIME).then_some(self.start_time),
            ns_pid: has(NS_PID).then_some(self.ns_pid),
        }
    }

    /// The other processes it names: an orphan's or a held lock's holders, or who released
    /// an orphan.
    pub fn others(&self) -> &[Actor] {
        self.rare.as_ref().map_or(&[], |rare| &rare.others)
    }

    /// The actor and then the others.
    pub fn actors(&self) -> impl Iterator<Item = Actor> + '_ {
        std::iter::once(self.actor()).chain(self.others().iter().copied())
    }

    /// A line of a piece read on its own, as a line of its whole source: `lines_before` the
    /// piece's first, its names renamed to the source's.
    pub fn read_after(&mut self, lines_before: u64, name: impl Fn(Name) -> Name) {
        self.line += lines_before;
        self.comm = name(self.comm);
        if self.flags & ERRNO != 0 {
            self.errno = name(self.errno);
        }
        if let Some(rare) = &mut self.rare {
            for other in &mut rare.others {
                other.comm = name(other.comm);
            }
        }
    }

    /// Changes each process it names (the actor, then the others).
    pub fn update_actors(&mut self, mut update: impl FnMut(&mut Actor)) {
        let mut actor = self.actor();
        update(&mut actor);
        self.start_time = actor.start_time.unwrap_or(0);
        self.ns_pid = actor.ns_pid.unwrap_or(0);
        self.flags &= !(START_TIME | NS_PID);
        if actor.start_time.is_some() {
            self.flags |= START_TIME;
        }
        if actor.ns_pid.is_some() {
            self.flags |= NS_PID;
        }
        if let Some(rare) = &mut self.rare {
            rare.others.iter_mut().for_each(update);
        }
    }
}

/// The event types, modes and release reasons by the number a line written out gives them:
/// their order of declaration, as `as u8` numbers them.
const EVENTS: [EventKind; 14] = EventKind::ALL;
const MODES: [Mode; 3] = Mode::ALL;
const REASONS: [ReleaseReason; 5] = ReleaseReason::ALL;

/// What follows a line written out: its range, what few lines say.
const WITH_RANGE: u8 = 1;
const WITH_RARE: u8 = 2;

/// Writes numbers in this machine's byte order: only this process reads them back.
struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn u64(&mut self, number: u64) {
        self.0.extend_from_slice(&number.to_ne_bytes());
    }

    fn u32(&mut self, number: u32) {
        self.0.extend_from_slice(&number.to_ne_bytes());
    }

    fn u8(&mut self, number: u8) {
        self.0.push(number);
    }

    fn optional_u64(&mut self, number: Option<u64>) {
        self.u8(u8::from(number.is_some()));
        self.u64(number.unwrap_or(0));
    }

    /// 0 for none, else one more than the variant's number.
    fn optional_variant(&mut self, variant: Option<u8>) {
        self.u8(variant.map_or(0, |number| number + 1));
    }

    fn actor(&mut self, actor: &Actor) {
        self.u32(actor.pid);
        self.u32(actor.comm.index() as u32);
        self.optional_u64(actor.start_time);
        self.optional_u64(actor.ns_pid.map(u64::from));
    }
}

/// Reads back what [`Out`] wrote; None where the bytes end too soon or hold no such value.
struct In<'a>(&'a [u8]);

impl In<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (bytes, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_ne_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_ne_bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|[byte]| byte)
    }

    fn optional_u64(&mut self) -> Option<Option<u64>> {
        let some = self.u8()? != 0;
        let number = self.u64()?;
        Some(some.then_some(number))
    }

    fn optional_variant<T: Copy>(&mut self, variants: &[T]) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            number => variants.get(usize::from(number) - 1).copied().map(Some),
        }
    }

    fn actor(&mut self) -> Option<Actor> {
        Some(Actor {
            pid: self.u32()?,
            comm: Name::from_index(self.u32()?),
            start_time: self.optional_u64()?,
            ns_pid: match self.optional_u64()? {
                Some(ns_pid) => Some(u32::try_from(ns_pid).ok()?),
                None => None,
            },
        })
    }
}

impl Stored {
    /// Writes the line, with its range if it has one of its own, for [`Stored::read_back`].
    fn write_out(&self, range: Option<ByteRange>, out: &mut Out) {
        let with = |set: bool, part: u8| if set { part } else { 0 };
        out.u8(with(range.is_some(), WITH_RANGE) | with(self.rare.is_some(), WITH_RARE));
        for number in [self.at, self.line, self.start_time, self.duration_ns] {
            out.u64(number);
        }
        for number in [
            self.source,
            self.pid,
            self.comm.index() as u32,
            self.ns_pid,
            self.errno.index() as u32,
        ] {
            out.u32(number);
        }
        out.u8(self.event as u8);
        out.optional_variant(self.mode.map(|mode| mode as u8));
        out.optional_variant(self.reason.map(|reason| reason as u8));
        out.u8(self.flags);
        if let Some(range) = range {
            out.u64(range.start);
            out.u64(range.end);
        }
        if let Some(rare) = &self.rare {
            out.optional_u64(rare.taker_exit);
            out.u32(rare.others.len() as u32);
            for other in &rare.others {
                out.actor(other);
            }
        }
    }

    /// A line [`Stored::write_out`] wrote, and its range if it had one of its own.
    fn read_back(from: &mut In) -> Option<(Self, Option<ByteRange>)> {
        let parts = from.u8()?;
        let [at, line, start_time, duration_ns] =
            [from.u64()?, from.u64()?, from.u64()?, from.u64()?];
        let [source, pid, comm, ns_pid, errno] = [
            from.u32()?,
            from.u32()?,
            from.u32()?,
            from.u32()?,
            from.u32()?,
        ];
        let event = *EVENTS.get(usize::from(from.u8()?))?;
        let mode = from.optional_variant(&MODES)?;
        let reason = from.optional_variant(&REASONS)?;
        let flags = from.u8()?;
        let range = match parts & WITH_RANGE {
            0 => None,
            _ => Some(ByteRange {
                start: from.u64()?,
                end: from.u64()?,
            }),
        };
        let rare = match parts & WITH_RARE {
            0 => None,
            _ => {
                let taker_exit = from.optional_u64()?;
                let others = (0..from.u32()?)
                    .map(|_| from.actor())
                    .collect::<Option<Box<[Actor]>>>()?;
                Some(Box::new(Rare { taker_exit, others }))
            }
        };
        let stored = Self {
            at,
            line,
            start_time,
            duration_ns,
            source,
            pid,
            comm: Name::from_index(comm),
            ns_pid,
            errno: Name::from_index(errno),
            event,
            mode,
            reason,
            flags,
            rare,
        };
        Some((stored, range))
    }
}

/// Writes out a line of a lock other than POSIX, for [`read_back_one`].
pub fn write_out_one(line: &Stored, out: &mut Vec<u8>) {
    line.write_out(None, &mut Out(out));
}

/// The first line [`write_out_one`] wrote to `bytes`, and how many bytes it took; None if
/// `bytes` do not begin with a whole line of a lock other than POSIX.
pub fn read_back_one(bytes: &[u8]) -> Option<(Stored, usize)> {
    let mut from = In(bytes);
    match Stored::read_back(&mut from)? {
        (line, None) => Some((line, bytes.len() - from.0.len())),
        (_, Some(_)) => None,
    }
}

/// Asks the CPU to bring the memory at `at` into its caches, for a look soon after.
fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every x86_64 CPU has SSE; a prefetch reads nothing and faults on no address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Things in the order added, in blocks that are never moved or grown: the read adds lines to
/// thousands of locks in turn, and a vector each, copied to ever larger places, would leave the
/// heap full of holes too small for the next. Each new block is as large as the things so far,
/// then from `QUARTERS_FROM` on a quarter of them (at most `BLOCK_MAX`): a lock of a few lines
/// takes little room, and of a long history at most a quarter more than its lines. The block
/// being filled is kept apart, so that adding to it looks nowhere but at it.
#[derive(Debug)]
struct Blocks<T> {
    /// The blocks filled, in order.
    full: Vec<Vec<T>>,
    /// The block things are added to, after those.
    last: Vec<T>,
    len: usize,
    /// The size of the first block: `BLOCK_MIN`, or after a write-out as many things as the
    /// blocks held then (at most `BLOCK_MAX`), the likeliest number to come again.
    first: usize,
}

const BLOCK_MIN: usize = 2;
const QUARTERS_FROM: usize = 64;
const BLOCK_MAX: usize = 4096;

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Self {
            full: Vec::new(),
            last: Vec::new(),
            len: 0,
            first: BLOCK_MIN,
        }
    }
}

impl<T> Blocks<T> {
    fn push(&mut self, thing: T) {
        if self.last.len() == self.last.capacity() {
            let size = match self.len {
                0 => self.first,
                small if small < QUARTERS_FROM => small.max(BLOCK_MIN),
                len => (len / 4).min(BLOCK_MAX),
            };
            let filled = std::mem::replace(&mut self.last, Vec::with_capacity(size));
            if !filled.is_empty() {
                self.full.push(filled);
            }
        }
        self.last.push(thing);
        self.len += 1;
    }

    /// Empty blocks whose first holds as many things as these do (at most `BLOCK_MAX`).
    fn emptied_for_as_many(&self) -> Self {
        Self {
            first: self.len.clamp(BLOCK_MIN, BLOCK_MAX),
            ..Self::default()
        }
    }

    fn append(&mut self, other: Blocks<T>) {
        self.len += other.len;
        let last = std::mem::replace(&mut self.last, other.last);
        if !last.is_empty() {
            self.full.push(last);
        }
        self.full.extend(other.full);
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for block in &mut self.full {
            block.retain(&mut keep);
        }
        self.full.retain(|block| !block.is_empty());
        self.last.retain(keep);
        self.len = self.full.iter().map(Vec::len).sum::<usize>() + self.last.len();
    }

    /// Fetches into the caches where the next thing goes.
    fn prefetch_next(&self) {
        prefetch(self.last.as_ptr().wrapping_add(self.last.len()));
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.full.iter().flatten().chain(&self.last)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.full.iter_mut().flatten().chain(&mut self.last)
    }

    fn into_iter(self) -> impl Iterator<Item = T> {
        self.full.into_iter().flatten().chain(self.last)
    }

    /// Moves the things, in order, to the end of `to`: a block at a time, as one copy each.
    fn move_into(self, to: &mut Vec<T>) {
        to.reserve(self.len);
        for mut block in self.full {
            to.append(&mut block);
        }
        to.extend(self.last);
    }
}

/// A lock's lines, in the order added, and for a POSIX lock the range of each.
#[derive(Debug, Default)]
pub struct StoredLines {
    lines: Blocks<Stored>,
    /// One for each line, or none: the lines of a lock other than POSIX all have its range.
    ranges: Blocks<ByteRange>,
}

impl StoredLines {
    pub fn is_empty(&self) -> bool {
        self.lines.len == 0
    }

    pub fn len(&self) -> usize {
        self.lines.len
    }

    /// Adds a line; its range if it is a POSIX lock's (every line of the lock, or none, has
    /// one).
    pub fn push(&mut self, line: Stored, range: Option<ByteRange>) {
        self.lines.push(line);
        if let Some(range) = range {
            self.ranges.push(range);
        }
    }

    /// Writes the lines out, in the order added, to be read back by [`StoredLines::read_back`],
    /// but those `stays` picks, which stay.
    pub fn write_out(&mut self, out: &mut Vec<u8>, mut stays: impl FnMut(&Stored) -> bool) {
        // The lines that come before the next write go to one block rather than to several
        // that grow from two, each a miss of the caches when they are written out in turn.
        let emptied = StoredLines {
            lines: self.lines.emptied_for_as_many(),
            ranges: self.ranges.emptied_for_as_many(),
        };
        let StoredLines { lines, ranges } = std::mem::replace(self, emptied);
        let mut ranges = ranges.into_iter();
        let mut out = Out(out);
        for line in lines.into_iter() {
            let range = ranges.next();
            if stays(&line) {
                self.push(line, range);
            } else {
                line.write_out(range, &mut out);
            }
        }
    }

    /// Adds the lines [`StoredLines::write_out`] wrote to `bytes`, in their order; None if
    /// `bytes` are not such lines.
    pub fn read_back(&mut self, bytes: &[u8]) -> Option<()> {
        let mut from = In(bytes);
        while !from.0.is_empty() {
            let (line, range) = Stored::read_back(&mut from)?;
            self.push(line, range);
        }
        Some(())
    }

    /// Takes out the lines of a lock other than POSIX, in the order added, but those `stays`
    /// picks, which stay.
    pub fn take_out(&mut self, mut stays: impl FnMut(&Stored) -> bool) -> Vec<Stored> {
        debug_assert_eq!(self.ranges.len, 0, "a POSIX lock's lines have their ranges");
        let mut taken = Vec::with_capacity(self.len());
        for line in std::mem::take(&mut self.lines).into_iter() {
            if stays(&line) {
                self.lines.push(line);
            } else {
                taken.push(line);
            }
        }
        taken
    }

    /// Adds `other`'s lines after these.
    pub fn append(&mut self, other: StoredLines) {
        self.lines.append(other.lines);
        self.ranges.append(other.ranges);
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Stored) -> bool) {
        if self.ranges.len == 0 {
            return self.lines.retain(keep);
        }
        let kept: Vec<bool> = self.lines.iter().map(&mut keep).collect();
        let mut lines = kept.iter();
        self.lines.retain(|_| *lines.next().expect("a line"));
        let mut ranges = kept.iter();
        self.ranges.retain(|_| *ranges.next().expect("a range"));
    }

    /// Fetches into the caches what adding a line looks at first.
    pub fn prefetch(&self) {
        prefetch(&self.lines.last);
    }

    /// Fetches into the caches where the next line goes.
    pub fn prefetch_next(&self) {
        self.lines.prefetch_next();
    }

    pub fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.lines.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Stored> {
        self.lines.iter_mut()
    }

    /// Moves the lines of a lock other than POSIX, whose lines have no range of their own, to
    /// the end of `to`.
    pub fn move_lines_into(self, to: &mut Vec<Stored>) {
        debug_assert_eq!(self.ranges.len, 0, "a POSIX lock's lines have their ranges");
        self.lines.move_into(to);
    }

    /// The lines as read: those without a range of their own have `range`, their lock's.
    pub fn into_records(self, range: ByteRange) -> impl Iterator<Item = Record> {
        let mut ranges = self.ranges.into_iter();
        self.lines
            .into_iter()
            .map(move |line| line.into_record(ranges.next().unwrap_or(range)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(names: &mut super::super::line::Names) -> Record {
        Record {
            at: 7,
            origin: Origin {
                source: 3,
                line: 1 << 40,
            },
            event: EventKind::Orphan,
            actor: Actor {
                pid: 12,
                comm: names.intern("job"),
                start_time: Some(0),
                ns_pid: None,
            },
            mode: Some(Mode::Write),
            range: ByteRange { start: 5, end: 9 },
            reason: Some(ReleaseReason::Exit),
            duration_ns: Some(0),
            taker_exit: Some(3),
            errno: Some(names.intern("EAGAIN")),
            others: Box::new([Actor {
                pid: 13,
                comm: names.intern("sleep"),
                start_time: None,
                ns_pid: Some(1),
            }]),
            orphan: true,
        }
    }

    /// The line as kept and read back with its range.
    fn kept(record: &Record) -> Record {
        let (stored, range) = Stored::new(record.clone());
        stored.into_record(range)
    }

    #[test]
    fn a_line_kept_is_the_line_read() {
        let mut names = super::super::line::Names::default();
        let full = record(&mut names);
        assert_eq!(kept(&full), full);
        let refused = Record {
            event: EventKind::Fail,
            mode: None,
            reason: None,
            duration_ns: None,
            taker_exit: None,
            others: Box::new([]),
            orphan: false,
            ..full.clone()
        };
        assert!(Stored::new(refused.clone()).0.rare.is_none());
        assert_eq!(kept(&refused), refused);
        let plain = Record {
            event: EventKind::Acquire,
            errno: None,
            ..refused
        };
        assert!(Stored::new(plain.clone()).0.rare.is_none());
        assert_eq!(kept(&plain), plain);
    }

    #[test]
    fn lines_written_out_are_read_back_as_they_were() {
        for (number, &event) in EVENTS.iter().enumerate() {
            assert_eq!(event as usize, number, "{event:?}");
        }
        for (number, &mode) in MODES.iter().enumerate() {
            assert_eq!(mode as usize, number, "{mode:?}");
        }
        for (number, &reason) in REASONS.iter().enumerate() {
            assert_eq!(reason as usize, number, "{reason:?}");
        }
        let mut names = super::super::line::Names::default();
        let full = record(&mut names);
        let plain = Record {
            event: EventKind::Release,
            mode: None,
            reason: Some(ReleaseReason::Lost),
            duration_ns: None,
            taker_exit: None,
            errno: None,
            others: Box::new([]),
            orphan: false,
            ..full.clone()
        };
        let lock_range = ByteRange { start: 1, end: 2 };
        for posix in [false, true] {
            let mut lines = StoredLines::default();
            for record in [full.clone(), plain.clone(), full.clone()] {
                let (stored, range) = Stored::new(record);
                lines.push(stored, posix.then_some(range));
            }
            let mut bytes = Vec::new();
            lines.write_out(&mut bytes, |line| line.event() == EventKind::Release);
            let as_read = |record: Record| Record {
                range: if posix { record.range } else { lock_range },
                ..record
            };
            let stayed: Vec<Record> = lines.into_records(lock_range).collect();
            assert_eq!(stayed, [as_read(plain.clone())]);
            let mut read = StoredLines::default();
            read.read_back(&bytes).unwrap();
            let read: Vec<Record> = read.into_records(lock_range).collect();
            assert_eq!(read, [as_read(full.clone()), as_read(full.clone())]);
            assert!(
                StoredLines::default()
                    .read_back(&bytes[..bytes.len() - 1])
                    .is_none()
            );
        }
    }

    #[test]
    fn a_processs_start_time_and_namespace_pid_can_be_filled_in() {
        let mut names = super::super::line::Names::default();
        let (mut stored, _) = Stored::new(record(&mut names));
        stored.update_actors(|actor| {
            actor.ns_pid = actor.ns_pid.or(Some(40));
            actor.start_time = actor.start_time.or(Some(50));
        });
        let actors: Vec<Actor> = stored.actors().collect();
        assert_eq!(actors[0].start_time, Some(0));
        assert_eq!(actors[0].ns_pid, Some(40));
        assert_eq!(actors[1].start_time, Some(50));
        assert_eq!(actors[1].ns_pid, Some(1));
    }

    #[test]
    fn lines_and_their_ranges_are_kept_in_the_order_added() {
        let mut names = super::super::line::Names::default();
        let template = record(&mut names);
        let line = |at: Nanos| {
            Stored::new(Record {
                at,
                range: ByteRange { start: at, end: at },
                ..template.clone()
            })
        };
        let whole = ByteRange::WHOLE_FILE;
        for posix in [false, true] {
            let mut lines = StoredLines::default();
            let add = |lines: &mut StoredLines, at: Nanos| {
                let (stored, range) = line(at);
                lines.push(stored, posix.then_some(range));
            };
            for at in 0..1000 {
                add(&mut lines, at);
            }
            let blocks = &lines.lines;
            let unused: usize = blocks
                .full
                .iter()
                .chain([&blocks.last])
                .map(|block| block.capacity() - block.len())
                .sum();
            assert!(unused <= 1000 / 4, "{unused} unused");
            let mut more = StoredLines::default();
            for at in 1000..1100 {
                add(&mut more, at);
            }
            lines.append(more);
            add(&mut lines, 1100);
            lines.retain(|line| line.at() % 3 != 0);
            let expected: Vec<Nanos> = (0..=1100).filter(|at| at % 3 != 0).collect();
            let times: Vec<Nanos> = lines.iter().map(Stored::at).collect();
            assert_eq!(times, expected);
            let ranges: Vec<ByteRange> = lines.into_records(whole).map(|r| r.range).collect();
            let expected: Vec<ByteRange> = expected
                .iter()
                .map(|&at| match posix {
                    true => ByteRange { start: at, end: at },
                    false => whole,
                })
                .collect();
            assert_eq!(ranges, expected, "posix: {posix}");
        }
    }

    #[test]
    fn a_line_is_kept_in_64_bytes() {
        assert_eq!(std::mem::size_of::<Stored>(), 64);
    }
}
