/* crashguard.c: poison messages that crash the process; see crashguard.h.
 *
 * The file is one fixed struct (cg_file_t), mapped MAP_SHARED: slot and strike writes are
 * plain memory stores, which the kernel keeps when the process dies. A slot is written with
 * its length cleared first and set last, so a crash in the middle of an enter leaves the
 * slot empty or whole, never a torn id. Strikes are touched on the loop thread only. */
#define _GNU_SOURCE
#include "crashguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "errf.h"
#include "log.h"

#define CG_MAGIC   0x47434253u /* "SBCG" */
#define CG_VERSION 1u
#define CG_STRIKES 64

typedef struct cg_id {
    _Atomic uint32_t len; /* 0: empty */
    char id[SB__CRASHGUARD_ID_MAX];
} cg_id_t;

typedef struct cg_strike {
    uint32_t count;
    uint32_t len;
    char id[SB__CRASHGUARD_ID_MAX];
} cg_strike_t;

typedef struct cg_file {
    uint32_t magic, version;
    cg_id_t exec[SB__CRASHGUARD_SLOTS];
    cg_strike_t strikes[CG_STRIKES];
} cg_file_t;

struct sb__crashguard {
    cg_file_t *f;
    unsigned max;
    unsigned n_struck; /* strike entries in use */
};

static _Atomic unsigned next_worker_slot = 1;
static _Thread_local int my_slot = -1;

static size_t clamp_len(size_t len)
{
    return len > SB__CRASHGUARD_ID_MAX ? SB__CRASHGUARD_ID_MAX : len;
}

static cg_strike_t *find_strike(const cg_file_t *f, const char *id, size_t len)
{
    len = clamp_len(len);
    for (unsigned i = 0; i < CG_STRIKES; i++) {
        const cg_strike_t *s = &f->strikes[i];
        if (s->count && s->len == len && !memcmp(s->id, id, len))
            return (cg_strike_t *)s;
    }
    return NULL;
}

/* One more strike for id: its entry, else a free one, else the one with the fewest. */
static unsigned add_strike(cg_file_t *f, const char *id, size_t len)
{
    len = clamp_len(len);
    cg_strike_t *s = find_strike(f, id, len);
    if (!s) {
        s = &f->strikes[0];
        for (unsigned i = 0; i < CG_STRIKES && s->count; i++)
            if (!f->strikes[i].count || f->strikes[i].count < s->count)
                s = &f->strikes[i];
        s->count = 0;
        s->len = (uint32_t)len;
        memcpy(s->id, id, len);
    }
    return ++s->count;
}

int sb__crashguard_open(const char *path, unsigned max_crashes, sb__crashguard_t **out,
                        char *errstr, size_t n)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return sb__errf(errstr, n, SB_EIO, "crash guard: cannot open %s: %s", path,
                        strerror(errno));
    struct stat st;
    bool fresh = fstat(fd, &st) != 0 || st.st_size != (off_t)sizeof(cg_file_t);
    if (fresh && ftruncate(fd, 0) == 0 && ftruncate(fd, sizeof(cg_file_t)) != 0) {
        int e = errno;
        close(fd);
        return sb__errf(errstr, n, SB_EIO, "crash guard: cannot size %s: %s", path, strerror(e));
    }
    void *map = mmap(NULL, sizeof(cg_file_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return sb__errf(errstr, n, SB_EIO, "crash guard: cannot map %s: %s", path, strerror(e));
    cg_file_t *f = map;
    if (f->magic != CG_MAGIC || f->version != CG_VERSION) {
        memset(f, 0, sizeof *f);
        f->magic = CG_MAGIC;
        f->version = CG_VERSION;
    }
    sb__crashguard_t *g = sb_calloc(1, sizeof *g);
    if (!g) {
        munmap(map, sizeof(cg_file_t));
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    }
    g->f = f;
    g->max = max_crashes ? max_crashes : 3;
    for (unsigned i = 0; i < SB__CRASHGUARD_SLOTS; i++) {
        uint32_t len = atomic_load(&f->exec[i].len);
        if (!len || len > SB__CRASHGUARD_ID_MAX)
            continue;
        unsigned k = add_strike(f, f->exec[i].id, len);
        sb__log(SB_LOG_WARN, NULL,
                "crash guard: the previous process died while a handler ran event %.*s (%u of "
                "%u crashes before it is dead-lettered unhandled)",
                (int)len, f->exec[i].id, k, g->max);
        atomic_store(&f->exec[i].len, 0);
    }
    for (unsigned i = 0; i < CG_STRIKES; i++)
        if (f->strikes[i].count)
            g->n_struck++;
    *out = g;
    return SB_EOK;
}

void sb__crashguard_close(sb__crashguard_t *g)
{
    if (!g)
        return;
    munmap(g->f, sizeof(cg_file_t));
    sb_free(g);
}

static int slot_of(bool on_loop)
{
    if (on_loop)
        return 0;
    if (my_slot < 0) {
        unsigned s = atomic_fetch_add(&next_worker_slot, 1);
        my_slot = s < SB__CRASHGUARD_SLOTS ? (int)s : SB__CRASHGUARD_SLOTS;
    }
    return my_slot < SB__CRASHGUARD_SLOTS ? my_slot : -1;
}

void sb__crashguard_enter(sb__crashguard_t *g, bool on_loop, const char *id, size_t len)
{
    int s = g && id && len ? slot_of(on_loop) : -1;
    if (s < 0)
        return;
    cg_id_t *e = &g->f->exec[s];
    len = clamp_len(len);
    atomic_store(&e->len, 0);
    memcpy(e->id, id, len);
    atomic_store(&e->len, (uint32_t)len);
}

void sb__crashguard_leave(sb__crashguard_t *g, bool on_loop)
{
    int s = g ? slot_of(on_loop) : -1;
    if (s >= 0)
        atomic_store(&g->f->exec[s].len, 0);
}

unsigned sb__crashguard_strikes(const sb__crashguard_t *g, const char *id, size_t len)
{
    if (!g || !g->n_struck || !id)
        return 0;
    const cg_strike_t *s = find_strike(g->f, id, len);
    return s ? s->count : 0;
}

unsigned sb__crashguard_max(const sb__crashguard_t *g)
{
    return g ? g->max : 0;
}

void sb__crashguard_clear(sb__crashguard_t *g, const char *id, size_t len)
{
    if (!g || !g->n_struck || !id)
        return;
    cg_strike_t *s = find_strike(g->f, id, len);
    if (s) {
        s->count = 0;
        g->n_struck--;
    }
}
