/* store_redis.h: the Redis idempotency store (hiredis async API on the runtime's loop).
 *
 * Same protocol and results as the memory store (store.h, store_memory.h), shared between
 * processes through Redis. Values: "inprogress:<owner>" while leased, "done" once handled.
 *  claim(key, lease):  SET key inprogress:<owner> NX PX lease: taken -> OWNED; when the
 *                      key exists, one EVALSHA tells "done" -> DONE; ours -> PEXPIRE
 *                      lease, OWNED; another's -> BUSY.
 *                      A key this process has claimed and not yet completed or released
 *                      answers BUSY without asking Redis (two copies of one event in flight
 *                      in the same process must not both run).
 *  complete(key, ttl): ours or absent -> "done" PX ttl, SB_EOK; done already -> SB_EOK;
 *                      another owner's -> SB_ESTATE. (Absent: the lease expired or Redis
 *                      lost its data; the event *was* handled, so remembering it is
 *                      right.) While the lease of our claim (or of its last extend)
 *                      certainly still runs by our clock (written at T with lease L: until
 *                      T + L - max(L/8, 100 ms)), the key can only be ours, and the complete
 *                      is the native SET key done XX PX ttl instead of the script (a key
 *                      that vanished falls back to the script). A complete that could not
 *                      reach Redis is answered SB_EUNAVAILABLE and replayed (always with
 *                      the script) once the connection is back (bounded by max_outstanding).
 *  release(key):       compare-and-delete by owner: SB_EOK, or SB_ESTATE if not ours.
 *  extend(key, lease): compare-and-PEXPIRE by owner: SB_EOK, or SB_ESTATE.
 * Scripts are loaded with SCRIPT LOAD at every connect; NOSCRIPT makes the command go
 * again as EVAL (which caches the script).
 *
 * Every command is written without waiting (hiredis batches what the loop has not flushed
 * yet: pipelining across every in-flight message). At most max_outstanding commands wait
 * for replies; beyond that a call answers at once (claim: SB__CLAIM_ERROR, others:
 * SB_EBUSY through the callback). While the connection is down (or still being set up:
 * AUTH, SELECT, SCRIPT LOAD, a write probe) every call answers at once: claims
 * SB__CLAIM_ERROR, others SB_EUNAVAILABLE. When the connection drops, every outstanding
 * command is answered the same way; none is left unanswered. Reconnection uses exponential
 * backoff with jitter (100 ms doubling to backoff_max_ms). A connection that has commands
 * outstanding and receives no reply for command_timeout_ms is treated as down (a hung Redis
 * must not hold claims forever). So is a Redis that refuses writes (an error reply such as
 * OOM, READONLY, LOADING, MISCONF, BUSY, NOPERM): the connection is dropped and comes back
 * only when the probe write of the handshake is taken; a complete refused so is replayed
 * like one that lost its connection, never taken for done. Other error replies (one
 * command's own) answer that command SB_EIO.
 *
 * Loop thread only. Not here: TLS (hiredis 0.14 has none), Redis Cluster redirections
 * (keys carry a {hash tag} so one consumer's keys share a slot, but MOVED is not followed),
 * Sentinel. Host names are resolved by hiredis (getaddrinfo) when connecting: use an IP
 * address or a name from /etc/hosts where a slow resolver would matter. */
#ifndef SB_STORE_REDIS_H
#define SB_STORE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime.h"
#include "store.h"

/* A parsed Redis URL:
 *   redis://[[user]:password@]host[:port][/db]      (host may be [IPv6]; port 6379)
 *   unix://[[user]:password@]/path/to/socket[?db=N]
 * user and password are percent-decoded. */
typedef struct sb__redis_url {
    bool is_unix;
    char host[256];
    int port;
    char path[256]; /* unix socket */
    char user[128];
    char password[512];
    int db;
} sb__redis_url_t;

/* SB_EOK, or SB_EINVAL / SB_ECONFIG with the reason in errstr (never the password). */
int sb__redis_url_parse(const char *url, sb__redis_url_t *out, char *errstr, size_t errstr_size);

typedef struct sb__redis_store_opts {
    const char *url;             /* see above; required */
    const char *password;        /* used when the URL carries none; NULL or "": no AUTH */
    const char *owner;           /* this consumer's identity; NULL: "<host>:<pid>:<random>" */
    size_t max_outstanding;      /* commands awaiting replies; 0: 10000 */
    uint64_t command_timeout_ms; /* 0: 5000 */
    uint64_t connect_timeout_ms; /* a connect plus handshake; 0: 5000 */
    uint64_t backoff_max_ms;     /* 0: 5000 */
    const char *probe_key;       /* a key this store may write (its prefix): each connect
                                    sends SET probe_key 1 XX PX 1 and is up only when that
                                    write is taken; NULL: "sb:idem:probe" */
    bool hold_completes;         /* a complete that lost its connection is answered only once
                                    replayed on the next one (so nothing is acked that is not
                                    done); false: answered SB_EUNAVAILABLE at once, replayed
                                    later all the same */
} sb__redis_store_opts_t;

/* Creates the store and starts connecting (asynchronously: the first connection is made
 * by the loop; available() is false until AUTH, SELECT and SCRIPT LOAD succeeded). The
 * options are copied; passwords are registered with the logger as secrets. SB_EOK and *out
 * (destroy with (*out)->ops->destroy(*out), on the loop thread, not from inside one of its
 * callbacks; outstanding callbacks are then dropped without being called), or SB_EINVAL /
 * SB_ECONFIG (bad URL) / SB_ENOMEM with the reason in errstr. */
int sb__store_redis_new(sb__runtime_t *rt, const sb__redis_store_opts_t *o, sb__store_t **out,
                        char *errstr, size_t errstr_size);

/* Called with up = true when the store becomes available and false when it stops being
 * available (not for the initial "not yet connected"). One callback; NULL removes it. The
 * callback may call the store. */
void sb__store_redis_set_state_cb(sb__store_t *s, void (*cb)(void *arg, bool up), void *arg);

/* Why the last connection attempt failed or the connection dropped ("" if never). Lives
 * as long as the store; changes on the next failure. Never contains a password. */
const char *sb__store_redis_last_error(sb__store_t *s);

typedef struct sb__redis_store_stats {
    uint64_t commands;       /* written to Redis */
    uint64_t replies;        /* answered by Redis */
    uint64_t failed;         /* answered locally: down, overloaded, connection lost */
    uint64_t noscript;       /* NOSCRIPT replies, re-sent as EVAL */
    uint64_t connects;       /* handshakes completed */
    uint64_t disconnects;    /* connections lost or attempts failed */
    uint64_t replayed;       /* completes replayed after a reconnect */
    uint64_t local_busy;     /* claims answered BUSY for a key claimed in this process */
    uint64_t fast_completes; /* completes done with SET XX within a certain lease */
    size_t outstanding;      /* commands awaiting replies now */
} sb__redis_store_stats_t;

/* Counters; zeros for a store that is not a Redis store. */
void sb__store_redis_stats(sb__store_t *s, sb__redis_store_stats_t *out);

/* The owner string this store writes ("inprogress:<owner>"). */
const char *sb__store_redis_owner(sb__store_t *s);

#endif
