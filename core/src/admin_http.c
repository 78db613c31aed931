/* admin_http.c: the admin HTTP server (health, readiness, metrics, handlers) on the loop.
 *
 * Design: libevent's evhttp on the process's one event base, so a scrape reads the loop's
 * counters without locks and /healthz proves the loop itself is turning. We create, bind
 * and listen on the socket ourselves and hand it to evhttp: that way a failure names its
 * cause (address in use, permission, unresolvable name) and the non-loopback check runs on
 * the resolved addresses, not on the spelling of the host. Routing is one exact-match table;
 * every answer we produce, errors included, is JSON (or the exposition for /metrics).
 *
 * Mutating endpoints (POST /replay, GET and DELETE /jobs/ID of replay_jobs.c, added
 * through the route hook) need the bearer token; a non-loopback address without a token is
 * refused, by `config check` too (sb__admin_check_listen).
 *
 * Not here: what "ready" means or what the metrics are (hooks given by the runtime), TLS
 * (put a proxy in front), reading the token from env or file (the configuration does), and
 * what the replay endpoints do (replay_jobs.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "admin_http.h"
#include "errf.h"
#include "log.h"

#define MAX_BODY       (64 * 1024)
#define MAX_HEADERS    (8 * 1024)
#define IDLE_TIMEOUT_S 10
#define LISTEN_BACKLOG 64

struct sb__admin {
    struct evhttp *http;
    char *token; /* NULL: no authentication */
    sb__admin_hooks_t hooks;
    void *arg;
    int port;
};

/* ---- replies ------------------------------------------------------------------------------ */

static const char *status_text(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* Sends the reply; a HEAD request gets the headers only (libevent would send the body). */
static void reply(struct evhttp_request *req, int code, struct evbuffer *body)
{
    bool head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
    evhttp_send_reply(req, code, status_text(code), head ? NULL : body);
}

/* Sends `doc` (stolen; NULL means allocation failed) with status `code`. */
static void send_json(struct evhttp_request *req, int code, json_t *doc)
{
    struct evbuffer *body = evbuffer_new();
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    bool ok = body && text && evbuffer_add(body, text, strlen(text)) == 0 &&
              evbuffer_add(body, "\n", 1) == 0;
    if (text) {
        json_free_t jfree;
        json_get_alloc_funcs(NULL, &jfree);
        jfree(text);
    }
    if (!ok) {
        if (body)
            evbuffer_free(body);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    reply(req, code, body);
    evbuffer_free(body);
}

static void send_error(struct evhttp_request *req, int code, const char *msg)
{
    send_json(req, code, json_pack("{s:s, s:i}", "error", msg, "status", code));
}

/* ---- endpoints ---------------------------------------------------------------------------- */

static void ep_healthz(sb__admin_t *a, struct evhttp_request *req)
{
    (void)a;
    send_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void ep_readyz(sb__admin_t *a, struct evhttp_request *req)
{
    char why[256] = "";
    if (!a->hooks.ready || a->hooks.ready(a->arg, why, sizeof why)) {
        send_json(req, 200, json_pack("{s:b}", "ready", 1));
        return;
    }
    why[sizeof why - 1] = '\0';
    send_json(req, 503, json_pack("{s:b, s:s}", "ready", 0, "reason", why[0] ? why : "not ready"));
}

static void ep_metrics(sb__admin_t *a, struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    if (a->hooks.metrics)
        a->hooks.metrics(a->arg, body);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    reply(req, 200, body);
    evbuffer_free(body);
}

static void ep_handlers(sb__admin_t *a, struct evhttp_request *req)
{
    json_t *doc = a->hooks.handlers ? a->hooks.handlers(a->arg) : json_pack("{s:[]}", "handlers");
    if (!doc) {
        sb__log(SB_LOG_ERROR, NULL, "admin: /handlers: could not build the document");
        send_error(req, 500, "could not build the handlers document");
        return;
    }
    send_json(req, 200, doc);
}

static const struct route {
    const char *path;
    void (*fn)(sb__admin_t *a, struct evhttp_request *req);
} routes[] = {
    {"/healthz", ep_healthz},
    {"/readyz", ep_readyz},
    {"/metrics", ep_metrics},
    {"/handlers", ep_handlers},
};

/* ---- dispatch ----------------------------------------------------------------------------- */

bool sb__admin_bearer_ok(const char *auth, const char *token)
{
    if (!auth || !token)
        return false;
    if (strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *given = auth + 7;
    while (*given == ' ')
        given++;
    size_t gl = strlen(given), tl = strlen(token);
    /* Walks the whole given string whatever the token, so timing does not reveal the length
     * of the matching prefix. */
    unsigned diff = (unsigned)(gl ^ tl);
    for (size_t i = 0; i < gl; i++)
        diff |= (unsigned char)given[i] ^ (unsigned char)token[i < tl ? i : 0];
    return diff == 0 && tl > 0;
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    default:
        return "OTHER";
    }
}

/* Hands a path the table does not know to the route hook, with the body as a string. */
static void route_hook(sb__admin_t *a, struct evhttp_request *req, enum evhttp_cmd_type cmd,
                       const char *path)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    char *body = sb_malloc(len + 1);
    if (!body) {
        send_error(req, 500, "out of memory");
        return;
    }
    if (len)
        evbuffer_copyout(in, body, len);
    body[len] = '\0';
    int status = 404;
    json_t *doc = NULL;
    bool authed =
        !a->token ||
        sb__admin_bearer_ok(
            evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization"), a->token);
    bool known = a->hooks.route(a->arg, method_name(cmd), path, body, len, authed, &status, &doc);
    sb_free(body);
    if (!known) {
        json_decref(doc);
        send_error(req, 404, "no such endpoint");
        return;
    }
    if (status == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    send_json(req, status, doc);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    sb__admin_t *a = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool read_only = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;

    if (!read_only && a->token) {
        const char *auth =
            evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        if (!sb__admin_bearer_ok(auth, a->token)) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
            send_error(req, 401, "a valid bearer token is required");
            return;
        }
    }

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const struct route *r = NULL;
    for (size_t i = 0; path && i < sizeof routes / sizeof *routes; i++)
        if (!strcmp(path, routes[i].path))
            r = &routes[i];
    if (!r && path && a->hooks.route) {
        route_hook(a, req, cmd, path);
        return;
    }
    if (!r) {
        send_error(req, 404, "no such endpoint");
        return;
    }
    if (!read_only) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        send_error(req, 405, "method not allowed");
        return;
    }
    r->fn(a, req);
}

/* ---- listening ---------------------------------------------------------------------------- */

/* Splits "host:port" or "[v6]:port" into host[] and port[]. 0 or -1. */
static int split_listen(const char *listen, char *host, size_t hn, char *port, size_t pn)
{
    const char *h, *he, *p;
    if (listen[0] == '[') {
        h = listen + 1;
        he = strchr(h, ']');
        if (!he || he[1] != ':')
            return -1;
        p = he + 2;
    } else {
        he = strrchr(listen, ':');
        if (!he || memchr(listen, ':', (size_t)(he - listen)))
            return -1; /* no port, or an unbracketed IPv6 address */
        h = listen;
        p = he + 1;
    }
    size_t hl = (size_t)(he - h), pl = strlen(p);
    if (hl == 0 || hl >= hn || pl == 0 || pl > 5 || pl >= pn)
        return -1;
    for (size_t i = 0; i < pl; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    if (strtol(p, NULL, 10) > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        const unsigned char *b = s6->sin6_addr.s6_addr;
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(b, v4mapped, 12))
            return b[12] == 127;
        return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
    }
    return false;
}

static int socket_port(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
    return -1;
}

/* Binds and listens on the first address of `ai` that accepts. Returns the socket, or -1
 * with the failing call's errno in *err and its name in *what. */
static evutil_socket_t bind_first(const struct addrinfo *ai, int *err, const char **what)
{
    for (; ai; ai = ai->ai_next) {
        evutil_socket_t fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            *err = errno;
            *what = "socket";
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            *err = errno;
            *what = "bind";
        } else if (listen(fd, LISTEN_BACKLOG) != 0) {
            *err = errno;
            *what = "listen";
        } else if (evutil_make_socket_nonblocking(fd) != 0 ||
                   evutil_make_socket_closeonexec(fd) != 0) {
            *err = errno;
            *what = "fcntl";
        } else {
            return fd;
        }
        evutil_closesocket(fd);
    }
    return -1;
}

/* Parses and resolves listen_addr; refuses a non-loopback address without a token. On
 * success *res is the caller's (freeaddrinfo). */
static int resolve_listen(const char *listen_addr, const char *token, struct addrinfo **res_out,
                          char *errstr, size_t errstr_size)
{
    char host[256], port[8];
    if (split_listen(listen_addr, host, sizeof host, port, sizeof port) != 0)
        return sb__errf(errstr, errstr_size, SB_ECONFIG,
                        "admin.listen \"%.200s\": expected host:port or [ipv6]:port, "
                        "port 0..65535",
                        listen_addr);
    if (token && !token[0])
        token = NULL;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0)
        return sb__errf(errstr, errstr_size, SB_ECONFIG, "admin.listen \"%.200s\": %s", listen_addr,
                        gai_strerror(gai));
    if (!token) {
        for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            if (!is_loopback(ai->ai_addr)) {
                freeaddrinfo(res);
                return sb__errf(errstr, errstr_size, SB_ECONFIG,
                                "admin.listen \"%.200s\" is not a loopback address: refusing "
                                "to expose the admin API without admin.token",
                                listen_addr);
            }
        }
    }
    *res_out = res;
    return SB_EOK;
}

int sb__admin_check_listen(const char *listen_addr, const char *token, char *errstr,
                           size_t errstr_size)
{
    struct addrinfo *res = NULL;
    int rc = resolve_listen(listen_addr, token, &res, errstr, errstr_size);
    if (res)
        freeaddrinfo(res);
    return rc;
}

int sb__admin_new(struct event_base *base, const char *listen_addr, const char *token,
                  const sb__admin_hooks_t *hooks, void *arg, sb__admin_t **out, char *errstr,
                  size_t errstr_size)
{
    if (!base || !listen_addr || !hooks || !out)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "admin: missing argument");
    *out = NULL;
    struct addrinfo *res = NULL;
    int rc = resolve_listen(listen_addr, token, &res, errstr, errstr_size);
    if (rc != SB_EOK)
        return rc;
    if (token && !token[0])
        token = NULL;
    int err = 0;
    const char *what = "bind";
    evutil_socket_t fd = -1;
    sb__admin_t *a = sb_calloc(1, sizeof *a);
    if (!a) {
        rc = SB_ENOMEM;
        goto err;
    }
    a->hooks = *hooks;
    a->arg = arg;
    if (token && !(a->token = sb_strdup(token))) {
        rc = SB_ENOMEM;
        goto err;
    }
    fd = bind_first(res, &err, &what);
    if (fd < 0) {
        rc = err == EADDRINUSE ? SB_EBUSY : SB_EIO;
        sb__errf(errstr, errstr_size, rc, "admin.listen \"%.200s\": %s: %s%s", listen_addr, what,
                 strerror(err),
                 err == EADDRINUSE ? " (another process is listening on that port)" : "");
        goto err;
    }
    a->port = socket_port(fd);
    if (!(a->http = evhttp_new(base))) {
        rc = SB_ENOMEM;
        goto err;
    }
    if (!evhttp_accept_socket_with_handle(a->http, fd)) {
        rc = SB_EIO;
        sb__errf(errstr, errstr_size, rc, "admin.listen \"%.200s\": cannot attach the listener",
                 listen_addr);
        goto err;
    }
    fd = -1; /* evhttp owns it now */
    evhttp_set_max_body_size(a->http, MAX_BODY);
    evhttp_set_max_headers_size(a->http, MAX_HEADERS);
    evhttp_set_timeout(a->http, IDLE_TIMEOUT_S);
    /* Accept every method libevent knows, so we, not libevent, answer 401/405 in JSON. */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(a->http, on_request, a);
    freeaddrinfo(res);
    sb__logkv(SB_LOG_INFO, NULL, "admin HTTP listening", "listen", listen_addr, "auth",
              a->token ? "bearer" : "none", (const char *)NULL);
    *out = a;
    return SB_EOK;
err:
    if (rc == SB_ENOMEM)
        sb__errf(errstr, errstr_size, rc, "admin: out of memory");
    if (fd >= 0)
        evutil_closesocket(fd);
    freeaddrinfo(res);
    sb__admin_destroy(a);
    return rc;
}

int sb__admin_port(const sb__admin_t *a)
{
    return a ? a->port : -1;
}

void sb__admin_destroy(sb__admin_t *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    if (a->token) {
        memset(a->token, 0, strlen(a->token));
        sb_free(a->token);
    }
    sb_free(a);
}
