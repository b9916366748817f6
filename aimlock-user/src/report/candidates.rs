//! The first of two reads, for the queries that name something other than an inode: a byte
//! search for what the query names (a path, a pid, an orphan) finds the inodes that can
//! match, so that the second read parses only their lines and keeps only them in memory. The
//! query itself is still applied, exactly, to the locks built from those lines.

use memchr::memmem;
use rustc_hash::FxHashMap;

use super::{
    BadInput,
    input::{self, Source},
    scan::{Candidates, line_host, line_ino, string_value},
};

/// Bytes each job searches at a time.
const PIECE: usize = 8 << 20;
const PATH_FIELD: &[u8] = br#""path":""#;
const HOST_PATH_FIELD: &[u8] = br#""host_path":""#;
/// Searched for without its quotes: memchr's search starts from the needle's two rarest bytes
/// in common text, and in JSON lines a quote is on every line many times over.
const ORPHAN: &[u8] = b"orphan";

/// What the query names, each to be found in the lines.
pub struct Wanted<'a> {
    pub path: Option<&'a glob::Pattern>,
    pub pids: &'a [u32],
    pub orphans: bool,
}

impl Wanted<'_> {
    pub fn any(&self) -> bool {
        self.path.is_some() || !self.pids.is_empty() || self.orphans
    }
}

/// One thing to find: lines that contain a needle and pass a check, and the inodes they name.
struct Search {
    needles: Vec<memmem::Finder<'static>>,
    check: Check,
}

enum Check {
    /// The line's path matches the glob.
    Path(glob::Pattern),
    /// The needle is not the start of a longer number (`"pid":12` in `"pid":123`).
    WholeNumber,
    /// The needle, `orphan`, is an orphan's event (`"event":"orphan"`, `"event":"orphan_end"`)
    /// or an orphan flag that is set (`"orphan":true`).
    Orphan,
}

/// The inodes, each on the hosts whose lines name it, that the lines naming what is wanted are
/// about: those of a line with a matching path, with one of the pids, or of an orphan; when
/// several are wanted, the inodes that have all of them. None when nothing is wanted.
pub fn inodes(
    sources: &[Source],
    wanted: &Wanted,
    jobs: usize,
) -> Result<Option<Candidates>, BadInput> {
    let mut searches = Vec::new();
    if let Some(glob) = wanted.path {
        let needle = match longest_literal(glob.as_str()) {
            Some(literal) => literal.as_bytes().to_vec(),
            None => PATH_FIELD.to_vec(),
        };
        searches.push(Search {
            needles: vec![memmem::Finder::new(&needle).into_owned()],
            check: Check::Path(glob.clone()),
        });
    }
    if !wanted.pids.is_empty() {
        searches.push(Search {
            needles: wanted
                .pids
                .iter()
                .map(|pid| memmem::Finder::new(format!("\"pid\":{pid}").as_bytes()).into_owned())
                .collect(),
            check: Check::WholeNumber,
        });
    }
    if wanted.orphans {
        searches.push(Search {
            needles: vec![memmem::Finder::new(ORPHAN).into_owned()],
            check: Check::Orphan,
        });
    }
    if searches.is_empty() {
        return Ok(None);
    }
    let ino = memmem::Finder::new(br#""ino":"#).into_owned();
    let mut found: Vec<Candidates> = vec![Candidates::default(); searches.len()];
    for source in sources {
        input::read_pieces(
            source,
            PIECE,
            jobs,
            |piece, _| {
                searches
                    .iter()
                    .map(|search| search.inodes(piece, &ino))
                    .collect::<Vec<_>>()
            },
            |_, sets| {
                for (all, set) in found.iter_mut().zip(sets) {
                    for (ino, hosts) in set {
                        let known = all.entry(ino).or_default();
                        for host in hosts {
                            if !known.contains(&host) {
                                known.push(host);
                            }
                        }
                    }
                }
            },
        )?;
    }
    let mut sets = found.into_iter();
    let first = sets.next().unwrap_or_default();
    Ok(Some(sets.fold(first, |mut all, set| {
        all.retain(|ino, hosts| {
            let also = set.get(ino).map_or(&[][..], Vec::as_slice);
            hosts.retain(|host| also.contains(host));
            !hosts.is_empty()
        });
        all
    })))
}

/// The inodes in both, each on the hosts in both (no hosts: any host).
pub fn both(mut one: Candidates, mut other: Candidates) -> Candidates {
    one.retain(|ino, hosts| {
        let Some(also) = other.remove(ino) else {
            return false;
        };
        if hosts.is_empty() {
            *hosts = also;
        } else if !also.is_empty() {
            hosts.retain(|host| also.contains(host));
            return !hosts.is_empty();
        }
        true
    });
    one
}

impl Search {
    fn inodes(&self, bytes: &[u8], ino: &memmem::Finder<'_>) -> Candidates {
        let mut inodes = Candidates::default();
        // Paths already matched against the glob, as the log writes them.
        let mut matched: FxHashMap<&[u8], bool> = FxHashMap::default();
        for needle in &self.needles {
            let mut from = 0;
            while let Some(found) = needle.find(&bytes[from..]) {
                let at = from + found;
                let after = at + needle.needle().len();
                let start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |i| i + 1);
                let end = memchr::memchr(b'\n', &bytes[after..]).map_or(bytes.len(), |i| after + i);
                let line = &bytes[start..end];
                let hit = match &self.check {
                    // A container's file, by the path it sees or by the host's.
                    Check::Path(glob) => [PATH_FIELD, HOST_PATH_FIELD].into_iter().any(|field| {
                        string_value(line, field).is_some_and(|raw| {
                            *matched.entry(raw).or_insert_with(|| {
                                decode(raw).is_some_and(|path| glob.matches(&path))
                            })
                        })
                    }),
                    Check::WholeNumber => !bytes.get(after).is_some_and(u8::is_ascii_digit),
                    Check::Orphan => {
                        bytes[..at].ends_with(br#""event":""#)
                            || bytes[..at].ends_with(b"\"")
                                && bytes[after..].starts_with(br#"":true"#)
                    }
                };
                if hit && let Some(number) = line_ino(ino, line) {
                    let hosts = inodes.entry(number).or_default();
                    let host = line_host(line);
                    if !hosts.iter().any(|known| **known == *host) {
                        hosts.push(host.into());
                    }
                }
                // The rest of a line found is not searched again; a whole-number check that
                // failed may still be followed by the number on the same line.
                from = if hit { end } else { after };
                if from >= bytes.len() {
                    break;
                }
            }
        }
        inodes
    }
}

fn decode(raw: &[u8]) -> Option<String> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

/// The longest run of a glob that matches only itself, if the log writes it as is (no
/// character JSON escapes): every path the glob matches contains it.
fn longest_literal(glob: &str) -> Option<&str> {
    let bytes = glob.as_bytes();
    let mut best = "";
    let mut run_start = 0;
    let mut index = 0;
    while index < bytes.len() {
        let special = match bytes[index] {
            b'*' | b'?' => Some(index + 1),
            b'[' => {
                // A class: `[...]`, `[!...]`, where a `]` right after the opening is literal.
                let mut close = index + 1;
                if bytes.get(close) == Some(&b'!') {
                    close += 1;
                }
                close += 1;
                while close < bytes.len() && bytes[close] != b']' {
                    close += 1;
                }
                Some(close + 1)
            }
            _ => None,
        };
        if let Some(next) = special {
            if index - run_start > best.len() {
                best = &glob[run_start..index];
            }
            run_start = next.min(bytes.len());
            index = run_start;
        } else {
            index += 1;
        }
    }
    if bytes.len().saturating_sub(run_start) > best.len() {
        best = &glob[run_start..];
    }
    let plain = best
        .bytes()
        .all(|byte| byte != b'"' && byte != b'\\' && byte >= 0x20 && byte != 0x7f);
    (best.len() >= 2 && plain).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_globs_literal_is_what_every_match_contains() {
        assert_eq!(
            longest_literal("/var/lib/jobs/job-7.lock"),
            Some("/var/lib/jobs/job-7.lock")
        );
        assert_eq!(longest_literal("/var/*/jobs/*.lock"), Some("/jobs/"));
        assert_eq!(
            longest_literal("/var/lock/[ab]x?-longer-name"),
            Some("-longer-name")
        );
        assert_eq!(longest_literal("[!]]/srv/data*"), Some("/srv/data"));
        assert_eq!(longest_literal("*"), None);
        assert_eq!(longest_literal("/tmp/\"odd\"*"), None);
    }

    #[test]
    fn orphans_are_found_by_their_events_and_set_flags_only() {
        let lines = [
            r#"{"event":"orphan","ts":"T","pid":1,"ino":11,"holders":[{"pid":2}]}"#,
            r#"{"event":"orphan_end","ts":"T","pid":1,"ino":12,"orphan_ns":5}"#,
            r#"{"event":"held","ts":"T","pid":0,"ino":13,"orphan":true,"holders":[]}"#,
            r#"{"event":"held","ts":"T","pid":0,"ino":14,"orphan":false,"holders":[]}"#,
            r#"{"event":"acquire","ts":"T","pid":3,"ino":15,"path":"/var/lock/orphan.lock"}"#,
            r#"{"event":"release","ts":"T","pid":3,"ino":16,"path":"/srv/\"orphan\":true"}"#,
            r#"{"event":"acquire","ts":"T","pid":3,"ino":17,"path":"/orphans/orphan_end"}"#,
        ];
        let bytes = lines.join("\n");
        let search = Search {
            needles: vec![memmem::Finder::new(ORPHAN).into_owned()],
            check: Check::Orphan,
        };
        let ino = memmem::Finder::new(br#""ino":"#).into_owned();
        let mut found: Vec<u64> = search.inodes(bytes.as_bytes(), &ino).into_keys().collect();
        found.sort_unstable();
        assert_eq!(found, [11, 12, 13]);
    }

    #[test]
    fn a_path_is_read_as_the_log_escapes_it() {
        let line = br#"{"event":"acquire","path":"/tmp/a \"b\" c","ino":7}"#;
        let raw = string_value(line, PATH_FIELD).unwrap();
        assert_eq!(raw, br#"/tmp/a \"b\" c"#);
        assert_eq!(decode(raw).as_deref(), Some("/tmp/a \"b\" c"));
    }
}
