/* A silent broker: the network between switchboard and RabbitMQ stops carrying bytes while
 * both sockets stay open (a partition, not a closed connection), so only heartbeats can
 * tell. The test runs a small TCP proxy in its own thread between `switchboard run` and the
 * real broker, and "freezes" it: every connection open at that moment stops forwarding in
 * both directions for good, and new connections wait in the listen backlog until the
 * proxy is unfrozen. With heartbeat: 2s it requires:
 *   1. proxy flowing: events are handled and /readyz answers 200;
 *   2. proxy frozen: within ~3 heartbeat intervals /readyz answers 503 and the log says the
 *      connection was lost (the consumer detected the silence itself: no FIN, no RST);
 *   3. proxy unfrozen (the stuck pair stays stuck): the consumer reconnects through a new
 *      connection, /readyz is 200 again, and the events published before, during and after
 *      the freeze are all recorded at least once (the broker requeues what it had sent into
 *      the stuck connection once its own heartbeat check closes it), the queue ends empty.
 * The proxy is a test-side stand-in for a network, not a mock of the broker. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

#define HEARTBEAT_S 2
#define N_PER_PHASE 50
#define MAX_PAIRS   16

/* ---- the freezable proxy ------------------------------------------------------------------ */

typedef struct pair {
    int down; /* accepted from switchboard */
    int up;   /* to the broker */
    bool stuck;
} pair_t;

typedef struct proxy {
    int lfd, port;
    char up_host[256];
    int up_port;
    pthread_t th;
    atomic_bool stop, want_frozen, frozen;
    atomic_int accepted;
    pair_t pairs[MAX_PAIRS];
    size_t n;
} proxy_t;

static int connect_upstream(const proxy_t *p)
{
    char port[16];
    snprintf(port, sizeof port, "%d", p->up_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(p->up_host, port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *b, size_t n)
{
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void pair_close(proxy_t *p, size_t i)
{
    close(p->pairs[i].down);
    close(p->pairs[i].up);
    p->pairs[i] = p->pairs[--p->n];
}

/* One read from `from`, written whole to `to`. -1 when either side is gone. */
static int forward(int from, int to)
{
    char buf[65536];
    ssize_t r = recv(from, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR)
        return 0;
    if (r <= 0)
        return -1;
    return send_all(to, buf, (size_t)r);
}

static void *proxy_main(void *arg)
{
    proxy_t *p = arg;
    while (!atomic_load(&p->stop)) {
        bool want = atomic_load(&p->want_frozen);
        if (want && !atomic_load(&p->frozen)) {
            for (size_t i = 0; i < p->n; i++)
                p->pairs[i].stuck = true; /* for good: a partitioned connection never heals */
            atomic_store(&p->frozen, true);
        } else if (!want && atomic_load(&p->frozen)) {
            atomic_store(&p->frozen, false);
        }
        bool frozen = atomic_load(&p->frozen);

        struct pollfd pfd[1 + 2 * MAX_PAIRS];
        size_t map[1 + 2 * MAX_PAIRS]; /* pfd index -> pair index */
        nfds_t nf = 0;
        if (!frozen && p->n < MAX_PAIRS)
            pfd[nf++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
        size_t first_pair = nf;
        for (size_t i = 0; i < p->n; i++) {
            if (p->pairs[i].stuck)
                continue;
            map[nf] = i;
            pfd[nf++] = (struct pollfd){.fd = p->pairs[i].down, .events = POLLIN};
            map[nf] = i;
            pfd[nf++] = (struct pollfd){.fd = p->pairs[i].up, .events = POLLIN};
        }
        int pr = poll(pfd, nf, 50);
        if (pr <= 0)
            continue;
        /* Forward first (pair indices are stable until a close), close afterwards. */
        bool dead[MAX_PAIRS] = {false};
        for (nfds_t k = first_pair; k < nf; k++) {
            if (!pfd[k].revents)
                continue;
            size_t i = map[k];
            if (dead[i])
                continue;
            pair_t *pp = &p->pairs[i];
            int from = pfd[k].fd, to = from == pp->down ? pp->up : pp->down;
            if (forward(from, to) != 0)
                dead[i] = true;
        }
        for (size_t i = p->n; i-- > 0;)
            if (dead[i])
                pair_close(p, i);
        if (first_pair == 1 && (pfd[0].revents & POLLIN)) {
            int d = accept(p->lfd, NULL, NULL);
            if (d < 0)
                continue;
            int u = connect_upstream(p);
            if (u < 0) {
                close(d);
                continue;
            }
            p->pairs[p->n++] = (pair_t){.down = d, .up = u, .stuck = false};
            atomic_fetch_add(&p->accepted, 1);
        }
    }
    for (size_t i = 0; i < p->n; i++) {
        close(p->pairs[i].down);
        close(p->pairs[i].up);
    }
    p->n = 0;
    return NULL;
}

static void proxy_start(proxy_t *p, const char *up_host, int up_port)
{
    memset(p, 0, sizeof *p);
    snprintf(p->up_host, sizeof p->up_host, "%s", up_host);
    p->up_port = up_port;
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    SBT_CHECK(p->lfd >= 0 && bind(p->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    SBT_CHECK(listen(p->lfd, 16) == 0);
    SBT_CHECK(getsockname(p->lfd, (struct sockaddr *)&a, &n) == 0);
    p->port = ntohs(a.sin_port);
    SBT_CHECK(pthread_create(&p->th, NULL, proxy_main, p) == 0);
}

static void proxy_set_frozen(proxy_t *p, bool on)
{
    atomic_store(&p->want_frozen, on);
    uint64_t deadline = sbt_now_ms() + 5000;
    while (atomic_load(&p->frozen) != on) {
        SBT_CHECK_MSG(sbt_now_ms() < deadline, "the proxy did not %s", on ? "freeze" : "thaw");
        usleep(5000);
    }
}

static void proxy_stop(proxy_t *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->th, NULL);
    close(p->lfd);
}

/* ---- small helpers --------------------------------------------------------------------------- */

/* Polls /readyz every 100 ms until it answers `want`; the time from t0 (sbt_now_ms()) to
 * that answer, or -1 when timeout_ms (also from t0) passed first. */
static long wait_ready(int port, int want, uint64_t t0, int timeout_ms)
{
    while (sbt_now_ms() - t0 < (uint64_t)timeout_ms) {
        if (sbt_http(port, "GET", "/readyz", NULL, NULL, NULL) == want)
            return (long)(sbt_now_ms() - t0);
        usleep(100000);
    }
    return -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t r;
    while (s && (r = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2) {
            char *t = realloc(s, cap *= 2);
            if (!t)
                free(s);
            s = t;
        }
    }
    fclose(f);
    if (s)
        s[n] = '\0';
    return s;
}

/* The log line that reports the loss, copied into out; false when there is none yet. */
static bool log_loss_line(const char *log, char *out, size_t n)
{
    char *text = slurp(log);
    if (!text)
        return false;
    char *hit = strstr(text, " lost: ");
    if (hit) {
        char *b = hit, *e = strchr(hit, '\n');
        while (b > text && b[-1] != '\n')
            b--;
        snprintf(out, n, "%.*s", (int)(e ? e - b : (long)strlen(b)), b);
    }
    free(text);
    return hit != NULL;
}

/* Percent-encodes s for a URL's userinfo or path. */
static void url_encode(const char *s, char *out, size_t n)
{
    size_t o = 0;
    for (; *s && o + 4 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, n - o, "%%%02X", c);
    }
    out[o] = '\0';
}

static void publish_phase(const char *url, const char *exchange, char **ids, size_t from, size_t n)
{
    char **bodies = calloc(n, sizeof *bodies);
    SBT_CHECK(bodies);
    for (size_t i = 0; i < n; i++) {
        char b[512];
        snprintf(b, sizeof b,
                 "{\"JobId\":\"job-%06zu\",\"SourceSystem\":\"crm\",\"TargetSystem\":\"erp\","
                 "\"RecordsProcessed\":%zu,\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
                 "\"Id\":\"%s\",\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}",
                 from + i, from + i, ids[from + i]);
        SBT_CHECK((bodies[i] = strdup(b)) != NULL);
    }
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK(c != NULL);
    const char *rk[] = {"DataSync.Completed"};
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rk, true, (const char *const *)bodies, NULL, n,
                                    NULL, NULL) == 0);
    sbt_amqp_close(c);
    for (size_t i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
}

/* Waits until every id of ids[0..n) is in the ledger; returns how many are still missing. */
static size_t wait_recorded(const char *ledger, char **ids, size_t n, int timeout_ms)
{
    size_t missing = n, dups = 0, unexpected = 0;
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    do {
        sbt_ledger_check(ledger, (const char *const *)ids, n, &missing, &dups, &unexpected);
        if (missing == 0)
            break;
        usleep(100000);
    } while (sbt_now_ms() < deadline);
    return missing;
}

/* A failing check exits the test: the consumer must not outlive it. */
static pid_t g_child = -1;

static void kill_child(void)
{
    if (g_child > 0)
        kill(g_child, SIGKILL);
}

int main(void)
{
    const char *url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    signal(SIGPIPE, SIG_IGN);

    /* The broker's address and credentials, and the same URL through the proxy. */
    char *copy = strdup(url);
    SBT_CHECK(copy != NULL);
    struct amqp_connection_info ci;
    SBT_CHECK_MSG(amqp_parse_url(copy, &ci) == AMQP_STATUS_OK, "bad URL %s", url);
    SBT_CHECK_MSG(!ci.ssl, "this test proxies plain amqp:// only");
    proxy_t proxy;
    proxy_start(&proxy, ci.host, ci.port);
    char user[256], pass[256], vhost[256], purl[1024];
    url_encode(ci.user, user, sizeof user);
    url_encode(ci.password, pass, sizeof pass);
    url_encode(ci.vhost, vhost, sizeof vhost);
    snprintf(purl, sizeof purl, "amqp://%s:%s@127.0.0.1:%d/%s", user, pass, proxy.port, vhost);
    free(copy);

    char *exchange = sbt_unique_name("sbt.hb.x"), *queue = sbt_unique_name("sbt.hb.q");
    char *ledger = sbt_write_temp("", ".jsonl"), *log = sbt_write_temp("", ".log");
    int admin_port = sbt_free_port();
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: hb, shutdown_timeout: 10s}\n"
             "admin: {listen: \"127.0.0.1:%d\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 64, heartbeat: %ds}\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "  - {name: rec, module: record, bind: [\"DataSync.#\"], config: {path: %s}}\n",
             admin_port, purl, exchange, queue, HEARTBEAT_S, ledger);
    char *cfg = sbt_write_temp(yaml, ".yaml");

    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK(c != NULL);
    SBT_CHECK(sbt_amqp_declare_topic_exchange(c, exchange) == 0);
    SBT_CHECK(sbt_amqp_declare_queue(c, queue, exchange, "DataSync.#") == 0);
    sbt_amqp_close(c);

    size_t total = 3 * N_PER_PHASE;
    char **ids = calloc(total, sizeof *ids);
    SBT_CHECK(ids != NULL);
    for (size_t i = 0; i < total; i++) {
        char id[64];
        snprintf(id, sizeof id, "hb-%c-%03zu", "bdf"[i / N_PER_PHASE], i % N_PER_PHASE);
        SBT_CHECK((ids[i] = strdup(id)) != NULL);
    }

    const char *args[] = {"run", "-c", cfg, NULL};
    pid_t pid = g_child = sbt_spawn_switchboard(args, NULL, log);
    atexit(kill_child);

    /* 1. Flowing. */
    SBT_CHECK_MSG(wait_ready(admin_port, 200, sbt_now_ms(), 20000) >= 0,
                  "/readyz never 200 (log: %s)", log);
    SBT_CHECK(atomic_load(&proxy.accepted) >= 1);
    publish_phase(url, exchange, ids, 0, N_PER_PHASE);
    SBT_CHECK_MSG(wait_recorded(ledger, ids, N_PER_PHASE, 15000) == 0,
                  "events before the freeze not recorded (log: %s)", log);
    SBT_CHECK(sbt_http(admin_port, "GET", "/readyz", NULL, NULL, NULL) == 200);
    printf("1. flowing: %d events recorded, /readyz 200\n", N_PER_PHASE);
    usleep(300000); /* let their acks go out before the network goes quiet */

    /* 2. Frozen: nothing moves, nothing closes. */
    proxy_set_frozen(&proxy, true);
    uint64_t t_freeze = sbt_now_ms();
    publish_phase(url, exchange, ids, N_PER_PHASE, N_PER_PHASE);
    long t_down = wait_ready(admin_port, 503, t_freeze, 4 * HEARTBEAT_S * 1000);
    SBT_CHECK_MSG(t_down >= 0,
                  "/readyz still not 503 %d s after the network went silent: the silent "
                  "broker was not detected (log: %s)",
                  4 * HEARTBEAT_S, log);
    char line[512] = "";
    uint64_t t_log = sbt_now_ms() + 2000;
    while (!log_loss_line(log, line, sizeof line) && sbt_now_ms() < t_log)
        usleep(50000);
    SBT_CHECK_MSG(line[0], "no 'connection ... lost' line in the log (%s)", log);
    printf("2. frozen: /readyz 503 after %ld ms (heartbeat %d s); log: %s\n", t_down, HEARTBEAT_S,
           line);
    SBT_CHECK_MSG(t_down <= 3 * HEARTBEAT_S * 1000 + 500,
                  "detection took %ld ms, more than 3 heartbeat intervals", t_down);
    usleep(1000000); /* a moment of being down (reconnects wait in the backlog) */

    /* 3. Thawed: new connections flow, the stuck one stays stuck. */
    int before = atomic_load(&proxy.accepted);
    proxy_set_frozen(&proxy, false);
    long t_up = wait_ready(admin_port, 200, sbt_now_ms(), 20000);
    SBT_CHECK_MSG(t_up >= 0, "/readyz never 200 again after the thaw (log: %s)", log);
    SBT_CHECK(atomic_load(&proxy.accepted) > before);
    publish_phase(url, exchange, ids, 2 * N_PER_PHASE, N_PER_PHASE);
    size_t missing = wait_recorded(ledger, ids, total, 20000);
    size_t dups = 0, unexpected = 0;
    sbt_ledger_check(ledger, (const char *const *)ids, total, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0, "%zu of %zu events never recorded (log: %s)", missing, total, log);
    SBT_CHECK(unexpected == 0);
    printf("3. thawed: /readyz 200 after %ld ms; all %zu events recorded (%zu more than "
           "once)\n",
           t_up, total, dups);

    int st = sbt_stop(pid, SIGTERM, 15000);
    g_child = -1;
    SBT_CHECK_MSG(st == 0, "switchboard exited with %d (log: %s)", st, log);
    proxy_stop(&proxy);
    long depth = sbt_amqp_depth(url, queue);
    SBT_CHECK_MSG(depth == 0, "queue %s holds %ld messages at the end", queue, depth);

    char dlq[256], dlx[256];
    snprintf(dlq, sizeof dlq, "%s.dlq", queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    const char *qs[] = {queue, dlq, NULL};
    const char *xs[] = {exchange, dlx, NULL};
    sbt_amqp_cleanup(url, qs, xs);
    unlink(ledger);
    unlink(cfg);
    unlink(log);
    for (size_t i = 0; i < total; i++)
        free(ids[i]);
    free(ids);
    free(exchange);
    free(queue);
    free(ledger);
    free(cfg);
    free(log);
    printf("ok: a silent broker is detected by heartbeats, and nothing is lost\n");
    return 0;
}
