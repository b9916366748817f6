//! When a lock may be broken.

use super::OwnedLock;
use crate::{events::LockKind, lock_table::Taker};

/// Why the lock must not be broken, if it must not. POSIX locks and leases are never broken;
/// a flock or OFD lock only when it is an orphan (the lock table's one predicate: no holder is
/// its taker, so none may still be relying on it), unless forced.
pub(super) fn refusal(lock: &OwnedLock, force: bool) -> Option<String> {
    match lock.kind() {
        LockKind::Posix => {
            let owner = &lock.holders[0];
            Some(format!(
                "a POSIX lock belongs to its process: only pid {} ({}) can release it, by \
                 unlocking it, by closing any of its descriptors on the file, or by ending",
                owner.pid, owner.comm
            ))
        }
        LockKind::Lease => Some(
            "a lease is not a lock aimlock break releases: its holder gives it up when the \
             lease is broken by an open that conflicts with it"
                .to_owned(),
        ),
        LockKind::Flock | LockKind::Ofd if force || lock.first().orphan => None,
        LockKind::Flock | LockKind::Ofd => match (lock.first().taker, lock.holding_taker()) {
            (Taker::Holding, Some(taker)) => Some(format!(
                "its taker, pid {} ({}), is alive and still holds it: end that process or let \
                 it unlock, or rerun with --force if you know it no longer needs the lock",
                taker.pid, taker.comm
            )),
            _ => Some(
                "its taker is unknown, so a holder may still rely on it: check that none of \
                 the holders uses the lock, then rerun with --force"
                    .to_owned(),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::tests::{owned, table_lock},
        *,
    };

    #[test]
    fn only_orphans_break_without_force_and_posix_locks_never() {
        // i32::MAX is above any pid_max: never a running process.
        let orphan = owned(table_lock(LockKind::Flock, i32::MAX, &[101], 0));
        assert_eq!(refusal(&orphan, false), None);

        // The taker runs but closed its descriptor: a child holds the lock it relies on no more.
        let closed = owned(table_lock(LockKind::Flock, 100, &[101], 0));
        assert_eq!(refusal(&closed, false), None);

        let live = owned(table_lock(LockKind::Flock, 100, &[100], 0));
        let reason = refusal(&live, false).unwrap();
        assert!(
            reason.contains("pid 100 (worker), is alive") && reason.contains("--force"),
            "{reason}"
        );
        assert_eq!(refusal(&live, true), None);

        let ofd = owned(table_lock(LockKind::Ofd, -1, &[101], 0));
        assert!(refusal(&ofd, false).unwrap().contains("unknown"));
        assert_eq!(refusal(&ofd, true), None);

        let posix = owned(table_lock(LockKind::Posix, 100, &[100], 0));
        let reason = refusal(&posix, true).unwrap();
        assert!(reason.contains("pid 100"), "{reason}");

        let lease = owned(table_lock(LockKind::Lease, i32::MAX, &[101], 0));
        assert!(refusal(&lease, true).unwrap().contains("lease"));
    }
}
