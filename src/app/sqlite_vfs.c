/* sqlite_vfs.c — the "agora" SQLite VFS: a persistent memory map of the database, a memory map
 * for reading the WAL and gathered WAL writes. See sqlite_vfs.h for what and why. */
#include "app/sqlite_vfs.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"

/* Address space reserved for a WAL map (reserved, not memory: only pages read are mapped). */
#define WAL_MAP_SIZE ((size_t)1 << 32)
/* Largest write handed to the unix VFS, which writes at most 128 KiB - 1 bytes per call. */
#define WAL_BUF_MAX      (120 * 1024)
#define WAL_FRAME_HEADER 24

/* Both kinds of file start with this; the unix VFS's file is stored right after ours (szOsFile
 * is the sum of both). */
struct shim_file {
    sqlite3_file base;
    sqlite3_file *real;
};

struct db_file {
    struct shim_file shim;
    int fetched; /* pages handed out by xFetch and not yet given back */
};

struct wal_file {
    struct shim_file shim;
    const unsigned char *map; /* WAL_MAP_SIZE bytes of the file, read-only, or NULL */
    sqlite3_int64 known;      /* the file holds at least this many bytes */
    unsigned char *buf;       /* frames not yet written, to go at buf_off */
    sqlite3_int64 buf_off;
    int buf_len, buf_cap;
    int frame_commits; /* the header just buffered is a commit frame's; -1: no header pending */
};

#define REAL(f) (((struct shim_file *)(f))->real)

/* ---- main database file ---- */

static int db_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
    struct db_file *d = (struct db_file *)f;
    const sqlite3_io_methods *m = d->shim.real->pMethods;
    int rc = m->xFetch(d->shim.real, off, amt, pp);
    if (rc == SQLITE_OK && *pp == NULL && d->fetched == 0) {
        /* Past the end of the map: the file may have grown since the map was made (a checkpoint
         * in another process). A size hint of the file's size makes the unix VFS extend its map
         * in place; without pages out, nothing points into the old one. */
        sqlite3_int64 size;
        if (m->xFileSize(d->shim.real, &size) == SQLITE_OK && off + amt <= size &&
            m->xFileControl(d->shim.real, SQLITE_FCNTL_SIZE_HINT, &size) == SQLITE_OK)
            rc = m->xFetch(d->shim.real, off, amt, pp);
    }
    if (rc == SQLITE_OK && *pp != NULL)
        d->fetched++;
    return rc;
}

static int db_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    struct db_file *d = (struct db_file *)f;
    if (p == NULL) /* "drop the whole map": keep it, it is current (see the header) */
        return SQLITE_OK;
    d->fetched--;
    return d->shim.real->pMethods->xUnfetch(d->shim.real, off, p);
}

static int db_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off)
{
    void *p = NULL;
    if (db_fetch(f, off, amt, &p) == SQLITE_OK && p != NULL) {
        memcpy(out, p, (size_t)amt);
        return db_unfetch(f, off, p);
    }
    return REAL(f)->pMethods->xRead(REAL(f), out, amt, off);
}

static int db_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int db_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xWrite(REAL(f), data, amt, off);
}
static int db_truncate(sqlite3_file *f, sqlite3_int64 size) { return REAL(f)->pMethods->xTruncate(REAL(f), size); }
static int db_sync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int db_file_size(sqlite3_file *f, sqlite3_int64 *size) { return REAL(f)->pMethods->xFileSize(REAL(f), size); }
static int db_lock(sqlite3_file *f, int lock) { return REAL(f)->pMethods->xLock(REAL(f), lock); }
static int db_unlock(sqlite3_file *f, int lock) { return REAL(f)->pMethods->xUnlock(REAL(f), lock); }
static int db_check_reserved(sqlite3_file *f, int *out) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out); }
static int db_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
/* shared by both kinds of file */
static int shim_sector_size(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int shim_device_characteristics(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int db_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, pp);
}
static int db_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void db_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int db_shm_unmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }

static const sqlite3_io_methods db_methods = {
    .iVersion = 3,
    .xClose = db_close,
    .xRead = db_read,
    .xWrite = db_write,
    .xTruncate = db_truncate,
    .xSync = db_sync,
    .xFileSize = db_file_size,
    .xLock = db_lock,
    .xUnlock = db_unlock,
    .xCheckReservedLock = db_check_reserved,
    .xFileControl = db_file_control,
    .xSectorSize = shim_sector_size,
    .xDeviceCharacteristics = shim_device_characteristics,
    .xShmMap = db_shm_map,
    .xShmLock = db_shm_lock,
    .xShmBarrier = db_shm_barrier,
    .xShmUnmap = db_shm_unmap,
    .xFetch = db_fetch,
    .xUnfetch = db_unfetch,
};

/* ---- WAL file ---- */

/* Writes amt bytes at off through the unix VFS, and notes that the file now holds them. */
static int wal_put(struct wal_file *w, const void *data, int amt, sqlite3_int64 off)
{
    int rc = w->shim.real->pMethods->xWrite(w->shim.real, data, amt, off);
    if (rc == SQLITE_OK && off + amt > w->known)
        w->known = off + amt;
    return rc;
}

/* Writes the gathered frames. Returns the unix VFS's code; the buffer is empty afterwards. */
static int wal_flush(struct wal_file *w)
{
    if (w->buf_len == 0)
        return SQLITE_OK;
    int rc = wal_put(w, w->buf, w->buf_len, w->buf_off);
    w->buf_len = 0;
    w->frame_commits = -1;
    return rc;
}

/* Makes room for amt more bytes (at most WAL_BUF_MAX in all; out of memory aborts, core/alloc.h). */
static void wal_reserve(struct wal_file *w, int amt)
{
    if (w->buf_len + amt <= w->buf_cap)
        return;
    int cap = w->buf_cap > 0 ? w->buf_cap : 64 * 1024;
    while (cap < w->buf_len + amt)
        cap *= 2;
    w->buf = alloc_realloc(w->buf, (size_t)cap);
    w->buf_cap = cap;
}

static int wal_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off)
{
    struct wal_file *w = (struct wal_file *)f;
    int rc;
    if (w->buf_len > 0 && (off != w->buf_off + w->buf_len || w->buf_len + amt > WAL_BUF_MAX) &&
        (rc = wal_flush(w)) != SQLITE_OK)
        return rc;
    if (amt > WAL_BUF_MAX) { /* write it as it comes */
        if ((rc = wal_flush(w)) == SQLITE_OK)
            rc = wal_put(w, data, amt, off);
        return rc;
    }
    wal_reserve(w, amt);
    if (w->buf_len == 0)
        w->buf_off = off;
    memcpy(w->buf + w->buf_len, data, (size_t)amt);
    w->buf_len += amt;
    if (amt == WAL_FRAME_HEADER) {
        /* bytes 4-7: the database size in pages after a commit, 0 in other frames */
        const unsigned char *h = data;
        w->frame_commits = (h[4] | h[5] | h[6] | h[7]) != 0;
        return SQLITE_OK;
    }
    /* a page after a non-commit header waits for the rest of the transaction; a commit frame, or
     * anything that is not a frame (the WAL header), is written now */
    int wait = w->frame_commits == 0;
    w->frame_commits = -1;
    return wait ? SQLITE_OK : wal_flush(w);
}

static int wal_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off)
{
    struct wal_file *w = (struct wal_file *)f;
    int rc = wal_flush(w);
    if (rc != SQLITE_OK)
        return rc;
    if (w->map != NULL && off >= 0 && (size_t)off + (size_t)amt <= WAL_MAP_SIZE) {
        sqlite3_int64 size;
        if (off + amt > w->known && w->shim.real->pMethods->xFileSize(w->shim.real, &size) == SQLITE_OK)
            w->known = size; /* written by another process since */
        if (off + amt <= w->known) {
            memcpy(out, w->map + off, (size_t)amt);
            return SQLITE_OK;
        }
    }
    return w->shim.real->pMethods->xRead(w->shim.real, out, amt, off); /* past the end: a short read */
}

static int wal_close(sqlite3_file *f)
{
    struct wal_file *w = (struct wal_file *)f;
    int rc = wal_flush(w);
    free(w->buf);
    w->buf = NULL;
    if (w->map != NULL)
        munmap((void *)w->map, WAL_MAP_SIZE);
    w->map = NULL;
    int rc2 = w->shim.real->pMethods->xClose(w->shim.real);
    return rc != SQLITE_OK ? rc : rc2;
}

static int wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct wal_file *w = (struct wal_file *)f;
    int rc = wal_flush(w);
    if (rc == SQLITE_OK)
        rc = w->shim.real->pMethods->xTruncate(w->shim.real, size);
    if (w->known > size)
        w->known = size;
    return rc;
}

static int wal_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    struct wal_file *w = (struct wal_file *)f;
    int rc = wal_flush(w);
    if (rc == SQLITE_OK && (rc = w->shim.real->pMethods->xFileSize(w->shim.real, size)) == SQLITE_OK)
        w->known = *size;
    return rc;
}

/* Every other call writes the gathered frames first, then goes to the unix VFS. */
#define FLUSHED(call)                                                                                                  \
    int rc = wal_flush((struct wal_file *)f);                                                                          \
    return rc != SQLITE_OK ? rc : REAL(f)->pMethods->call

static int wal_sync(sqlite3_file *f, int flags) { FLUSHED(xSync(REAL(f), flags)); }
static int wal_lock(sqlite3_file *f, int lock) { FLUSHED(xLock(REAL(f), lock)); }
static int wal_unlock(sqlite3_file *f, int lock) { FLUSHED(xUnlock(REAL(f), lock)); }
static int wal_check_reserved(sqlite3_file *f, int *out) { FLUSHED(xCheckReservedLock(REAL(f), out)); }
static int wal_file_control(sqlite3_file *f, int op, void *arg) { FLUSHED(xFileControl(REAL(f), op, arg)); }

static const sqlite3_io_methods wal_methods = {
    .iVersion = 1,
    .xClose = wal_close,
    .xRead = wal_read,
    .xWrite = wal_write,
    .xTruncate = wal_truncate,
    .xSync = wal_sync,
    .xFileSize = wal_file_size,
    .xLock = wal_lock,
    .xUnlock = wal_unlock,
    .xCheckReservedLock = wal_check_reserved,
    .xFileControl = wal_file_control,
    .xSectorSize = shim_sector_size,
    .xDeviceCharacteristics = shim_device_characteristics,
};

/* Maps the WAL read-only. The descriptor is closed at once: the map keeps the file, and SQLite
 * takes no POSIX locks on the WAL that closing a descriptor could drop. */
static const unsigned char *wal_map(const char *name)
{
    int fd = open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    void *m = mmap(NULL, WAL_MAP_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return m == MAP_FAILED ? NULL : m;
}

/* ---- the VFS ---- */

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    sqlite3_vfs *root = vfs->pAppData;
    if (flags & SQLITE_OPEN_WAL) {
        struct wal_file *w = (struct wal_file *)f;
        memset(w, 0, sizeof *w);
        w->shim.real = (sqlite3_file *)(w + 1);
        w->frame_commits = -1;
        int rc = root->xOpen(root, name, w->shim.real, flags, out_flags);
        if (w->shim.real->pMethods == NULL) {
            f->pMethods = NULL;
            return rc;
        }
        w->map = wal_map(name);
        f->pMethods = &wal_methods;
        return rc;
    }
    if (flags & SQLITE_OPEN_MAIN_DB) {
        struct db_file *d = (struct db_file *)f;
        d->shim.real = (sqlite3_file *)(d + 1);
        d->fetched = 0;
        int rc = root->xOpen(root, name, d->shim.real, flags, out_flags);
        if (d->shim.real->pMethods == NULL) {
            f->pMethods = NULL;
            return rc;
        }
        if (d->shim.real->pMethods->iVersion < 3) { /* no memory map to keep: not ours to wrap */
            d->shim.real->pMethods->xClose(d->shim.real);
            f->pMethods = NULL;
            return SQLITE_CANTOPEN;
        }
        f->pMethods = &db_methods;
        return rc;
    }
    return root->xOpen(root, name, f, flags, out_flags); /* journals, temp files: unchanged */
}

#define ROOT(vfs) ((sqlite3_vfs *)(vfs)->pAppData)
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync) { return ROOT(v)->xDelete(ROOT(v), name, sync); }
static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    return ROOT(v)->xAccess(ROOT(v), name, flags, out);
}
static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    return ROOT(v)->xFullPathname(ROOT(v), name, n, out);
}
static void *vfs_dlopen(sqlite3_vfs *v, const char *name) { return ROOT(v)->xDlOpen(ROOT(v), name); }
static void vfs_dlerror(sqlite3_vfs *v, int n, char *msg) { ROOT(v)->xDlError(ROOT(v), n, msg); }
static void (*vfs_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void) { return ROOT(v)->xDlSym(ROOT(v), h, sym); }
static void vfs_dlclose(sqlite3_vfs *v, void *h) { ROOT(v)->xDlClose(ROOT(v), h); }
static int vfs_randomness(sqlite3_vfs *v, int n, char *out) { return ROOT(v)->xRandomness(ROOT(v), n, out); }
static int vfs_sleep(sqlite3_vfs *v, int us) { return ROOT(v)->xSleep(ROOT(v), us); }
static int vfs_current_time(sqlite3_vfs *v, double *t) { return ROOT(v)->xCurrentTime(ROOT(v), t); }
static int vfs_last_error(sqlite3_vfs *v, int n, char *s) { return ROOT(v)->xGetLastError(ROOT(v), n, s); }
static int vfs_current_time64(sqlite3_vfs *v, sqlite3_int64 *t) { return ROOT(v)->xCurrentTimeInt64(ROOT(v), t); }

/* SQLite keeps a pointer to the registered VFS for the life of the process, so it lives in static
 * storage; it is written once, under pthread_once, before anyone can use it. */
static sqlite3_vfs agora_vfs;
static int agora_vfs_ok;

static void vfs_register(void)
{
    sqlite3_vfs *root = sqlite3_vfs_find("unix");
    if (root == NULL || root->iVersion < 2)
        return;
    int sz_file =
        (int)(sizeof(struct wal_file) > sizeof(struct db_file) ? sizeof(struct wal_file) : sizeof(struct db_file));
    agora_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = sz_file + root->szOsFile,
        .mxPathname = root->mxPathname,
        .zName = SQLITE_VFS_AGORA,
        .pAppData = root,
        .xOpen = vfs_open,
        .xDelete = vfs_delete,
        .xAccess = vfs_access,
        .xFullPathname = vfs_full_pathname,
        .xDlOpen = vfs_dlopen,
        .xDlError = vfs_dlerror,
        .xDlSym = vfs_dlsym,
        .xDlClose = vfs_dlclose,
        .xRandomness = vfs_randomness,
        .xSleep = vfs_sleep,
        .xCurrentTime = vfs_current_time,
        .xGetLastError = vfs_last_error,
        .xCurrentTimeInt64 = vfs_current_time64,
    };
    agora_vfs_ok = sqlite3_vfs_register(&agora_vfs, 0) == SQLITE_OK;
}

const char *sqlite_vfs_agora(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, vfs_register);
    return agora_vfs_ok ? SQLITE_VFS_AGORA : NULL;
}
