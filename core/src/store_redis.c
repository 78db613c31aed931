/* store_redis.c: the Redis idempotency store (see store_redis.h for the contract).
 *
 * Design: one hiredis async connection attached to the runtime's libevent loop. Every call
 * becomes one command written at once (hiredis buffers and flushes from the loop, so all
 * in-flight messages share round trips); the reply callback answers the caller. A claim is
 * the plain SET key inprogress:<owner> NX PX lease; when the key exists, a small Lua script
 * learns why (done, held by someone else, or ours already) in one more round trip. The
 * other operations are one script each (complete and release check the owner), except a
 * complete while our lease is certainly still running: see complete_is_fast(). The connection has
 * three states: down (reconnect timer armed), connecting (TCP connect plus AUTH / SELECT / SCRIPT
 * LOAD, all pipelined) and up. Only "up" accepts work; in the other two every call is answered at
 * once, so the dispatcher never waits on a dead Redis. A watchdog timer turns a silent
 * Redis (commands outstanding, no reply for command_timeout_ms) into a disconnect, which
 * answers everything outstanding.
 *
 * A local set of keys claimed by this process and not yet finished stops two copies of one
 * event in flight here from both running (in Redis both would look like "ours").
 *
 * It does not: follow Redis Cluster redirections, speak TLS (hiredis 0.14), resolve host
 * names asynchronously (hiredis calls getaddrinfo when connecting), or retry a failed claim
 * itself (the dispatcher retries the message later). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "errf.h"
#include "log.h"
#include "retry.h"
#include "store_redis.h"

#define DEFAULT_MAX_OUTSTANDING 10000u
#define DEFAULT_TIMEOUT_MS      5000u
#define BACKOFF_MIN_MS          100u
#define WATCHDOG_MS             250u
#define COALESCE_US             250 /* a small write waits this long for more commands */
#define COALESCE_MAX            64  /* commands that make a write big enough to go at once */

enum { OP_CLAIM = 0, OP_COMPLETE = 1, OP_RELEASE = 2, OP_EXTEND = 3, N_OPS = 4 };
enum { ST_DOWN = 0, ST_CONNECTING = 1, ST_UP = 2 };

/* KEYS[1] the key, ARGV[1] "inprogress:<owner>", ARGV[2] milliseconds. */
static const char *const scripts[N_OPS] = {
    /* claim: 0 owned, 1 done, 2 busy */
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 0 end "
    "if v == 'done' then return 1 end "
    "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 0 end "
    "return 2",
    /* complete: 1 done, 0 held by another owner */
    "local v = redis.call('GET', KEYS[1]) "
    "if v == 'done' then return 1 end "
    "if (not v) or v == ARGV[1] then redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2]) "
    "return 1 end "
    "return 0",
    /* release: 1 deleted, 0 not ours */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end "
    "return 0",
    /* extend: 1 extended, 0 not ours */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "return 1 end "
    "return 0",
};
static const char *const op_names[N_OPS] = {"claim", "complete", "release", "extend"};

typedef struct rstore rstore_t;
typedef struct kent kent_t;

/* One command awaiting its reply (or, for a complete, awaiting a replay). */
typedef struct req {
    rstore_t *s;
    struct req *next; /* replay list */
    uint8_t op;
    bool eval;   /* re-sent as EVAL after NOSCRIPT */
    bool script; /* a claim the plain SET NX did not take: asked again with the script */
    bool fast;   /* a complete sent as SET key done XX PX ttl (see complete_is_fast) */
    uint64_t ms;
    uint64_t sent_ms; /* when it was last written (claims and extends: the lease's start) */
    kent_t *kent;     /* a claim: its entry in the local key set (NULL once gone) */
    sb__claim_cb claim_cb;
    sb__store_done_cb done_cb;
    void *arg;
    size_t klen;
    char key[];
} req_t;

/* The local set of keys claimed by this process (claim sent or owned). */
struct kent {
    kent_t *next;
    uint64_t h;
    uint64_t valid_until; /* our lease certainly runs until then (mono ms); 0: unknown */
    req_t *claim;         /* the claim awaiting its answer, if any */
    char key[];
};

/* Handshake steps (privdata of their replies). */
enum { HS_AUTH = 0, HS_SELECT = 1, HS_LOAD0 = 2, HS_PROBE = HS_LOAD0 + N_OPS, HS_N };
static const int hs_steps[HS_N] = {0, 1, 2, 3, 4, 5, 6};

/* Error replies that say Redis takes no writes now (out of memory, a replica, loading,
 * failing to persist, a busy script, permissions, cluster trouble), as opposed to one
 * command's own error. */
static bool refuses_writes(const char *err)
{
    static const char *const prefixes[] = {
        "OOM ",   "READONLY", "LOADING",  "BUSY ",  "MASTERDOWN", "NOREPLICAS",  "MISCONF",
        "NOAUTH", "NOPERM",   "TRYAGAIN", "MOVED ", "ASK ",       "CLUSTERDOWN", NULL};
    for (int i = 0; prefixes[i]; i++)
        if (!strncmp(err, prefixes[i], strlen(prefixes[i])))
            return true;
    return false;
}

struct rstore {
    sb__store_t base; /* must be first */
    sb__runtime_t *rt;
    struct event_base *evbase;
    sb__redis_url_t url;
    char where[300];      /* host:port or the socket path, for logs */
    char *owner;          /* "inprogress:<owner>" (owner starts at owner + 11) */
    char *probe_key;      /* written with XX (so never created) to learn that writes are taken */
    struct event *wdelay; /* the coalesced write (coalesce_add_write) */
    unsigned wbatch;      /* commands added since the last write was let go */
    size_t owner_len;
    redisAsyncContext *ac; /* NULL while down */
    int state;
    int hs_pending;
    char sha[N_OPS][41];
    size_t outstanding, max_outstanding;
    uint64_t command_timeout_ms, connect_timeout_ms, backoff_max_ms, backoff_ms;
    uint64_t last_progress_ms, connect_started_ms;
    sb__timer_t *reconnect, *watchdog;
    req_t *replay, *replay_tail;
    size_t n_replay;
    kent_t **kset;
    size_t kset_mask, kset_n;
    bool destroying;
    bool hold_completes;
    bool outage_logged; /* this outage was logged already */
    bool reply_error_logged;
    void (*state_cb)(void *arg, bool up);
    void *state_arg;
    sb__redis_store_stats_t stats;
    char last_error[256];
    char last_logged[256];
};

static const sb__store_ops_t redis_ops;

/* The coarse clock (a few ms of resolution, several times cheaper: it is read for every
 * command and reply). It lags the precise one by up to a tick, so a command's sent_ms is
 * never later than the truth; the lease margin (at least 100 ms) covers reading "now" a
 * tick early. */
static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- URL ------------------------------------------------------------------------------ */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, e) into out (size n). false if malformed or too long. */
static bool pct_decode(const char *s, const char *e, char *out, size_t n)
{
    size_t k = 0;
    while (s < e) {
        int c = (unsigned char)*s++;
        if (c == '%') {
            if (e - s < 2 || hexval(s[0]) < 0 || hexval(s[1]) < 0)
                return false;
            c = hexval(s[0]) * 16 + hexval(s[1]);
            s += 2;
            if (c == 0)
                return false;
        }
        if (k + 1 >= n)
            return false;
        out[k++] = (char)c;
    }
    out[k] = '\0';
    return true;
}

/* Digits [s, e) as an int in [lo, hi]; false otherwise. */
static bool parse_int(const char *s, const char *e, long lo, long hi, int *out)
{
    if (s == e || e - s > 9)
        return false;
    long v = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (*s - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

int sb__redis_url_parse(const char *url, sb__redis_url_t *u, char *errstr, size_t n)
{
    if (!url || !u)
        return sb__errf(errstr, n, SB_EINVAL, "no Redis URL");
    memset(u, 0, sizeof *u);
    u->port = 6379;
    const char *p;
    if (!strncmp(url, "redis://", 8)) {
        p = url + 8;
    } else if (!strncmp(url, "unix://", 7)) {
        p = url + 7;
        u->is_unix = true;
    } else if (!strncmp(url, "rediss://", 9)) {
        return sb__errf(errstr, n, SB_ECONFIG,
                        "Redis URL: rediss:// (TLS) is not supported by this build's hiredis "
                        "0.14; see the README (Idempotency with Redis)");
    } else {
        return sb__errf(errstr, n, SB_ECONFIG, "Redis URL must start with redis:// or unix://");
    }
    const char *end = p + strlen(p);
    const char *query = strchr(p, '?');
    if (query)
        end = query;
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        bool ok = colon ? pct_decode(p, colon, u->user, sizeof u->user) &&
                              pct_decode(colon + 1, at, u->password, sizeof u->password)
                        : pct_decode(p, at, u->user, sizeof u->user);
        if (!ok)
            return sb__errf(errstr, n, SB_ECONFIG,
                            "Redis URL: malformed or too long user or password");
        p = at + 1;
    }
    if (u->is_unix) {
        if (p >= end || *p != '/')
            return sb__errf(errstr, n, SB_ECONFIG,
                            "Redis URL: unix:// needs an absolute socket path "
                            "(unix:///path/to/redis.sock)");
        if (!pct_decode(p, end, u->path, sizeof u->path))
            return sb__errf(errstr, n, SB_ECONFIG, "Redis URL: socket path malformed or too long");
        if (query) {
            const char *q = query + 1;
            if (strncmp(q, "db=", 3) != 0 || !parse_int(q + 3, q + strlen(q), 0, 1000000, &u->db))
                return sb__errf(errstr, n, SB_ECONFIG,
                                "Redis URL: the only query parameter is db=<number>");
        }
        return SB_EOK;
    }
    if (query)
        return sb__errf(errstr, n, SB_ECONFIG,
                        "Redis URL: no query parameters for redis:// (the database is /N)");
    const char *hs = p, *he;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            return sb__errf(errstr, n, SB_ECONFIG, "Redis URL: unclosed [ in the host");
        hs = p + 1;
        he = rb;
        p = rb + 1;
    } else {
        he = p;
        while (he < end && *he != ':' && *he != '/')
            he++;
        p = he;
    }
    if (he == hs || (size_t)(he - hs) >= sizeof u->host)
        return sb__errf(errstr, n, SB_ECONFIG, "Redis URL: missing or too long host");
    memcpy(u->host, hs, (size_t)(he - hs));
    u->host[he - hs] = '\0';
    if (p < end && *p == ':') {
        const char *ps = ++p;
        while (p < end && *p != '/')
            p++;
        if (!parse_int(ps, p, 1, 65535, &u->port))
            return sb__errf(errstr, n, SB_ECONFIG, "Redis URL: bad port");
    }
    if (p < end && *p == '/') {
        p++;
        if (p < end && !parse_int(p, end, 0, 1000000, &u->db))
            return sb__errf(errstr, n, SB_ECONFIG, "Redis URL: the path must be a database number");
        p = end;
    }
    if (p != end)
        return sb__errf(errstr, n, SB_ECONFIG, "Redis URL: unexpected characters after the host");
    return SB_EOK;
}

/* ---- the local key set ---------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static kent_t **kset_find(rstore_t *s, const char *key, size_t klen, uint64_t h)
{
    kent_t **pp = &s->kset[h & s->kset_mask];
    while (*pp && !((*pp)->h == h && !strcmp((*pp)->key, key)))
        pp = &(*pp)->next;
    (void)klen;
    return pp;
}

static bool kset_has(rstore_t *s, const char *key, size_t klen)
{
    return *kset_find(s, key, klen, fnv1a(key, klen)) != NULL;
}

static int kset_add(rstore_t *s, const char *key, size_t klen, kent_t **out)
{
    if (s->kset_n >= s->kset_mask + 1) { /* grow to keep chains short */
        size_t nsize = (s->kset_mask + 1) * 2;
        kent_t **nt = sb_calloc(nsize, sizeof *nt);
        if (nt) {
            for (size_t i = 0; i <= s->kset_mask; i++) {
                kent_t *e = s->kset[i];
                while (e) {
                    kent_t *next = e->next;
                    e->next = nt[e->h & (nsize - 1)];
                    nt[e->h & (nsize - 1)] = e;
                    e = next;
                }
            }
            sb_free(s->kset);
            s->kset = nt;
            s->kset_mask = nsize - 1;
        } /* else: keep the smaller table; chains get longer, nothing breaks */
    }
    uint64_t h = fnv1a(key, klen);
    kent_t *e = sb_malloc(sizeof *e + klen + 1);
    if (!e)
        return SB_ENOMEM;
    e->h = h;
    e->valid_until = 0;
    e->claim = NULL;
    memcpy(e->key, key, klen + 1);
    kent_t **slot = &s->kset[h & s->kset_mask];
    e->next = *slot;
    *slot = e;
    s->kset_n++;
    *out = e;
    return SB_EOK;
}

/* Forgets key; returns how long our lease on it certainly runs (0: unknown or not held). */
static uint64_t kset_del(rstore_t *s, const char *key, size_t klen)
{
    kent_t **pp = kset_find(s, key, klen, fnv1a(key, klen));
    uint64_t valid_until = 0;
    if (*pp) {
        kent_t *e = *pp;
        valid_until = e->valid_until;
        if (e->claim)
            e->claim->kent = NULL;
        *pp = e->next;
        sb_free(e);
        s->kset_n--;
    }
    return valid_until;
}

/* A claim or extend that Redis took set our lease to r->ms from the moment Redis ran it,
 * which is after we wrote it (r->sent_ms): so, by our clock, the key is ours at least until
 * sent_ms + ms. The margin covers timer granularity and clocks that run at slightly
 * different rates. ok false: the key is not ours (an extend refused), nothing is certain. */
static void note_lease(rstore_t *s, const req_t *r, bool ok)
{
    kent_t *e =
        r->op == OP_CLAIM ? r->kent : *kset_find(s, r->key, r->klen, fnv1a(r->key, r->klen));
    if (!e)
        return; /* completed or released meanwhile */
    uint64_t margin = r->ms / 8 < 100 ? 100 : r->ms / 8;
    e->valid_until = ok && r->ms > margin ? r->sent_ms + r->ms - margin : 0;
}

/* ---- answering ------------------------------------------------------------------------ */

static req_t *req_new(rstore_t *s, int op, const char *key, uint64_t ms)
{
    size_t klen = strlen(key);
    req_t *r = sb_malloc(sizeof *r + klen + 1);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    r->s = s;
    r->op = (uint8_t)op;
    r->ms = ms;
    r->klen = klen;
    memcpy(r->key, key, klen + 1);
    return r;
}

/* Answers r with a Redis result (v: the script's integer) or a failure (v < 0), then frees
 * it. A complete that failed for lack of a connection is kept for replay instead, and with
 * hold_completes its answer waits for the replay's. */
static void answer(rstore_t *s, req_t *r, long long v, int fail_status)
{
    sb__claim_cb ccb = r->claim_cb;
    sb__store_done_cb dcb = r->done_cb;
    void *arg = r->arg;
    if (r->op == OP_CLAIM) {
        sb__claim_result_t cr = SB__CLAIM_ERROR;
        if (v == 0)
            cr = SB__CLAIM_OWNED;
        else if (v == 1)
            cr = SB__CLAIM_DONE;
        else if (v == 2)
            cr = SB__CLAIM_BUSY;
        if (r->kent)
            r->kent->claim = NULL;
        if (cr != SB__CLAIM_OWNED)
            kset_del(s, r->key, r->klen);
        else
            note_lease(s, r, true);
        sb_free(r);
        ccb(arg, cr);
        return;
    }
    int status = v < 0 ? fail_status : v == 1 ? SB_EOK : SB_ESTATE;
    if (r->op == OP_EXTEND && v >= 0)
        note_lease(s, r, v == 1);
    if (r->op == OP_COMPLETE && v < 0 && fail_status == SB_EUNAVAILABLE &&
        s->n_replay < s->max_outstanding) {
        if (s->hold_completes)
            dcb = NULL; /* answered when the replay is */
        else
            r->done_cb = NULL;
        r->next = NULL;
        r->eval = false;
        r->fast = false; /* the lease may run out before the replay: the script decides */
        if (s->replay_tail)
            s->replay_tail->next = r;
        else
            s->replay = r;
        s->replay_tail = r;
        s->n_replay++;
    } else {
        sb_free(r);
    }
    if (dcb)
        dcb(arg, status);
}

static void fail(rstore_t *s, req_t *r, int status)
{
    s->stats.failed++;
    answer(s, r, -1, status);
}

/* ---- connection ----------------------------------------------------------------------- */

static void start_connect(rstore_t *s);

static void schedule_reconnect(rstore_t *s)
{
    uint64_t d = s->backoff_ms;
    uint64_t delay = d / 2 + sb__random_u64() % (d / 2 + 1);
    s->backoff_ms = d * 2 > s->backoff_max_ms ? s->backoff_max_ms : d * 2;
    sb__timer_start(s->reconnect, delay, false);
}

/* The connection is gone (or never came up). Idempotent per connection. free_ctx: we end
 * it ourselves (hiredis then answers its outstanding commands with NULL replies). */
static void drop(rstore_t *s, const char *why, bool free_ctx)
{
    redisAsyncContext *ac = s->ac;
    if (!ac)
        return;
    snprintf(s->last_error, sizeof s->last_error, "%s", why && *why ? why : "connection closed");
    s->ac = NULL;
    bool was_up = s->state == ST_UP;
    s->state = ST_DOWN;
    s->stats.disconnects++;
    if (was_up) {
        sb__log(SB_LOG_WARN, NULL,
                "Redis %s: connection lost (%s); idempotency claims fail until it is back, "
                "reconnecting",
                s->where, s->last_error);
        s->outage_logged = true;
        strcpy(s->last_logged, s->last_error);
    } else if (!s->outage_logged || strcmp(s->last_logged, s->last_error) != 0) {
        /* Once per outage, and again when the reason changes (e.g. refused -> AUTH). */
        sb__log(SB_LOG_WARN, NULL, "Redis %s unavailable: %s; retrying with backoff", s->where,
                s->last_error);
        s->outage_logged = true;
        strcpy(s->last_logged, s->last_error);
    }
    schedule_reconnect(s);
    if (free_ctx)
        redisAsyncFree(ac); /* deferred by hiredis when called from one of its callbacks */
    if (was_up && s->state_cb)
        s->state_cb(s->state_arg, false);
}

/* v in decimal at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* A command in the Redis protocol: what redisFormatCommandArgv makes, without allocating;
 * NUL-terminated like hiredis's own. */
static size_t resp_size(int argc, const size_t *lens)
{
    size_t n = 25;
    for (int i = 0; i < argc; i++)
        n += lens[i] + 25;
    return n;
}

static size_t resp_put(char *buf, int argc, const char *const *argv, const size_t *lens)
{
    char *p = buf;
    *p++ = '*';
    p = put_u64(p, (uint64_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        *p++ = '$';
        p = put_u64(p, lens[i]);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0'; /* hiredis looks at the command with strchr (as it does its own sds ones) */
    return (size_t)(p - buf);
}

static void reply_cb(redisAsyncContext *ac, void *rv, void *priv);

/* Writes r with the bookkeeping; SB_EUNAVAILABLE when not up. A claim is first the plain
 * SET key inprogress:<owner> NX PX lease (a native command costs Redis well under half of
 * a script call, and a fresh key is the common case); only a key that exists already is
 * asked again with the claim script, which tells done from busy from our own. Everything
 * else is EVALSHA (EVAL after NOSCRIPT). */
static int submit(rstore_t *s, req_t *r)
{
    char ms[24];
    const char *argv[6];
    size_t lens[6];
    int argc = 6;
    lens[5] = (size_t)(put_u64(ms, r->ms) - ms);
    argv[5] = ms;
    argv[3] = r->key;
    lens[3] = r->klen;
    if ((r->op == OP_CLAIM && !r->script) || r->fast) {
        /* SET key inprogress:<owner> NX PX lease, or SET key done XX PX ttl */
        argv[0] = "SET";
        argv[1] = r->key;
        argv[2] = r->fast ? "done" : s->owner;
        argv[3] = r->fast ? "XX" : "NX";
        argv[4] = "PX";
        lens[0] = 3;
        lens[1] = r->klen;
        lens[2] = r->fast ? 4 : s->owner_len;
        lens[3] = lens[4] = 2;
    } else {
        argv[0] = r->eval ? "EVAL" : "EVALSHA";
        argv[1] = r->eval ? scripts[r->op] : s->sha[r->op];
        argv[2] = "1";
        argv[4] = s->owner;
        lens[0] = strlen(argv[0]);
        lens[1] = strlen(argv[1]);
        lens[2] = 1;
        lens[4] = s->owner_len;
        if (r->op == OP_RELEASE)
            argc = 5;
    }
    if (!s->ac || s->state != ST_UP)
        return SB_EUNAVAILABLE;
    /* Formatted here (no allocation for the usual sizes), handed to hiredis as is. */
    char stack[512], *buf = stack;
    size_t need = resp_size(argc, lens);
    if (need > sizeof stack && !(buf = sb_malloc(need)))
        return SB_EUNAVAILABLE;
    size_t len = resp_put(buf, argc, argv, lens);
    int rc = redisAsyncFormattedCommand(s->ac, reply_cb, r, buf, len);
    if (buf != stack)
        sb_free(buf);
    if (rc != REDIS_OK)
        return SB_EUNAVAILABLE;
    r->sent_ms = mono_ms();
    if (s->outstanding++ == 0)
        s->last_progress_ms = r->sent_ms;
    s->stats.commands++;
    return SB_EOK;
}

static void reply_cb(redisAsyncContext *ac, void *rv, void *priv)
{
    req_t *r = priv;
    rstore_t *s = r->s;
    redisReply *rep = rv;
    s->outstanding--;
    if (s->destroying) {
        sb_free(r);
        return;
    }
    if (!rep) { /* the connection ended with this command outstanding */
        if (ac == s->ac)
            drop(s, ac->errstr[0] ? ac->errstr : "connection lost", false);
        fail(s, r, SB_EUNAVAILABLE);
        return;
    }
    s->last_progress_ms = mono_ms();
    s->stats.replies++;
    if (r->op == OP_CLAIM && !r->script && rep->type != REDIS_REPLY_ERROR) {
        if (rep->type == REDIS_REPLY_STATUS) { /* OK: the key was free, it is ours */
            answer(s, r, 0, SB_EIO);
            return;
        }
        r->script = true; /* nil: it exists; done, busy or ours? */
        if (submit(s, r) != SB_EOK)
            fail(s, r, SB_EUNAVAILABLE);
        return;
    }
    if (r->fast && rep->type != REDIS_REPLY_ERROR) {
        if (rep->type == REDIS_REPLY_STATUS) { /* OK: done */
            s->stats.fast_completes++;
            answer(s, r, 1, SB_EIO);
            return;
        }
        r->fast = false; /* nil: the key is gone (deleted, evicted): the script decides */
        if (submit(s, r) != SB_EOK)
            fail(s, r, SB_EUNAVAILABLE);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && !r->eval && !strncmp(rep->str, "NOSCRIPT", 8)) {
        /* The script cache was flushed (SCRIPT FLUSH, failover): EVAL caches it again. */
        s->stats.noscript++;
        r->eval = true;
        if (submit(s, r) != SB_EOK)
            fail(s, r, SB_EUNAVAILABLE);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && refuses_writes(rep->str)) {
        /* Not this key's problem: Redis takes no writes now. Treated as an outage, so a
         * complete is replayed (and, held, not answered) rather than taken for done, and
         * the connection is only up again once a write probe passes (see handshake). */
        char why[sizeof s->last_error];
        snprintf(why, sizeof why, "Redis refused a %s: %s", op_names[r->op], rep->str);
        if (ac == s->ac)
            drop(s, why, true);
        fail(s, r, SB_EUNAVAILABLE);
        return;
    }
    if (rep->type != REDIS_REPLY_INTEGER) {
        if (!s->reply_error_logged) {
            s->reply_error_logged = true;
            sb__log(SB_LOG_ERROR, NULL, "Redis %s: %s failed: %s", s->where, op_names[r->op],
                    rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply type");
        }
        fail(s, r, SB_EIO);
        return;
    }
    answer(s, r, rep->integer, SB_EIO);
}

static void replay_completes(rstore_t *s)
{
    req_t *r = s->replay;
    s->replay = s->replay_tail = NULL;
    s->n_replay = 0;
    while (r) {
        req_t *next = r->next;
        r->next = NULL;
        s->stats.replayed++;
        if (submit(s, r) != SB_EOK)
            fail(s, r, SB_EUNAVAILABLE); /* kept for the next connection (or answered) */
        r = next;
    }
}

static void became_up(rstore_t *s)
{
    s->state = ST_UP;
    s->backoff_ms = BACKOFF_MIN_MS;
    s->stats.connects++;
    s->reply_error_logged = false;
    sb__log(SB_LOG_INFO, NULL, "Redis %s: connected (db %d)%s", s->where, s->url.db,
            s->outage_logged ? ", idempotency store available again" : "");
    s->outage_logged = false;
    s->last_logged[0] = '\0';
    replay_completes(s); /* before any new claim on this connection */
    if (s->state_cb)
        s->state_cb(s->state_arg, true);
}

static void handshake_cb(redisAsyncContext *ac, void *rv, void *priv)
{
    rstore_t *s = ac->data;
    redisReply *rep = rv;
    int step = *(const int *)priv;
    if (s->destroying || ac != s->ac)
        return;
    if (!rep) {
        drop(s, ac->errstr[0] ? ac->errstr : "connection lost during the handshake", false);
        return;
    }
    char why[sizeof s->last_error];
    if (rep->type == REDIS_REPLY_ERROR) {
        if (step == HS_AUTH)
            snprintf(why, sizeof why, "AUTH failed: %s", rep->str);
        else if (step == HS_SELECT)
            snprintf(why, sizeof why, "SELECT %d failed: %s", s->url.db, rep->str);
        else if (step == HS_PROBE)
            snprintf(why, sizeof why, "Redis refuses writes: %s", rep->str);
        else
            snprintf(why, sizeof why, "SCRIPT LOAD failed: %s", rep->str);
        if (!s->outage_logged || strcmp(s->last_logged, why) != 0) /* once per reason */
            sb__log(SB_LOG_ERROR, NULL, "Redis %s: %s", s->where, why);
        s->outage_logged = true;
        snprintf(s->last_logged, sizeof s->last_logged, "%s", why);
        drop(s, why, true);
        return;
    }
    if (step >= HS_LOAD0 && step < HS_PROBE) {
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
            drop(s, "SCRIPT LOAD: unexpected reply", true);
            return;
        }
        memcpy(s->sha[step - HS_LOAD0], rep->str, 40);
        s->sha[step - HS_LOAD0][40] = '\0';
    }
    if (--s->hs_pending == 0)
        became_up(s);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rstore_t *s = ac->data;
    if (status != REDIS_OK && !s->destroying && ac == s->ac)
        drop(s, ac->errstr[0] ? ac->errstr : "connect failed", false);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rstore_t *s = ac->data;
    (void)status;
    if (!s->destroying && ac == s->ac)
        drop(s, ac->errstr[0] ? ac->errstr : "connection closed by the server", false);
}

static int hs_command(rstore_t *s, int step, int argc, const char **argv, const size_t *lens)
{
    if (redisAsyncCommandArgv(s->ac, handshake_cb, (void *)&hs_steps[step], argc, argv, lens) !=
        REDIS_OK)
        return SB_EIO;
    s->hs_pending++;
    return SB_EOK;
}

/* Nagle for commands: a write of fewer than COALESCE_MAX commands waits COALESCE_US for
 * more (the completes of replies being read, the claims of the next deliveries), so Redis
 * and we pay one system call for many; COALESCE_MAX commands go at once. Measured with
 * Redis idempotency, 3 alternating runs: RabbitMQ (deliveries in batches of ~30) Redis CPU
 * per message 5.7-6.7 -> 4.9-5.3 us, 31.1-34.5k -> 33.5-34.9k msgs/s; Kafka (claims in the
 * hundreds) unchanged, where a fixed delay for every write cost 5%. */
static void wdelay_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rstore_t *s = arg;
    s->wbatch = 0;
    if (s->ac && s->ac->ev.data) /* the connection it was armed for may be gone */
        event_add(((redisLibeventEvents *)s->ac->ev.data)->wev, NULL);
}

static void coalesce_add_write(void *privdata)
{
    redisLibeventEvents *e = privdata;
    rstore_t *s = e->context->data;
    if (!s || !s->wdelay || s->state != ST_UP) {
        event_add(e->wev, NULL);
        return;
    }
    if (event_pending(e->wev, EV_WRITE, NULL))
        return; /* going out already */
    if (++s->wbatch >= COALESCE_MAX) {
        evtimer_del(s->wdelay);
        s->wbatch = 0;
        event_add(e->wev, NULL);
        return;
    }
    if (!evtimer_pending(s->wdelay, NULL)) {
        static const struct timeval tv = {0, COALESCE_US};
        evtimer_add(s->wdelay, &tv);
    }
}

static void start_connect(rstore_t *s)
{
    if (s->ac || s->destroying)
        return;
    redisAsyncContext *ac = s->url.is_unix ? redisAsyncConnectUnix(s->url.path)
                                           : redisAsyncConnect(s->url.host, s->url.port);
    s->connect_started_ms = mono_ms();
    if (!ac) {
        snprintf(s->last_error, sizeof s->last_error, "out of memory");
        s->stats.disconnects++;
        schedule_reconnect(s);
        return;
    }
    ac->data = s;
    if (ac->err) {
        /* Failed at once (e.g. no such socket): through drop() for the logging. */
        s->ac = ac;
        s->state = ST_CONNECTING;
        drop(s, ac->errstr, true);
        return;
    }
    if (redisLibeventAttach(ac, s->evbase) != REDIS_OK) {
        s->ac = ac;
        s->state = ST_CONNECTING;
        drop(s, "cannot attach to the event loop", true);
        return;
    }
    ac->ev.addWrite = coalesce_add_write;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    s->ac = ac;
    s->state = ST_CONNECTING;
    s->hs_pending = 0;
    /* Written before anything else on this connection, in one batch. */
    int rc = SB_EOK;
    const char *password = s->url.password;
    if (*password) {
        const char *argv[3] = {"AUTH", s->url.user, password};
        size_t lens[3] = {4, strlen(s->url.user), strlen(password)};
        rc = *s->url.user ? hs_command(s, HS_AUTH, 3, argv, lens)
                          : hs_command(s, HS_AUTH, 2, (const char *[]){"AUTH", password},
                                       (const size_t[]){4, strlen(password)});
    }
    if (rc == SB_EOK && s->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", s->url.db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        rc = hs_command(s, HS_SELECT, 2, argv, lens);
    }
    for (int i = 0; rc == SB_EOK && i < N_OPS; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", scripts[i]};
        size_t lens[3] = {6, 4, strlen(scripts[i])};
        rc = hs_command(s, HS_LOAD0 + i, 3, argv, lens);
    }
    if (rc == SB_EOK) {
        /* A write that changes nothing (XX: only if the key exists) but is refused like any
         * write while Redis is out of memory, a replica, loading, ...: the connection counts
         * as up only when writes are taken. */
        const char *argv[6] = {"SET", s->probe_key, "1", "XX", "PX", "1"};
        size_t lens[6] = {3, strlen(s->probe_key), 1, 2, 2, 1};
        rc = hs_command(s, HS_PROBE, 6, argv, lens);
    }
    if (rc != SB_EOK)
        drop(s, "cannot queue the handshake", true);
}

static void reconnect_cb(sb__timer_t *t, void *arg)
{
    (void)t;
    start_connect(arg);
}

static void watchdog_cb(sb__timer_t *t, void *arg)
{
    (void)t;
    rstore_t *s = arg;
    uint64_t now = mono_ms();
    char why[128];
    if (s->state == ST_UP && s->outstanding > 0 &&
        now - s->last_progress_ms > s->command_timeout_ms) {
        snprintf(why, sizeof why, "no reply for %" PRIu64 " ms with %zu commands outstanding",
                 now - s->last_progress_ms, s->outstanding);
        drop(s, why, true);
    } else if (s->state == ST_CONNECTING && now - s->connect_started_ms > s->connect_timeout_ms) {
        snprintf(why, sizeof why, "connect and handshake not done after %" PRIu64 " ms",
                 now - s->connect_started_ms);
        drop(s, why, true);
    }
}

/* ---- operations ----------------------------------------------------------------------- */

static int rs_claim(sb__store_t *st, const char *key, uint64_t lease_ms, sb__claim_cb cb, void *arg)
{
    rstore_t *s = (rstore_t *)st;
    if (!key || !lease_ms || !cb)
        return SB_EINVAL;
    if (s->state != ST_UP || s->outstanding >= s->max_outstanding) {
        s->stats.failed++;
        cb(arg, SB__CLAIM_ERROR);
        return SB_EOK;
    }
    size_t klen = strlen(key);
    if (kset_has(s, key, klen)) {
        s->stats.local_busy++;
        cb(arg, SB__CLAIM_BUSY);
        return SB_EOK;
    }
    req_t *r = req_new(s, OP_CLAIM, key, lease_ms);
    if (!r)
        return SB_ENOMEM;
    if (kset_add(s, key, klen, &r->kent) != SB_EOK) {
        sb_free(r);
        return SB_ENOMEM;
    }
    r->claim_cb = cb;
    r->arg = arg;
    r->kent->claim = r;
    if (submit(s, r) != SB_EOK)
        fail(s, r, SB_EUNAVAILABLE);
    return SB_EOK;
}

/* While our lease certainly runs (valid_until, see note_lease), nobody else can hold the
 * key, so the owner check is already true and a native SET key done XX PX ttl (under half
 * of a script's cost to Redis) does what the complete script would. XX: a key that vanished
 * meanwhile (evicted, deleted by hand) is not re-created blindly; the script then decides. */
static bool complete_is_fast(uint64_t valid_until)
{
    return valid_until && mono_ms() < valid_until;
}

/* complete, release and extend. Completes and releases are not held to max_outstanding:
 * each follows a claim that was, and refusing one would only leave a lease behind. An
 * extend that cannot be sent now (down, or too many outstanding) fails at once with an
 * error and no callback, so a renewal that did not happen is not taken for one. */
static int done_op(rstore_t *s, int op, const char *key, uint64_t ms, sb__store_done_cb cb,
                   void *arg)
{
    if (!key || (op != OP_RELEASE && !ms))
        return SB_EINVAL;
    if (op == OP_EXTEND && (s->state != ST_UP || s->outstanding >= s->max_outstanding)) {
        s->stats.failed++;
        return s->state != ST_UP ? SB_EUNAVAILABLE : SB_EBUSY;
    }
    uint64_t valid_until = 0;
    if (op != OP_EXTEND) /* forgotten locally even if the call fails (out of memory) */
        valid_until = kset_del(s, key, strlen(key));
    req_t *r = req_new(s, op, key, ms);
    if (!r)
        return SB_ENOMEM;
    r->fast = op == OP_COMPLETE && complete_is_fast(valid_until);
    r->done_cb = cb;
    r->arg = arg;
    if (submit(s, r) != SB_EOK)
        fail(s, r, SB_EUNAVAILABLE);
    return SB_EOK;
}

static int rs_complete(sb__store_t *st, const char *key, uint64_t ttl_ms, sb__store_done_cb cb,
                       void *arg)
{
    return done_op((rstore_t *)st, OP_COMPLETE, key, ttl_ms, cb, arg);
}

static int rs_release(sb__store_t *st, const char *key, sb__store_done_cb cb, void *arg)
{
    return done_op((rstore_t *)st, OP_RELEASE, key, 0, cb, arg);
}

static int rs_extend(sb__store_t *st, const char *key, uint64_t lease_ms, sb__store_done_cb cb,
                     void *arg)
{
    return done_op((rstore_t *)st, OP_EXTEND, key, lease_ms, cb, arg);
}

static bool rs_available(sb__store_t *st)
{
    return ((rstore_t *)st)->state == ST_UP;
}

static void rs_destroy(sb__store_t *st)
{
    rstore_t *s = (rstore_t *)st;
    if (!s)
        return;
    s->destroying = true;
    redisAsyncContext *ac = s->ac;
    s->ac = NULL;
    if (ac)
        redisAsyncFree(ac); /* its outstanding replies are dropped (see reply_cb) */
    sb__timer_destroy(s->reconnect);
    sb__timer_destroy(s->watchdog);
    for (req_t *r = s->replay; r;) {
        req_t *next = r->next;
        sb_free(r);
        r = next;
    }
    if (s->kset) {
        for (size_t i = 0; i <= s->kset_mask; i++) {
            for (kent_t *e = s->kset[i]; e;) {
                kent_t *next = e->next;
                sb_free(e);
                e = next;
            }
        }
    }
    sb_free(s->kset);
    sb_free(s->owner);
    sb_free(s->probe_key);
    if (s->wdelay)
        event_free(s->wdelay);
    sb_free(s);
}

static const sb__store_ops_t redis_ops = {
    .name = "redis",
    .claim = rs_claim,
    .complete = rs_complete,
    .release = rs_release,
    .extend = rs_extend,
    .available = rs_available,
    .destroy = rs_destroy,
};

static rstore_t *as_rstore(sb__store_t *st)
{
    return (st && st->ops == &redis_ops) ? (rstore_t *)st : NULL;
}

int sb__store_redis_new(sb__runtime_t *rt, const sb__redis_store_opts_t *o, sb__store_t **out,
                        char *errstr, size_t n)
{
    if (!rt || !o || !out)
        return sb__errf(errstr, n, SB_EINVAL, "Redis store: missing argument");
    sb__redis_url_t url;
    int rc = sb__redis_url_parse(o->url, &url, errstr, n);
    if (rc != SB_EOK)
        return rc;
    if (!*url.password && o->password && *o->password) {
        if (strlen(o->password) >= sizeof url.password)
            return sb__errf(errstr, n, SB_ECONFIG, "Redis password too long");
        strcpy(url.password, o->password);
    }
    rstore_t *s = sb_calloc(1, sizeof *s);
    if (!s)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    s->base.ops = &redis_ops;
    s->rt = rt;
    s->evbase = sb__runtime_base(rt);
    s->url = url;
    if (url.is_unix)
        snprintf(s->where, sizeof s->where, "unix:%s", url.path);
    else if (strchr(url.host, ':'))
        snprintf(s->where, sizeof s->where, "[%s]:%d", url.host, url.port);
    else
        snprintf(s->where, sizeof s->where, "%s:%d", url.host, url.port);
    s->max_outstanding = o->max_outstanding ? o->max_outstanding : DEFAULT_MAX_OUTSTANDING;
    s->hold_completes = o->hold_completes;
    s->command_timeout_ms = o->command_timeout_ms ? o->command_timeout_ms : DEFAULT_TIMEOUT_MS;
    s->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : DEFAULT_TIMEOUT_MS;
    s->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : DEFAULT_TIMEOUT_MS;
    if (s->backoff_max_ms < BACKOFF_MIN_MS)
        s->backoff_max_ms = BACKOFF_MIN_MS;
    s->backoff_ms = BACKOFF_MIN_MS;
    char owner[300];
    if (o->owner && *o->owner) {
        snprintf(owner, sizeof owner, "inprogress:%s", o->owner);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(owner, sizeof owner, "inprogress:%s:%ld:%08" PRIx32, host, (long)getpid(),
                 (uint32_t)sb__random_u64());
    }
    s->owner_len = strlen(owner);
    s->kset_mask = 1023;
    if (!(s->owner = sb_strdup(owner)) ||
        !(s->probe_key =
              sb_strdup(o->probe_key && *o->probe_key ? o->probe_key : "sb:idem:probe")) ||
        !(s->kset = sb_calloc(s->kset_mask + 1, sizeof *s->kset)) ||
        !(s->reconnect = sb__runtime_timer_new(rt, reconnect_cb, s)) ||
        !(s->wdelay = evtimer_new(s->evbase, wdelay_fire, s)) ||
        !(s->watchdog = sb__runtime_timer_new(rt, watchdog_cb, s)))
        goto nomem;
    if (*url.password && sb__log_add_secret(url.password) == SB_ENOMEM)
        goto nomem;
    if (sb__timer_start(s->watchdog, WATCHDOG_MS, true) != SB_EOK) {
        rs_destroy(&s->base);
        return sb__errf(errstr, n, SB_EIO, "Redis store: cannot arm its timer");
    }
    start_connect(s);
    *out = &s->base;
    return SB_EOK;
nomem:
    rs_destroy(&s->base);
    return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
}

void sb__store_redis_set_state_cb(sb__store_t *st, void (*cb)(void *arg, bool up), void *arg)
{
    rstore_t *s = as_rstore(st);
    if (!s)
        return;
    s->state_cb = cb;
    s->state_arg = cb ? arg : NULL;
}

const char *sb__store_redis_last_error(sb__store_t *st)
{
    rstore_t *s = as_rstore(st);
    return s ? s->last_error : "";
}

void sb__store_redis_stats(sb__store_t *st, sb__redis_store_stats_t *out)
{
    rstore_t *s = as_rstore(st);
    if (!out)
        return;
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = s->stats;
    out->outstanding = s->outstanding;
}

const char *sb__store_redis_owner(sb__store_t *st)
{
    rstore_t *s = as_rstore(st);
    return s ? s->owner + 11 : "";
}
