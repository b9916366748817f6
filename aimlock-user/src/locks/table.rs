//! The lock table as text, in the spirit of lslocks: aligned columns, or raw.

use std::io::{self, Write};

use anyhow::{Result, bail};

use crate::events::{LockKind, Mode};
use crate::lock_table::{Lock, Taker};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Command,
    Pid,
    Kind,
    Mode,
    Start,
    End,
    Dev,
    Inode,
    Path,
    HostPath,
    Holders,
    Waiters,
    Orphan,
    NsPid,
    Cgroup,
    Hidden,
}

/// Every column: name, help, right-aligned, shortened first when the terminal is too narrow.
const COLUMNS: &[(Column, &str, &str, bool, bool)] = &[
    (
        Column::Command,
        "COMMAND",
        "the taker's command, while it runs",
        false,
        false,
    ),
    (
        Column::Pid,
        "PID",
        "the taker's pid as the kernel recorded it (0, -1: unknown)",
        true,
        false,
    ),
    (
        Column::Kind,
        "KIND",
        "flock, posix, ofd or lease",
        false,
        false,
    ),
    (Column::Mode, "MODE", "read or write", false, false),
    (Column::Start, "START", "first byte locked", true, false),
    (Column::End, "END", "last byte locked, or EOF", true, false),
    (Column::Dev, "MAJ:MIN", "the file's device", false, false),
    (
        Column::Inode,
        "INODE",
        "the file's inode number",
        true,
        false,
    ),
    (
        Column::Path,
        "PATH",
        "the file, through a holder's fd",
        false,
        true,
    ),
    (
        Column::HostPath,
        "HOSTPATH",
        "the file's path on this host where the holder sees it through other mounts (a \
         container), checked to be the same file; shown by default when a lock has one",
        false,
        true,
    ),
    (
        Column::Holders,
        "HOLDERS",
        "live processes with an fd on the lock: PID(COMMAND):FD, and <PPID when it inherited \
         the description from that ancestor (the taker or another holder)",
        false,
        true,
    ),
    (
        Column::Waiters,
        "WAITERS",
        "requests blocked by the lock: PID(COMMAND)",
        false,
        true,
    ),
    (
        Column::Orphan,
        "ORPHAN",
        "yes: the taker is gone while holders remain; unknown: the taker, or whether it still \
         holds the lock, cannot be known (an OFD lock; holders this user may not read)",
        false,
        false,
    ),
    (
        Column::NsPid,
        "NSPID",
        "holders' pids in their own namespace: PID=NSPID",
        false,
        true,
    ),
    (
        Column::Cgroup,
        "CGROUP",
        "holders' cgroups that differ from aimlock's",
        false,
        true,
    ),
    (
        Column::Hidden,
        "HIDDEN",
        "yes: /proc/locks leaves the lock out",
        false,
        false,
    ),
];

pub const DEFAULT_COLUMNS: &[Column] = &[
    Column::Command,
    Column::Pid,
    Column::Kind,
    Column::Mode,
    Column::Start,
    Column::End,
    Column::Path,
    Column::Holders,
    Column::Waiters,
    Column::Orphan,
];

/// The columns shown without `-o`: the default ones, and the host's path beside the path
/// when some lock's holder sees its file through other mounts (a container).
pub fn default_columns(locks: &[Lock]) -> Vec<Column> {
    let mut columns = DEFAULT_COLUMNS.to_vec();
    if locks.iter().any(|lock| lock.host_path.is_some()) {
        let after_path = columns
            .iter()
            .position(|&c| c == Column::Path)
            .map_or(0, |i| i + 1);
        columns.insert(after_path, Column::HostPath);
    }
    columns
}

/// The column list for `--help`.
pub fn columns_help() -> String {
    let mut help = String::from("Columns (-o):\n");
    for (_, name, text, _, _) in COLUMNS {
        help.push_str(&format!("  {name:<8} {text}\n"));
    }
    help
}

fn spec(column: Column) -> (&'static str, bool, bool) {
    let (_, name, _, right, shrink) = COLUMNS
        .iter()
        .find(|(known, ..)| *known == column)
        .expect("every column is in COLUMNS");
    (name, *right, *shrink)
}

/// `-o COLS`: a comma-separated list of names, or `+COLS` to add to the default columns.
pub fn parse_columns(list: &str) -> Result<Vec<Column>> {
    let (mut columns, list) = match list.strip_prefix('+') {
        Some(rest) => (DEFAULT_COLUMNS.to_vec(), rest),
        None => (Vec::new(), list),
    };
    for name in list.split(',').map(str::trim) {
        let Some((column, ..)) = COLUMNS
            .iter()
            .find(|(_, known, ..)| known.eq_ignore_ascii_case(name))
        else {
            let names: Vec<&str> = COLUMNS.iter().map(|(_, name, ..)| *name).collect();
            bail!("unknown column {name:?} (columns: {})", names.join(","));
        };
        columns.push(*column);
    }
    Ok(columns)
}

/// How to lay the table out.
pub struct Layout {
    pub headings: bool,
    pub raw: bool,
    /// Shorten the shrinkable columns to fit this many characters.
    pub width: Option<usize>,
}

/// `unseen`: some processes' fds could not be read, so any lock's holders may be among them.
pub fn write(
    out: &mut impl Write,
    locks: &[Lock],
    columns: &[Column],
    layout: &Layout,
    unseen: bool,
) -> io::Result<()> {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(locks.len() + 1);
    if layout.headings {
        rows.push(
            columns
                .iter()
                .map(|&column| spec(column).0.to_owned())
                .collect(),
        );
    }
    rows.extend(locks.iter().map(|lock| {
        columns
            .iter()
            .map(|&column| cell(lock, column, unseen))
            .collect()
    }));
    if layout.raw {
        for row in &rows {
            let cells: Vec<String> = row.iter().map(|text| raw_escape(text)).collect();
            writeln!(out, "{}", cells.join(" "))?;
        }
        return Ok(());
    }
    let widths = fit(&rows, columns, layout.width);
    let mut line = String::new();
    for row in &rows {
        line.clear();
        for (index, (text, &column)) in row.iter().zip(columns).enumerate() {
            let width = widths[index];
            let text = shorten(text, width);
            let pad = width.saturating_sub(text.chars().count());
            let last = index + 1 == columns.len();
            if spec(column).1 {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(&text);
            } else {
                line.push_str(&text);
                if !last {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            if !last {
                line.push(' ');
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Column widths: the widest cell, with the shrinkable columns narrowed (but not below their
/// heading or 10 characters) until the row fits in `width`.
fn fit(rows: &[Vec<String>], columns: &[Column], width: Option<usize>) -> Vec<usize> {
    let mut widths: Vec<usize> = (0..columns.len())
        .map(|index| {
            rows.iter()
                .map(|row| row[index].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let Some(limit) = width else {
        return widths;
    };
    let total = |widths: &[usize]| widths.iter().sum::<usize>() + widths.len().saturating_sub(1);
    let floor = |column: Column| spec(column).0.len().max(10);
    while total(&widths) > limit {
        // Narrow the widest shrinkable column that is still above its floor.
        let widest = (0..columns.len())
            .filter(|&index| spec(columns[index]).2 && widths[index] > floor(columns[index]))
            .max_by_key(|&index| widths[index]);
        let Some(index) = widest else { break };
        widths[index] -= 1;
    }
    widths
}

fn shorten(text: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if text.chars().count() <= width {
        return text.into();
    }
    let mut short: String = text.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short.into()
}

/// libsmartcols' raw escaping: whitespace, backslashes and control characters as \xHH.
fn raw_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || c == '\\' {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                escaped.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Whether a lock outlived its taker, as far as this scan can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    No,
    Unknown,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Unknown => "unknown",
        }
    }
}

/// The lock table's orphan judgement, said honestly: a POSIX lock never outlives its taker,
/// but of a flock, OFD lock or lease nobody can say whether an unknown taker still holds it
/// (an OFD lock, a taker whose fds this user may not read), nor, when the holders may be
/// among the processes this user may not read (`unseen`), whether any holder remains.
pub fn orphan_verdict(lock: &Lock, unseen: bool) -> Verdict {
    match (lock.orphan, lock.taker) {
        (true, _) => Verdict::Yes,
        (false, _) if lock.kind == LockKind::Posix => Verdict::No,
        (false, Taker::Unknown) => Verdict::Unknown,
        (false, Taker::Gone) if unseen && lock.holders.is_empty() => Verdict::Unknown,
        (false, _) => Verdict::No,
    }
}

fn cell(lock: &Lock, column: Column, unseen: bool) -> String {
    let list = |items: Vec<String>| items.join(",");
    match column {
        Column::Command => match (&lock.command, lock.pid) {
            (Some(command), _) => command.clone(),
            (None, pid) if pid > 0 => "(exited)".to_owned(),
            (None, _) => String::new(),
        },
        Column::Pid => lock.pid.to_string(),
        Column::Kind => kind_name(lock.kind).to_owned(),
        Column::Mode => mode_name(lock.mode).to_owned(),
        Column::Start => lock.start.to_string(),
        Column::End => lock
            .end
            .map_or_else(|| "EOF".to_owned(), |end| end.to_string()),
        Column::Dev => lock.dev.clone(),
        Column::Inode => lock.ino.to_string(),
        Column::Path => match (&lock.path, lock.deleted) {
            (Some(path), true) => format!("{path} (deleted)"),
            (Some(path), false) => path.clone(),
            (None, _) => String::new(),
        },
        Column::HostPath => lock.host_path.clone().unwrap_or_default(),
        Column::Holders => list(
            lock.holders
                .iter()
                .map(|holder| match holder.inherited_from {
                    Some(from) => format!("{}({}):{}<{from}", holder.pid, holder.comm, holder.fd),
                    None => format!("{}({}):{}", holder.pid, holder.comm, holder.fd),
                })
                .collect(),
        ),
        Column::Waiters => list(
            lock.waiters
                .iter()
                .map(|waiter| match &waiter.comm {
                    Some(comm) => format!("{}({comm})", waiter.pid),
                    None => waiter.pid.to_string(),
                })
                .collect(),
        ),
        Column::Orphan => orphan_verdict(lock, unseen).name().to_owned(),
        Column::NsPid => list(
            lock.holders
                .iter()
                .filter_map(|holder| Some(format!("{}={}", holder.pid, holder.ns_pid?)))
                .collect(),
        ),
        Column::Cgroup => {
            let mut cgroups: Vec<String> = lock
                .holders
                .iter()
                .filter_map(|holder| holder.cgroup.clone())
                .collect();
            cgroups.dedup();
            list(cgroups)
        }
        Column::Hidden => yes_no(lock.hidden),
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn kind_name(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Flock => "flock",
        LockKind::Posix => "posix",
        LockKind::Ofd => "ofd",
        LockKind::Lease => "lease",
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Read => "read",
        Mode::Write => "write",
        Mode::Unlock => "unlock",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_parse_by_name_or_as_an_addition() {
        assert_eq!(
            parse_columns("pid,PATH").unwrap(),
            [Column::Pid, Column::Path]
        );
        let added = parse_columns("+INODE").unwrap();
        assert_eq!(added.len(), DEFAULT_COLUMNS.len() + 1);
        assert_eq!(added.last(), Some(&Column::Inode));
        let err = parse_columns("PID,SIZE").unwrap_err().to_string();
        assert!(err.starts_with("unknown column \"SIZE\""), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn the_hosts_path_is_shown_by_default_only_where_a_lock_has_one() {
        let mut locks = vec![crate::lock_table::example(
            LockKind::Flock,
            Mode::Write,
            1,
            &[1],
        )];
        assert_eq!(default_columns(&locks), DEFAULT_COLUMNS);
        locks[0].path = Some("/data/job.lock".to_owned());
        locks[0].host_path = Some("/srv/c/data/job.lock".to_owned());
        let columns = default_columns(&locks);
        let path = columns.iter().position(|&c| c == Column::Path).unwrap();
        assert_eq!(columns[path + 1], Column::HostPath);
        let layout = Layout {
            headings: true,
            raw: true,
            width: None,
        };
        let mut out = Vec::new();
        write(
            &mut out,
            &locks,
            &[Column::Path, Column::HostPath],
            &layout,
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PATH HOSTPATH\n/data/job.lock /srv/c/data/job.lock\n"
        );
    }

    #[test]
    fn raw_cells_escape_what_would_split_them() {
        assert_eq!(raw_escape("a b\\c"), "a\\x20b\\x5cc");
        assert_eq!(raw_escape("plain"), "plain");
    }

    #[test]
    fn narrow_terminals_shorten_only_long_text_columns() {
        let columns = [Column::Pid, Column::Path];
        let rows = vec![
            vec!["PID".to_owned(), "PATH".to_owned()],
            vec![
                "12345".to_owned(),
                "/a/very/long/path/to/a/lock/file".to_owned(),
            ],
        ];
        let widths = fit(&rows, &columns, Some(20));
        assert_eq!(widths, [5, 14]);
        assert_eq!(shorten("/a/very/long/path", 10), "/a/very/l…");
        assert_eq!(fit(&rows, &columns, None), [5, 32]);
    }
}
