/* admin_http.h: the operators' HTTP endpoint (libevent evhttp on the loop thread).
 *
 *   GET /healthz   200 {"status":"ok"}: the loop answers
 *   GET /readyz    200 {"ready":true} or 503 {"ready":false,"reason":"..."} (the ready hook)
 *   GET /metrics   200 text/plain; version=0.0.4 (the metrics hook, see metrics.h)
 *   GET /handlers  200 JSON (the handlers hook)
 *   anything else  the route hook, when given (JSON replies)
 *
 * HEAD is accepted wherever GET is. Anything else gets a JSON error body
 * {"error":"...","status":N}: 404 for an unknown path, 405 (with Allow) for a known path and
 * another method, 401 for a method other than GET/HEAD without the bearer token when one is
 * configured (checked before routing, so an unauthenticated client learns nothing about which
 * paths exist). Requests are bounded (64 KiB body, 8 KiB headers, 10 s idle timeout);
 * libevent itself answers what it cannot parse or what exceeds a bound (400, 413, and 501
 * for a method it does not know), in HTML, and closes.
 *
 * Security rule: without a token, the server refuses at start-up to listen on anything but a
 * loopback address (127.0.0.0/8, ::1, or a name that resolves only to those, e.g.
 * "localhost").
 *
 * Loop affinity: everything runs on the thread running the event base; hooks are called
 * there and must not block. */
#ifndef SB_ADMIN_HTTP_H
#define SB_ADMIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

struct event_base;
struct evbuffer;

typedef struct sb__admin sb__admin_t;

/* Callbacks into the runtime. Each member may be NULL: ready then always answers ready,
 * metrics an empty exposition, handlers {"handlers":[]}. `arg` is the one given to
 * sb__admin_new(). */
typedef struct sb__admin_hooks {
    /* true when ready; otherwise false with a one-line reason written into why[0..n). */
    bool (*ready)(void *arg, char *why, size_t n);
    /* appends the exposition to out (e.g. through sb__metrics_render()). */
    void (*metrics)(void *arg, struct evbuffer *out);
    /* the /handlers document as a new reference (e.g. sb__metrics_handlers_json()); NULL on
     * failure (answered with 500). */
    json_t *(*handlers)(void *arg);
    /* Further routes (e.g. POST /replay, GET /jobs/{id}), asked after the bearer-token check
     * for any path not listed above. method is "GET", "HEAD", "POST", "PUT", "DELETE" or
     * "OTHER"; body (NUL-terminated, may be "") is the request body; authed is true when no
     * token is configured or the request carries it (methods other than GET and HEAD never
     * get here without it), so a hook can protect its GET routes too (answer 401).
     * Returns false when it does not know the path either (404); otherwise sets *status and
     * *reply (a new reference, sent as JSON; NULL is answered with 500). */
    bool (*route)(void *arg, const char *method, const char *path, const char *body,
                  size_t body_len, bool authed, int *status, json_t **reply);
} sb__admin_hooks_t;

/* Starts listening on `listen` ("host:port" or "[v6addr]:port"; port 0 picks a free port,
 * see sb__admin_port()). `token` (copied; NULL or "" for none) is the bearer token required
 * for methods other than GET and HEAD. The hooks table is copied; `arg` is borrowed and must
 * outlive the server. The event base is borrowed and must outlive it too.
 *
 * Returns SB_EOK with *out set (caller frees with sb__admin_destroy()), or, with a one-line
 * reason in errstr: SB_EINVAL (NULL arguments), SB_ECONFIG (malformed address, a name that
 * does not resolve, a non-loopback address without a token), SB_EBUSY (the address is
 * already in use), SB_EIO (any other socket failure), SB_ENOMEM. */
int sb__admin_new(struct event_base *base, const char *listen, const char *token,
                  const sb__admin_hooks_t *hooks, void *arg, sb__admin_t **out, char *errstr,
                  size_t errstr_size);

/* What sb__admin_new() checks before it binds (address syntax, resolution, no non-loopback
 * address without a token), so `config check` refuses what `run` would. SB_EOK or
 * SB_ECONFIG with the same one-line reason. */
int sb__admin_check_listen(const char *listen, const char *token, char *errstr, size_t errstr_size);

/* The port actually bound (useful after port 0). */
int sb__admin_port(const sb__admin_t *a);

/* Stops listening and closes every open connection. NULL is a no-op. Not from inside a
 * hook. */
void sb__admin_destroy(sb__admin_t *a);

/* True when `auth` (an Authorization header value, may be NULL) is "Bearer <token>" (the
 * scheme is case-insensitive); compared in time independent of where the strings differ. */
bool sb__admin_bearer_ok(const char *auth, const char *token);

#endif
