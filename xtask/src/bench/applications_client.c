/* The applications section's client: what a real program does with its locks, with as little
 * cost of its own as possible, so that a tracer's share shows.
 *
 *   applications_client sqlite DB N   N single-row transactions (BEGIN IMMEDIATE; INSERT;
 *                                     COMMIT) on DB, with Debian's libsqlite3 and its
 *                                     defaults (rollback journal, synchronous=FULL)
 *   applications_client dpkg DIR N    N rounds of dpkg's locking: DIR/lock-frontend then
 *                                     DIR/lock, each a whole-file fcntl F_SETLK write lock,
 *                                     a status file rewritten and renamed, then both unlocked
 *                                     and closed in reverse order
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, const char *detail) {
    fprintf(stderr, "applications_client: %s: %s\n", what, detail);
    return 1;
}

static int sqlite(const char *path, long count) {
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return fail(path, sqlite3_errmsg(db));
    char *error = NULL;
    if (sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER)",
                     NULL, NULL, &error) != SQLITE_OK)
        return fail("create table", error);
    sqlite3_stmt *begin, *insert, *commit;
    if (sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO t (v) VALUES (?)", -1, &insert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL) != SQLITE_OK)
        return fail("prepare", sqlite3_errmsg(db));
    for (long i = 0; i < count; i++) {
        sqlite3_bind_int64(insert, 1, i);
        sqlite3_stmt *steps[] = {begin, insert, commit};
        for (int s = 0; s < 3; s++) {
            if (sqlite3_step(steps[s]) != SQLITE_DONE)
                return fail("transaction", sqlite3_errmsg(db));
            sqlite3_reset(steps[s]);
        }
    }
    sqlite3_finalize(begin);
    sqlite3_finalize(insert);
    sqlite3_finalize(commit);
    return sqlite3_close(db) == SQLITE_OK ? 0 : fail("close", sqlite3_errmsg(db));
}

/* dpkg's file_lock(): a whole-file write lock with F_SETLK, failing at once when held. */
static int lock_file(const char *path, short type, int fd) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &fl) < 0)
        return fail(path, strerror(errno));
    return 0;
}

static int dpkg(const char *dir, long count) {
    char frontend[4096], lock[4096], status[4096], status_new[4096];
    snprintf(frontend, sizeof frontend, "%s/lock-frontend", dir);
    snprintf(lock, sizeof lock, "%s/lock", dir);
    snprintf(status, sizeof status, "%s/status", dir);
    snprintf(status_new, sizeof status_new, "%s/status-new", dir);
    static const char entry[] = "Package: aimlock\nStatus: install ok installed\n\n";
    for (long i = 0; i < count; i++) {
        int front_fd = open(frontend, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (front_fd < 0 || lock_file(frontend, F_WRLCK, front_fd))
            return fail(frontend, "open or lock");
        int lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (lock_fd < 0 || lock_file(lock, F_WRLCK, lock_fd))
            return fail(lock, "open or lock");
        int out = open(status_new, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0 || write(out, entry, sizeof entry - 1) != (ssize_t)(sizeof entry - 1) ||
            close(out) < 0 || rename(status_new, status) < 0)
            return fail(status, strerror(errno));
        if (lock_file(lock, F_UNLCK, lock_fd) || close(lock_fd) < 0 ||
            lock_file(frontend, F_UNLCK, front_fd) || close(front_fd) < 0)
            return fail(dir, "unlock");
    }
    return 0;
}

int main(int argc, char **argv) {
    char *end = NULL;
    long count = argc == 4 ? strtol(argv[3], &end, 10) : 0;
    if (argc != 4 || *end != '\0' || count <= 0)
        return fail("usage", "applications_client sqlite DB N | dpkg DIR N");
    if (strcmp(argv[1], "sqlite") == 0)
        return sqlite(argv[2], count);
    if (strcmp(argv[1], "dpkg") == 0)
        return dpkg(argv[2], count);
    return fail("unknown mode", argv[1]);
}
