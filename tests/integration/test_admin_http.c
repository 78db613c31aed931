/* The admin HTTP server and the Prometheus exposition, over real loopback sockets.
 *
 * The server runs on an event base in a second thread; the test talks to it with plain
 * blocking sockets (one request per connection, raw bytes, so malformed requests can be sent
 * too). Covered: every endpoint's status, content type and body; HEAD; 404, 405 (with Allow)
 * and 401 as JSON; the bearer token; malformed and oversized requests leave the server
 * serving; refusal of a non-loopback address without a token; a port already in use;
 * malformed listen addresses. The exposition is checked line by line from hand-filled
 * sources (no sources, a real registry with awkward handler names, histograms) and, when
 * /usr/bin/promtool exists, with `promtool check metrics`. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include <cmocka.h>

#include "switchboard/error.h"
#include "admin_http.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"

#define PROMTOOL "/usr/bin/promtool"

/* ---- helpers: exposition as a string, promtool ------------------------------------------- */

static char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static char *render(const sb__metrics_src_t *src)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    assert_int_equal(sb__metrics_render(src, b), SB_EOK);
    char *s = drain(b);
    evbuffer_free(b);
    return s;
}

static void assert_has_line(const char *text, const char *line)
{
    size_t l = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[l] == '\n')
            return;
    fail_msg("line not found: %s\n--- in ---\n%s", line, text);
}

/* Runs promtool on the exposition; skipped silently when promtool is not installed. */
static void promtool_check(const char *text)
{
    if (access(PROMTOOL, X_OK) != 0) {
        fprintf(stderr, "note: %s not installed; promtool check skipped\n", PROMTOOL);
        return;
    }
    char path[] = "/tmp/sb-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096];
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    unlink(path);
    if (st != 0)
        fail_msg("promtool check metrics failed (%d):\n%s\n--- exposition ---\n%s", st, out, text);
}

/* ---- helpers: the server thread and a raw HTTP client ------------------------------------- */

typedef struct app {
    bool ready;
    const char *why;
    sb__metrics_src_t src;
    int handler_calls;
} app_t;

static bool app_ready(void *arg, char *why, size_t n)
{
    app_t *a = arg;
    if (!a->ready)
        snprintf(why, n, "%s", a->why);
    return a->ready;
}

static void app_metrics(void *arg, struct evbuffer *out)
{
    app_t *a = arg;
    /* Server thread: no cmocka assertion here; a failure shows as a wrong body. */
    if (sb__metrics_render(&a->src, out) != SB_EOK)
        fprintf(stderr, "sb__metrics_render failed\n");
}

static json_t *app_handlers(void *arg)
{
    app_t *a = arg;
    a->handler_calls++;
    return sb__metrics_handlers_json(a->src.reg);
}

static const sb__admin_hooks_t app_hooks = {app_ready, app_metrics, app_handlers, NULL};

typedef struct server {
    struct event_base *base;
    sb__admin_t *admin;
    pthread_t th;
    int port;
} server_t;

static void *loop_main(void *arg)
{
    server_t *s = arg;
    event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void server_start(server_t *s, const char *listen, const char *token,
                         const sb__admin_hooks_t *hooks, void *arg)
{
    char err[256] = "";
    s->base = event_base_new();
    assert_non_null(s->base);
    int rc = sb__admin_new(s->base, listen, token, hooks, arg, &s->admin, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("sb__admin_new(%s): %s", listen, err);
    s->port = sb__admin_port(s->admin);
    assert_true(s->port > 0 && s->port < 65536);
    assert_int_equal(pthread_create(&s->th, NULL, loop_main, s), 0);
}

static void server_stop(server_t *s)
{
    event_base_loopbreak(s->base);
    pthread_join(s->th, NULL);
    sb__admin_destroy(s->admin);
    event_base_free(s->base);
}

typedef struct resp {
    int status;       /* 0: no status line (the server closed without answering) */
    char *raw;        /* whole response, NUL-terminated */
    const char *body; /* inside raw */
} resp_t;

static void resp_free(resp_t *r)
{
    free(r->raw);
}

/* Sends `req` as is on a new connection and reads until the server closes. */
static resp_t http_raw(int port, const char *req, size_t req_len)
{
    resp_t r = {0, NULL, NULL};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    size_t off = 0;
    while (off < req_len) {
        ssize_t n = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may close early on an oversized request */
        off += (size_t)n;
    }
    size_t cap = 4096, len = 0;
    r.raw = malloc(cap);
    assert_non_null(r.raw);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            r.raw = realloc(r.raw, cap);
            assert_non_null(r.raw);
        }
        ssize_t n = recv(fd, r.raw + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    r.raw[len] = '\0';
    if (sscanf(r.raw, "HTTP/1.%*d %d", &r.status) != 1)
        r.status = 0;
    const char *b = strstr(r.raw, "\r\n\r\n");
    r.body = b ? b + 4 : r.raw + len;
    return r;
}

static resp_t http(int port, const char *method, const char *path, const char *extra_headers)
{
    char req[1024];
    const char *extra = extra_headers ? extra_headers : "";
    int n;
    if (!strcmp(method, "POST"))
        n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: 2\r\n%s\r\n{}",
                     path, extra);
    else
        n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s\r\n", method,
                     path, extra);
    assert_true(n > 0 && (size_t)n < sizeof req);
    return http_raw(port, req, (size_t)n);
}

/* The value of header `name` in r (case-insensitive name), copied into buf; NULL if absent. */
static const char *header(const resp_t *r, const char *name, char *buf, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(r->raw, "\r\n"); p && p + 2 < r->body; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (!strncasecmp(h, name, nl) && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ')
                h++;
            const char *e = strstr(h, "\r\n");
            size_t l = e ? (size_t)(e - h) : strlen(h);
            if (l >= n)
                l = n - 1;
            memcpy(buf, h, l);
            buf[l] = '\0';
            return buf;
        }
    }
    return NULL;
}

static json_t *json_body(const resp_t *r)
{
    json_error_t e;
    json_t *j = json_loads(r->body, 0, &e);
    if (!j)
        fail_msg("body is not JSON (%s): %s", e.text, r->raw);
    return j;
}

static void assert_json_error(const resp_t *r, int status)
{
    char ct[128];
    assert_int_equal(r->status, status);
    assert_non_null(header(r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");
    json_t *j = json_body(r);
    assert_true(json_is_string(json_object_get(j, "error")));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), status);
    json_decref(j);
}

/* ---- exposition ---------------------------------------------------------------------------- */

static void test_escape_label(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(sb__metrics_escape_label(b, "a\\b\"c\nd \xc3\xa9 x\xffy\xe2\x82"), SB_EOK);
    assert_int_equal(sb__metrics_escape_label(b, NULL), SB_EOK);
    char *s = drain(b);
    assert_string_equal(s, "a\\\\b\\\"c\\nd \xc3\xa9 x\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbd");
    free(s);
    evbuffer_free(b);
}

static void test_histogram(void **state)
{
    (void)state;
    sb__histogram_t h = {0};
    sb__histogram_observe(&h, 0.0001);
    sb__histogram_observe(&h, 0.0005); /* on a bound: counts in that bucket (le) */
    sb__histogram_observe(&h, -1);     /* clamped to 0 */
    sb__histogram_observe(&h, 0.003);
    sb__histogram_observe(&h, 20); /* +Inf only */
    assert_int_equal(h.count, 5);
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(sb__histogram_render(&h, "x_seconds", "handler", "a\"b", b), SB_EOK);
    char *s = drain(b);
    assert_has_line(s, "x_seconds_bucket{handler=\"a\\\"b\",le=\"0.0005\"} 3");
    assert_has_line(s, "x_seconds_bucket{handler=\"a\\\"b\",le=\"0.001\"} 3");
    assert_has_line(s, "x_seconds_bucket{handler=\"a\\\"b\",le=\"0.0025\"} 3");
    assert_has_line(s, "x_seconds_bucket{handler=\"a\\\"b\",le=\"0.005\"} 4");
    assert_has_line(s, "x_seconds_bucket{handler=\"a\\\"b\",le=\"10\"} 4");
    assert_has_line(s, "x_seconds_bucket{handler=\"a\\\"b\",le=\"+Inf\"} 5");
    assert_has_line(s, "x_seconds_sum{handler=\"a\\\"b\"} 20.003599999999999");
    assert_has_line(s, "x_seconds_count{handler=\"a\\\"b\"} 5");
    free(s);

    /* Without a label. */
    assert_int_equal(sb__histogram_render(&h, "y", NULL, NULL, b), SB_EOK);
    s = drain(b);
    assert_has_line(s, "y_bucket{le=\"+Inf\"} 5");
    assert_has_line(s, "y_count 5");
    char *t = malloc(strlen(s) + 64);
    sprintf(t, "# HELP y d\n# TYPE y histogram\n%s", s);
    promtool_check(t);
    free(t);
    free(s);
    evbuffer_free(b);
}

static void test_metrics_without_sources(void **state)
{
    (void)state;
    sb__metrics_src_t src = {.store_up = -1};
    char *s = render(&src);
    assert_has_line(s, "# TYPE switchboard_messages_received_total counter");
    assert_has_line(s, "switchboard_messages_received_total{transport=\"\",source=\"\"} 0");
    assert_has_line(s, "# TYPE switchboard_messages_settled_total counter");
    assert_has_line(s, "# TYPE switchboard_handler_duration_seconds histogram");
    for (size_t i = 0; i < sizeof sb__dl_reasons / sizeof *sb__dl_reasons; i++) {
        char line[128];
        snprintf(line, sizeof line, "switchboard_dead_letters_total{reason=\"%s\"} 0",
                 sb__dl_reasons[i]);
        assert_has_line(s, line);
    }
    assert_has_line(s, "switchboard_inflight_messages 0");
    assert_has_line(s, "switchboard_broker_connected 0");
    assert_null(strstr(s, "switchboard_idempotency_store_up"));
    assert_non_null(strstr(s, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(s, "\nprocess_cpu_seconds_total "));
    assert_non_null(strstr(s, "\nprocess_open_fds "));
    assert_non_null(strstr(s, "\nprocess_start_time_seconds "));
    promtool_check(s);
    free(s);

    src.store_up = 1;
    src.broker_connected = true;
    src.transport = "memory";
    src.source = "orders \"main\"";
    s = render(&src);
    assert_has_line(s, "switchboard_idempotency_store_up 1");
    assert_has_line(s, "switchboard_broker_connected 1");
    assert_has_line(s, "switchboard_messages_received_total{transport=\"memory\",source="
                       "\"orders \\\"main\\\"\"} 0");
    promtool_check(s);
    free(s);
}

static void test_process_metrics_sane(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(sb__metrics_render_process(b), SB_EOK);
    char *s = drain(b);
    double rss = 0, start = 0, fds = -1;
    const char *p;
    assert_non_null(p = strstr(s, "\nprocess_resident_memory_bytes "));
    rss = strtod(p + strlen("\nprocess_resident_memory_bytes "), NULL);
    assert_non_null(p = strstr(s, "\nprocess_start_time_seconds "));
    start = strtod(p + strlen("\nprocess_start_time_seconds "), NULL);
    assert_non_null(p = strstr(s, "\nprocess_open_fds "));
    fds = strtod(p + strlen("\nprocess_open_fds "), NULL);
    assert_true(rss > 1024 * 1024);
    assert_true(fds >= 3);
    double now = (double)time(NULL);
    assert_true(start > now - 3600 && start <= now + 2);
    free(s);
    evbuffer_free(b);
}

/* A real registry with two handler instances of the built-in log module, one with a name
 * that needs escaping; counters and histograms filled by hand. */
typedef struct fixture {
    sb__intake_t *intake;
    sb__registry_t *reg;
    sb__histogram_t hist[2];
} fixture_t;

static void fixture_new(fixture_t *f)
{
    memset(f, 0, sizeof *f);
    sb__intake_opts_t io;
    memset(&io, 0, sizeof io);
    assert_int_equal(sb__intake_new(&io, &f->intake), SB_EOK);
    assert_int_equal(sb__registry_new(&f->reg), SB_EOK);
    const char *names[2] = {"audit", "we\"ird\\name"};
    for (size_t i = 0; i < 2; i++) {
        sb__instance_spec_t spec;
        memset(&spec, 0, sizeof spec);
        spec.name = names[i];
        spec.module = "log";
        static const char *const audit_bind[] = {"Order.#", "ETLJobCompletedEvent", NULL};
        if (i == 0)
            spec.bind = audit_bind; /* the second keeps the module's default pattern */
        char err[256] = "";
        if (sb__registry_add(f->reg, &spec, f->intake, err, sizeof err) != SB_EOK)
            fail_msg("registry_add: %s", err);
    }
    assert_int_equal(sb__registry_count(f->reg), 2);
    sb__handler_t *h = sb__registry_handler(f->reg, 0);
    h->n_ok = 7;
    h->n_retried = 2;
    h->n_dead_lettered = 1;
    h->n_duplicates = 3;
    h->n_rejected = 4;
    h->n_timeouts = 5;
    sb__histogram_observe(&f->hist[0], 0.002);
    sb__histogram_observe(&f->hist[0], 0.2);
}

static void fixture_free(fixture_t *f)
{
    sb__registry_destroy(f->reg);
    sb__intake_destroy(f->intake);
}

static void test_metrics_with_registry(void **state)
{
    (void)state;
    fixture_t f;
    fixture_new(&f);
    sb__metrics_src_t src = {.reg = f.reg,
                             .intake = f.intake,
                             .durations = f.hist,
                             .transport = "memory",
                             .source = "q",
                             .store_up = 0};
    char *s = render(&src);
    assert_has_line(s, "switchboard_messages_settled_total{handler=\"audit\",outcome=\"ok\"} 7");
    assert_has_line(s,
                    "switchboard_messages_settled_total{handler=\"audit\",outcome=\"retried\"} 2");
    assert_has_line(
        s, "switchboard_messages_settled_total{handler=\"audit\",outcome=\"dead_lettered\"} 1");
    assert_has_line(
        s, "switchboard_messages_settled_total{handler=\"audit\",outcome=\"duplicate\"} 3");
    assert_has_line(s,
                    "switchboard_messages_settled_total{handler=\"audit\",outcome=\"rejected\"} 4");
    assert_has_line(s, "switchboard_messages_settled_total{handler=\"we\\\"ird\\\\name\","
                       "outcome=\"ok\"} 0");
    assert_has_line(s, "switchboard_handler_duration_seconds_bucket{handler=\"audit\","
                       "le=\"0.0025\"} 1");
    assert_has_line(s, "switchboard_handler_duration_seconds_bucket{handler=\"audit\","
                       "le=\"0.25\"} 2");
    assert_has_line(s, "switchboard_handler_duration_seconds_count{handler=\"we\\\"ird\\\\name\"}"
                       " 0");
    assert_has_line(s, "switchboard_idempotency_store_up 0");
    assert_has_line(s, "switchboard_messages_received_total{transport=\"memory\",source=\"q\"} 0");
    promtool_check(s);
    free(s);

    /* Without an explicit array, each handler's own histogram (fed by the dispatcher) is
     * rendered: empty here, so every bucket reads 0. */
    src.durations = NULL;
    s = render(&src);
    assert_has_line(s, "switchboard_handler_duration_seconds_count{handler=\"audit\"} 0");
    promtool_check(s);
    free(s);

    json_t *j = sb__metrics_handlers_json(f.reg);
    assert_non_null(j);
    json_t *arr = json_object_get(j, "handlers");
    assert_int_equal(json_array_size(arr), 2);
    json_t *h0 = json_array_get(arr, 0);
    assert_string_equal(json_string_value(json_object_get(h0, "name")), "audit");
    assert_string_equal(json_string_value(json_object_get(h0, "module_handler")), "log");
    json_t *b0 = json_object_get(h0, "bind"); /* what it is bound to, from the config */
    assert_int_equal(json_array_size(b0), 2);
    assert_string_equal(json_string_value(json_array_get(b0, 0)), "Order.#");
    assert_string_equal(json_string_value(json_array_get(b0, 1)), "ETLJobCompletedEvent");
    json_t *b1 = json_object_get(json_array_get(arr, 1), "bind");
    assert_int_equal(json_array_size(b1), 1);
    assert_string_equal(json_string_value(json_array_get(b1, 0)), "#");
    json_t *c = json_object_get(h0, "counters");
    assert_int_equal(json_integer_value(json_object_get(c, "ok")), 7);
    assert_int_equal(json_integer_value(json_object_get(c, "timeout")), 5);
    json_decref(j);
    j = sb__metrics_handlers_json(NULL);
    assert_int_equal(json_array_size(json_object_get(j, "handlers")), 0);
    json_decref(j);
    fixture_free(&f);
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

static void test_endpoints(void **state)
{
    (void)state;
    fixture_t f;
    fixture_new(&f);
    app_t app = {.ready = true, .why = "broker not connected"};
    app.src = (sb__metrics_src_t){.reg = f.reg,
                                  .intake = f.intake,
                                  .durations = f.hist,
                                  .transport = "memory",
                                  .source = "q",
                                  .store_up = -1,
                                  .broker_connected = true};
    server_t s;
    server_start(&s, "127.0.0.1:0", NULL, &app_hooks, &app);
    char hv[256];

    resp_t r = http(s.port, "GET", "/healthz", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", hv, sizeof hv), "application/json");
    json_t *j = json_body(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    resp_free(&r);

    r = http(s.port, "GET", "/healthz?verbose=1", NULL); /* the query is not the path */
    assert_int_equal(r.status, 200);
    resp_free(&r);

    r = http(s.port, "HEAD", "/healthz", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    resp_free(&r);

    r = http(s.port, "GET", "/readyz", NULL);
    assert_int_equal(r.status, 200);
    j = json_body(&r);
    assert_true(json_is_true(json_object_get(j, "ready")));
    json_decref(j);
    resp_free(&r);

    app.ready = false;
    r = http(s.port, "GET", "/readyz", NULL);
    assert_int_equal(r.status, 503);
    assert_string_equal(header(&r, "Content-Type", hv, sizeof hv), "application/json");
    j = json_body(&r);
    assert_true(json_is_false(json_object_get(j, "ready")));
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "broker not connected");
    json_decref(j);
    resp_free(&r);
    app.ready = true;

    r = http(s.port, "GET", "/metrics", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", hv, sizeof hv),
                        "text/plain; version=0.0.4; charset=utf-8");
    assert_has_line(r.body,
                    "switchboard_messages_settled_total{handler=\"audit\",outcome=\"ok\"} 7");
    assert_has_line(r.body, "switchboard_broker_connected 1");
    promtool_check(r.body);
    resp_free(&r);

    r = http(s.port, "GET", "/handlers", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", hv, sizeof hv), "application/json");
    j = json_body(&r);
    assert_int_equal(json_array_size(json_object_get(j, "handlers")), 2);
    json_decref(j);
    resp_free(&r);
    assert_int_equal(app.handler_calls, 1);

    /* Errors: unknown path, wrong method (no token configured: no 401). */
    r = http(s.port, "GET", "/nope", NULL);
    assert_json_error(&r, 404);
    resp_free(&r);
    r = http(s.port, "GET", "/metrics/", NULL);
    assert_json_error(&r, 404);
    resp_free(&r);
    r = http(s.port, "POST", "/healthz", NULL);
    assert_json_error(&r, 405);
    assert_string_equal(header(&r, "Allow", hv, sizeof hv), "GET, HEAD");
    resp_free(&r);
    r = http(s.port, "DELETE", "/metrics", NULL);
    assert_json_error(&r, 405);
    resp_free(&r);
    r = http(s.port, "POST", "/replay", NULL);
    assert_json_error(&r, 404);
    resp_free(&r);

    /* Malformed and oversized requests: answered by libevent with 4xx or a close; the
     * server keeps serving. */
    static const char garbage[] = "\x01\x02 NOT HTTP AT ALL\r\n\r\n";
    r = http_raw(s.port, garbage, sizeof garbage - 1);
    assert_true(r.status == 0 || (r.status >= 400 && r.status < 500));
    resp_free(&r);
    /* A method libevent 2.1 does not know is refused by libevent itself: 501 (RFC 9110). */
    static const char badmethod[] = "BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    r = http_raw(s.port, badmethod, sizeof badmethod - 1);
    assert_true(r.status == 0 || r.status == 501);
    resp_free(&r);

    size_t big = 100 * 1024;
    char *req = malloc(big + 256);
    int n = snprintf(req, 256, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    r = http_raw(s.port, req, (size_t)n + big + 4);
    assert_true(r.status == 0 || (r.status >= 400 && r.status < 500));
    resp_free(&r);
    n = snprintf(req, 256,
                 "POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 big);
    memset(req + n, '{', big);
    r = http_raw(s.port, req, (size_t)n + big);
    assert_true(r.status == 0 || r.status == 413);
    resp_free(&r);
    free(req);

    r = http(s.port, "GET", "/healthz", NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    server_stop(&s);
    fixture_free(&f);
}

static void test_hooks_absent(void **state)
{
    (void)state;
    static const sb__admin_hooks_t none = {NULL, NULL, NULL, NULL};
    server_t s;
    server_start(&s, "localhost:0", NULL, &none, NULL);
    resp_t r = http(s.port, "GET", "/readyz", NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http(s.port, "GET", "/metrics", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    resp_free(&r);
    r = http(s.port, "GET", "/handlers", NULL);
    assert_int_equal(r.status, 200);
    json_t *j = json_body(&r);
    assert_int_equal(json_array_size(json_object_get(j, "handlers")), 0);
    json_decref(j);
    resp_free(&r);
    server_stop(&s);
}

static void test_token(void **state)
{
    (void)state;
    app_t app = {.ready = true, .src = {.store_up = -1}};
    server_t s;
    server_start(&s, "127.0.0.1:0", "s3cret-token", &app_hooks, &app);
    char hv[64];

    resp_t r = http(s.port, "POST", "/replay", NULL);
    assert_json_error(&r, 401);
    assert_string_equal(header(&r, "WWW-Authenticate", hv, sizeof hv), "Bearer");
    resp_free(&r);
    r = http(s.port, "POST", "/replay", "Authorization: Bearer wrong\r\n");
    assert_json_error(&r, 401);
    resp_free(&r);
    r = http(s.port, "POST", "/replay", "Authorization: Bearer s3cret-token-longer\r\n");
    assert_json_error(&r, 401);
    resp_free(&r);
    r = http(s.port, "DELETE", "/healthz", "Authorization: Basic czNjcmV0LXRva2Vu\r\n");
    assert_json_error(&r, 401);
    resp_free(&r);
    r = http(s.port, "POST", "/replay", "Authorization: Bearer s3cret-token\r\n");
    assert_json_error(&r, 404);
    resp_free(&r);
    r = http(s.port, "POST", "/healthz", "Authorization: bearer s3cret-token\r\n");
    assert_json_error(&r, 405);
    resp_free(&r);
    /* Reading needs no token. */
    r = http(s.port, "GET", "/metrics", NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    server_stop(&s);
}

static void test_bearer_ok(void **state)
{
    (void)state;
    assert_true(sb__admin_bearer_ok("Bearer abc", "abc"));
    assert_true(sb__admin_bearer_ok("bEaReR abc", "abc"));
    assert_false(sb__admin_bearer_ok("Bearer abcd", "abc"));
    assert_false(sb__admin_bearer_ok("Bearer ab", "abc"));
    assert_false(sb__admin_bearer_ok("Bearer ", "abc"));
    assert_false(sb__admin_bearer_ok("Bearer", "abc"));
    assert_false(sb__admin_bearer_ok("abc", "abc"));
    assert_false(sb__admin_bearer_ok(NULL, "abc"));
    assert_false(sb__admin_bearer_ok("Bearer ", ""));
}

static int try_new(const char *listen, const char *token, char *err, size_t n)
{
    struct event_base *base = event_base_new();
    sb__admin_t *a = NULL;
    err[0] = '\0';
    static const sb__admin_hooks_t none = {NULL, NULL, NULL, NULL};
    int rc = sb__admin_new(base, listen, token, &none, NULL, &a, err, n);
    if (rc == SB_EOK)
        assert_true(sb__admin_port(a) > 0);
    else
        assert_null(a);
    sb__admin_destroy(a);
    event_base_free(base);
    return rc;
}

static void test_refuse_non_loopback(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(try_new("0.0.0.0:0", NULL, err, sizeof err), SB_ECONFIG);
    assert_non_null(strstr(err, "loopback"));
    assert_non_null(strstr(err, "admin.token"));
    assert_int_equal(try_new("[::]:0", NULL, err, sizeof err), SB_ECONFIG);
    assert_int_equal(try_new("0.0.0.0:0", "", err, sizeof err), SB_ECONFIG); /* "" = none */
    /* With a token, any address. */
    assert_int_equal(try_new("0.0.0.0:0", "tok", err, sizeof err), SB_EOK);
    /* Loopback in every spelling. */
    assert_int_equal(try_new("127.0.0.1:0", NULL, err, sizeof err), SB_EOK);
    assert_int_equal(try_new("127.0.0.2:0", NULL, err, sizeof err), SB_EOK);
    assert_int_equal(try_new("localhost:0", NULL, err, sizeof err), SB_EOK);
    int rc = try_new("[::1]:0", NULL, err, sizeof err);
    assert_true(rc == SB_EOK || rc == SB_EIO); /* SB_EIO: no IPv6 on this machine */
}

static void test_bad_listen(void **state)
{
    (void)state;
    static const char *const bad[] = {"9464",
                                      "127.0.0.1:",
                                      "127.0.0.1:99999",
                                      "127.0.0.1:x",
                                      ":9464",
                                      "::1:9464",
                                      "[::1]9464",
                                      "[::1:9464",
                                      "127.0.0.1:123456",
                                      "",
                                      "no-such-host.invalid:9464"};
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = try_new(bad[i], NULL, err, sizeof err);
        if (rc != SB_ECONFIG)
            fail_msg("\"%s\": rc %d (%s), want SB_ECONFIG", bad[i], rc, err);
        assert_non_null(strstr(err, "admin.listen"));
    }
}

static void test_port_in_use(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    static const sb__admin_hooks_t none = {NULL, NULL, NULL, NULL};
    sb__admin_t *a = NULL, *b = NULL;
    char err[256] = "", listen[64];
    assert_int_equal(sb__admin_new(base, "127.0.0.1:0", NULL, &none, NULL, &a, err, sizeof err),
                     SB_EOK);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", sb__admin_port(a));
    assert_int_equal(sb__admin_new(base, listen, NULL, &none, NULL, &b, err, sizeof err), SB_EBUSY);
    assert_null(b);
    assert_non_null(strstr(err, "in use"));
    assert_non_null(strstr(err, listen));
    sb__admin_destroy(a);
    /* Free again once the first server is gone. */
    assert_int_equal(sb__admin_new(base, listen, NULL, &none, NULL, &b, err, sizeof err), SB_EOK);
    sb__admin_destroy(b);
    sb__admin_destroy(NULL);
    event_base_free(base);
}

int main(void)
{
    evthread_use_pthreads(); /* the test thread breaks the server thread's loop */
    sb__log_configure(SB_LOG_WARN, SB__LOG_TEXT, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_label),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_metrics_without_sources),
        cmocka_unit_test(test_process_metrics_sane),
        cmocka_unit_test(test_metrics_with_registry),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_hooks_absent),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_bearer_ok),
        cmocka_unit_test(test_refuse_non_loopback),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_port_in_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
