//! The journal as input: `journalctl -o json` output of the entries `aimlock trace --journald`
//! wrote, read back as the JSON lines the tracer writes to a file, so that everything after
//! (the byte searches, the fast reader, the timelines) sees one form.
//!
//! An entry holds every field of its line under the names `sinks::journald` gives them, every
//! value a string; the host is the journal's own `_HOSTNAME`. Entries of other programs in the
//! same export are left out; a line that is not JSON is handed on as it is, so that the report
//! counts it among the unreadable ones.

use std::io::{self, BufRead, Read};

use serde_json::{Map, Value};

use crate::{events::EventLine, sinks::journald::LINE_FIELDS};

/// Whether a log's first bytes are `journalctl -o json` output rather than the tracer's lines:
/// its first object carries the journal's own fields (`__CURSOR` comes with every entry, also
/// with `--output-fields`) or the tracer's journal fields.
pub fn is_journal_export(head: &[u8]) -> bool {
    let first = head.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let has = |field: &[u8]| memchr::memmem::find(first, field).is_some();
    first.starts_with(b"{")
        && !first.starts_with(br#"{"event":"#)
        && (has(br#""__CURSOR":"#) || has(br#""LOCK_EVENT":"#))
}

/// Reads a journal export as the tracer's JSON lines.
pub struct JournalLines<R> {
    inner: R,
    entry: Vec<u8>,
    line: Vec<u8>,
    /// How much of `line` has been read.
    given: usize,
}

impl<R: BufRead> JournalLines<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            entry: Vec::with_capacity(4096),
            line: Vec::with_capacity(1024),
            given: 0,
        }
    }

    /// Puts the next entry's line in `line`; false at the end of the export.
    fn next_line(&mut self) -> io::Result<bool> {
        loop {
            self.entry.clear();
            if self.inner.read_until(b'\n', &mut self.entry)? == 0 {
                return Ok(false);
            }
            self.line.clear();
            self.given = 0;
            let text = self.entry.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Map<String, Value>>(text).map(|entry| event_line(&entry))
            {
                Ok(Entry::Line(line)) => line.write_json(&mut self.line),
                Ok(Entry::NotOurs) => continue,
                Ok(Entry::Unreadable) | Err(_) => self.line.extend_from_slice(text),
            }
            self.line.push(b'\n');
            return Ok(true);
        }
    }
}

impl<R: BufRead> Read for JournalLines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.given == self.line.len() && !self.next_line()? {
            return Ok(0);
        }
        let len = out.len().min(self.line.len() - self.given);
        out[..len].copy_from_slice(&self.line[self.given..self.given + len]);
        self.given += len;
        Ok(len)
    }
}

/// What a journal entry is to the report.
#[derive(Debug, PartialEq)]
pub enum Entry {
    /// An entry of `--journald`, as the line it was written from.
    Line(Box<EventLine>),
    /// Another program's entry (no `LOCK_EVENT`).
    NotOurs,
    /// The tracer's, but without a readable event or time.
    Unreadable,
}

/// The line an entry of `--journald` stands for. A field whose value cannot be what the tracer
/// wrote is left out, as the report leaves out what it cannot read, rather than the line.
pub fn event_line(entry: &Map<String, Value>) -> Entry {
    if !entry.contains_key("LOCK_EVENT") {
        return Entry::NotOurs;
    }
    let mut line = Map::new();
    for (key, value) in entry {
        let text = match value {
            Value::String(text) => text.clone(),
            // journalctl gives a value that is not UTF-8 as an array of its bytes.
            Value::Array(bytes) => String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|byte| u8::try_from(byte.as_u64()?).ok())
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
            // Too large for journalctl to show without --all: null.
            _ => continue,
        };
        let field = if key == "_HOSTNAME" {
            Some(("host", Value::String(text)))
        } else {
            LINE_FIELDS
                .iter()
                .find(|field| field.journal == key)
                .and_then(|field| Some((field.line, field.form.value(&text)?)))
        };
        if let Some((name, value)) = field {
            line.insert(name.to_owned(), value);
        }
    }
    if let Ok(line) = serde_json::from_value(Value::Object(line.clone())) {
        return Entry::Line(Box::new(line));
    }
    // A value of the right type the schema does not know (a kind of lock from a newer tracer):
    // each field is tried alone with the event and its time.
    let (Some(event), Some(ts)) = (line.remove("event"), line.remove("ts")) else {
        return Entry::Unreadable;
    };
    let readable = |key: &String, value: &Value| {
        let mut alone = Map::new();
        alone.insert("event".into(), event.clone());
        alone.insert("ts".into(), ts.clone());
        alone.insert(key.clone(), value.clone());
        serde_json::from_value::<EventLine>(Value::Object(alone)).is_ok()
    };
    line.retain(|key, value| readable(key, value));
    line.insert("event".into(), event);
    line.insert("ts".into(), ts);
    serde_json::from_value(Value::Object(line))
        .map_or(Entry::Unreadable, |line| Entry::Line(Box::new(line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::every_field;
    use crate::sinks::journald::entry_fields;

    /// An entry as `journalctl -o json` prints it: the tracer's fields as strings, with the
    /// journal's own.
    fn export(line: &EventLine) -> Map<String, Value> {
        let mut entry: Map<String, Value> = entry_fields(line)
            .into_iter()
            .map(|(key, value)| {
                (
                    key,
                    Value::String(String::from_utf8(value).expect("UTF-8 values")),
                )
            })
            .collect();
        entry.insert("__CURSOR".into(), "s=1;i=2".into());
        entry.insert("__REALTIME_TIMESTAMP".into(), "1795755890602120".into());
        entry.insert("_HOSTNAME".into(), line.host.as_deref().unwrap().into());
        entry
    }

    #[test]
    fn an_entry_reads_as_the_line_it_was_written_from() {
        let mut line = every_field();
        // Every value the tracer writes is valid UTF-8.
        line.host = Some("web-1".into());
        assert_eq!(event_line(&export(&line)), Entry::Line(Box::new(line)));
    }

    #[test]
    fn an_export_reads_as_json_lines() {
        let line = EventLine {
            host: Some("web-1".into()),
            ..every_field()
        };
        let mut other = Map::new();
        other.insert("__CURSOR".into(), "s=1;i=1".into());
        other.insert("MESSAGE".into(), "another program's entry".into());
        let mut unreadable = export(&line);
        unreadable.insert("LOCK_INO".into(), "many".into());
        unreadable.insert("LOCK_KIND".into(), "futex".into());
        let text = [
            Value::Object(other).to_string(),
            Value::Object(export(&line)).to_string(),
            "{torn".to_owned(),
            String::new(),
            Value::Object(unreadable).to_string(),
        ]
        .join("\n");
        assert!(is_journal_export(text.as_bytes()));
        let mut read = String::new();
        JournalLines::new(text.as_bytes())
            .read_to_string(&mut read)
            .unwrap();
        let mut expected = Vec::new();
        line.write_json(&mut expected);
        let mut lines = read.lines();
        assert_eq!(lines.next(), Some(std::str::from_utf8(&expected).unwrap()));
        assert_eq!(lines.next(), Some("{torn"));
        // A field that cannot be read is left out, not the line.
        let partial: EventLine = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!((partial.ino, partial.kind), (None, None));
        assert_eq!(partial.path, line.path);
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn tells_an_export_from_the_tracers_lines() {
        assert!(is_journal_export(
            br#"{"__CURSOR":"s=1","LOCK_EVENT":"acquire"}"#
        ));
        assert!(is_journal_export(
            br#"{"_HOSTNAME":"a","LOCK_EVENT":"start"}"#
        ));
        assert!(!is_journal_export(
            br#"{"event":"start","ts":"2026-11-27T05:04:50Z","LOCK_EVENT":"x"}"#
        ));
        assert!(!is_journal_export(b"2026-11-27T05:04:50Z acquire"));
        assert!(!is_journal_export(br#"{"MESSAGE":"x"}"#));
    }
}
