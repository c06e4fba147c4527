/* sqlite_vfs.h — "agora", a thin SQLite VFS over the unix one, for several processes that share
 * one database file in WAL mode.
 *
 * Why: every commit makes every other connection throw its whole page cache away at the start of
 * its next read transaction (and, with SQLite's memory map, unmap the whole file). With three
 * servers committing hundreds of times a second, almost every request re-read each page it
 * touched, one pread() or page fault each, and every commit wrote each WAL frame with two
 * pwrite() calls. This VFS changes only how bytes move, never what SQLite sees:
 *
 *  - Main database file: SQLite's memory map (PRAGMA mmap_size) is kept when SQLite asks to drop
 *    it after another connection's commit. The map is MAP_SHARED, so it always shows the file as
 *    it is now; SQLite only reads pages inside its read snapshot, which the file holds (a
 *    checkpoint never overwrites or truncates what a live snapshot still reads from the file).
 *    When the file has grown past the map, the map is extended in place (mremap keeps the
 *    pages already mapped). Reads that SQLite sends through xRead are copied from the map too.
 *  - WAL file: read through a read-only MAP_SHARED map of the file instead of pread(). Frames
 *    are only read inside a snapshot, i.e. after they were written, and a WAL is never truncated
 *    while a snapshot still uses it.
 *  - WAL writes: a transaction's frames (24-byte header + page each) are gathered in a buffer and
 *    written with one call per ~120 KiB; the write of a commit frame (a header with a non-zero
 *    database size) returns only once everything up to it is in the file, before SQLite
 *    publishes the commit in the wal-index. Any other call on the file writes the buffer first.
 *
 * Everything else is the unix VFS's: locking, shared memory, syncs. Falls back to plain reads
 * where a map is missing or too small (for instance a database larger than mmap_size). */
#ifndef AGORA_APP_SQLITE_VFS_H
#define AGORA_APP_SQLITE_VFS_H

#define SQLITE_VFS_AGORA "agora"

/* Registers the VFS with SQLite once per process (thread-safe) and returns its name for
 * sqlite3_open_v2(), or NULL when it cannot be registered (then SQLite's default VFS is used). */
const char *sqlite_vfs_agora(void);

#endif
