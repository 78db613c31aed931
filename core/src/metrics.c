/* metrics.c: renders the runtime's counters as a Prometheus text exposition (format 0.0.4).
 *
 * Design: a scrape is a pure function of the counters the loop already keeps (dispatcher,
 * handlers, intake) plus /proc/self; nothing is registered, cached or locked. Every family
 * named in the contract is always announced with HELP and TYPE, with zero values when its
 * source is absent, so dashboards and alerts see the series from the first scrape. Label
 * values are escaped per the format (\\, \", \n) and forced to valid UTF-8.
 *
 * The Kafka lag family is rendered from an array the caller fills (sb__kafka_lag) and is
 * announced only for the Kafka transport.
 *
 * Not here: serving HTTP (admin_http.c), computing the Kafka lag (transport_kafka.c), replay
 * counters (they arrive with their subsystem), and any push gateway or OpenMetrics output. */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/resource.h>

#include <event2/buffer.h>

#include "switchboard/error.h"
#include "metrics.h"

/* A sticky-failure writer: the first failed append makes every later one a no-op, and the
 * caller checks once at the end. */
typedef struct writer {
    struct evbuffer *out;
    int err;
} writer_t;

static void wprintf(writer_t *w, const char *fmt, ...) SB_PRINTF(2, 3);
static void wprintf(writer_t *w, const char *fmt, ...)
{
    if (w->err)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (evbuffer_add_vprintf(w->out, fmt, ap) < 0)
        w->err = SB_ENOMEM;
    va_end(ap);
}

static void wlabel(writer_t *w, const char *s)
{
    if (!w->err && sb__metrics_escape_label(w->out, s) != SB_EOK)
        w->err = SB_ENOMEM;
}

static void family(writer_t *w, const char *name, const char *type, const char *help)
{
    wprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ---- label escaping ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if the bytes there are not one. */
static size_t utf8_seq(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0; /* also stops at the terminating NUL */
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

int sb__metrics_escape_label(struct evbuffer *out, const char *s)
{
    if (!s)
        return SB_EOK;
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p; /* start of bytes copied verbatim */
    while (*p) {
        const char *rep = NULL;
        size_t skip = 1;
        if (*p == '\\') {
            rep = "\\\\";
        } else if (*p == '"') {
            rep = "\\\"";
        } else if (*p == '\n') {
            rep = "\\n";
        } else {
            size_t n = utf8_seq(p);
            if (n) {
                p += n;
                continue;
            }
            rep = "\xEF\xBF\xBD"; /* U+FFFD */
        }
        if (p > run && evbuffer_add(out, run, (size_t)(p - run)) < 0)
            return SB_ENOMEM;
        if (evbuffer_add(out, rep, strlen(rep)) < 0)
            return SB_ENOMEM;
        p += skip;
        run = p;
    }
    if (p > run && evbuffer_add(out, run, (size_t)(p - run)) < 0)
        return SB_ENOMEM;
    return SB_EOK;
}

/* ---- histogram ----------------------------------------------------------------------------- */

static void series_labels(writer_t *w, const char *label_name, const char *label_value, bool more)
{
    if (!label_name)
        return;
    wprintf(w, "%s=\"", label_name);
    wlabel(w, label_value);
    wprintf(w, "\"%s", more ? "," : "");
}

static void render_hist(writer_t *w, const sb__histogram_t *h, const char *name,
                        const char *label_name, const char *label_value)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= SB__HIST_NBOUNDS; i++) {
        cum += h->buckets[i];
        wprintf(w, "%s_bucket{", name);
        series_labels(w, label_name, label_value, true);
        if (i < SB__HIST_NBOUNDS)
            wprintf(w, "le=\"%g\"} %llu\n", sb__histogram_bounds[i], (unsigned long long)cum);
        else
            wprintf(w, "le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    const char *open = label_name ? "{" : "";
    const char *close = label_name ? "}" : "";
    wprintf(w, "%s_sum%s", name, open);
    series_labels(w, label_name, label_value, false);
    wprintf(w, "%s %.17g\n", close, h->sum);
    wprintf(w, "%s_count%s", name, open);
    series_labels(w, label_name, label_value, false);
    /* _count equals the +Inf bucket by definition; use the same sum so they never differ. */
    wprintf(w, "%s %llu\n", close, (unsigned long long)cum);
}

int sb__histogram_render(const sb__histogram_t *h, const char *name, const char *label_name,
                         const char *label_value, struct evbuffer *out)
{
    writer_t w = {out, SB_EOK};
    render_hist(&w, h, name, label_name, label_value);
    return w.err;
}

/* ---- process metrics ----------------------------------------------------------------------- */

/* Reads a small /proc file whole into buf (NUL-terminated). 0 or -1. */
static int read_small(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t got = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[got] = '\0';
    return got ? 0 : -1;
}

/* Field k (1-based, as in proc(5)) of /proc/self/stat, k >= 3. The comm field (2) may hold
 * spaces and parentheses, so counting starts after its last ')'. */
static int stat_field(const char *stat, int k, unsigned long long *v)
{
    const char *p = strrchr(stat, ')');
    if (!p)
        return -1;
    p++;
    for (int f = 3; f <= k; f++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return -1;
        if (f == k) {
            char *end;
            *v = strtoull(p, &end, 10);
            return end == p ? -1 : 0;
        }
        while (*p && *p != ' ')
            p++;
    }
    return -1;
}

static int boot_time(unsigned long long *btime)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    char line[512];
    int rc = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "btime ", 6)) {
            char *end;
            *btime = strtoull(line + 6, &end, 10);
            rc = end == line + 6 ? -1 : 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

int sb__metrics_render_process(struct evbuffer *out)
{
    writer_t w = {out, SB_EOK};
    char stat[1024];
    unsigned long long utime, stime, start, rss;
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    bool have_stat = read_small("/proc/self/stat", stat, sizeof stat) == 0 && tck > 0;

    if (have_stat && stat_field(stat, 14, &utime) == 0 && stat_field(stat, 15, &stime) == 0) {
        family(&w, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.");
        wprintf(&w, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tck);
    }
    if (have_stat && page > 0 && stat_field(stat, 24, &rss) == 0) {
        family(&w, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        wprintf(&w, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
    }
    unsigned long long vsize;
    if (have_stat && stat_field(stat, 23, &vsize) == 0) {
        family(&w, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        wprintf(&w, "process_virtual_memory_bytes %llu\n", vsize);
    }
    long fds = open_fds();
    if (fds >= 0) {
        family(&w, "process_open_fds", "gauge", "Number of open file descriptors.");
        wprintf(&w, "process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        family(&w, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        wprintf(&w, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    unsigned long long btime;
    if (have_stat && stat_field(stat, 22, &start) == 0 && boot_time(&btime) == 0) {
        family(&w, "process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.");
        wprintf(&w, "process_start_time_seconds %.2f\n",
                (double)btime + (double)start / (double)tck);
    }
    return w.err;
}

/* ---- the exposition ------------------------------------------------------------------------ */

static const char *const outcome_names[] = {"ok", "retried", "dead_lettered", "duplicate",
                                            "rejected"};

static uint64_t outcome_count(const sb__handler_t *h, size_t k)
{
    switch (k) {
    case 0:
        return h->n_ok;
    case 1:
        return h->n_retried;
    case 2:
        return h->n_dead_lettered;
    case 3:
        return h->n_duplicates;
    default:
        return h->n_rejected;
    }
}

int sb__metrics_render(const sb__metrics_src_t *src, struct evbuffer *out)
{
    writer_t w = {out, SB_EOK};
    const sb__dispatcher_stats_t *st = src->dp ? sb__dispatcher_stats(src->dp) : NULL;
    size_t nh = src->reg ? sb__registry_count(src->reg) : 0;

    uint64_t received = 0;
    if (st)
        received = st->received;
    else if (src->intake)
        received = sb__intake_stats(src->intake)->received;
    family(&w, "switchboard_messages_received_total", "counter",
           "Messages received from the broker.");
    wprintf(&w, "switchboard_messages_received_total{transport=\"");
    wlabel(&w, src->transport);
    wprintf(&w, "\",source=\"");
    wlabel(&w, src->source);
    wprintf(&w, "\"} %llu\n", (unsigned long long)received);

    family(&w, "switchboard_messages_settled_total", "counter",
           "Handler outcomes, by handler and outcome.");
    for (size_t i = 0; i < nh; i++) {
        const sb__handler_t *h = sb__registry_handler(src->reg, i);
        for (size_t k = 0; k < sizeof outcome_names / sizeof *outcome_names; k++) {
            wprintf(&w, "switchboard_messages_settled_total{handler=\"");
            wlabel(&w, h->name);
            wprintf(&w, "\",outcome=\"%s\"} %llu\n", outcome_names[k],
                    (unsigned long long)outcome_count(h, k));
        }
    }

    family(&w, "switchboard_handler_duration_seconds", "histogram",
           "Time spent in a handler per attempt, in seconds.");
    for (size_t i = 0; i < nh; i++) {
        const sb__handler_t *hd = sb__registry_handler(src->reg, i);
        render_hist(&w, src->durations ? &src->durations[i] : &hd->duration,
                    "switchboard_handler_duration_seconds", "handler", hd->name);
    }

    family(&w, "switchboard_dead_letters_total", "counter", "Messages dead-lettered, by reason.");
    for (size_t i = 0; i < sizeof sb__dl_reasons / sizeof sb__dl_reasons[0]; i++)
        wprintf(&w, "switchboard_dead_letters_total{reason=\"%s\"} %llu\n", sb__dl_reasons[i],
                (unsigned long long)(st ? st->dl_by_reason[i] : 0));

    family(&w, "switchboard_inflight_messages", "gauge", "Messages received and not yet settled.");
    wprintf(&w, "switchboard_inflight_messages %zu\n",
            src->dp ? sb__dispatcher_inflight(src->dp) : (size_t)0);

    family(&w, "switchboard_broker_connected", "gauge",
           "1 when the connection to the broker is up.");
    wprintf(&w, "switchboard_broker_connected %d\n", src->broker_connected ? 1 : 0);

    if (src->store_up >= 0) {
        family(&w, "switchboard_idempotency_store_up", "gauge",
               "1 when the idempotency store is reachable.");
        wprintf(&w, "switchboard_idempotency_store_up %d\n", src->store_up ? 1 : 0);
    }

    if (src->kafka) {
        family(&w, "switchboard_kafka_consumer_lag", "gauge",
               "Messages between the committed offset and the high watermark, by assigned "
               "partition.");
        for (size_t i = 0; i < src->n_kafka_lag; i++) {
            wprintf(&w, "switchboard_kafka_consumer_lag{topic=\"");
            wlabel(&w, src->kafka_lag[i].topic);
            wprintf(&w, "\",partition=\"%ld\"} %lld\n", (long)src->kafka_lag[i].partition,
                    (long long)src->kafka_lag[i].lag);
        }
    }

    if (w.err)
        return w.err;
    return sb__metrics_render_process(out);
}

/* ---- /handlers ----------------------------------------------------------------------------- */

json_t *sb__metrics_handlers_json(const sb__registry_t *reg)
{
    json_t *doc = json_object();
    json_t *arr = json_array();
    if (!doc || !arr || json_object_set(doc, "handlers", arr) != 0)
        goto err;
    size_t n = reg ? sb__registry_count(reg) : 0;
    for (size_t i = 0; i < n; i++) {
        const sb__handler_t *h = sb__registry_handler(reg, i);
        json_t *counters =
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "ok", (json_int_t)h->n_ok, "retried",
                      (json_int_t)h->n_retried, "rejected", (json_int_t)h->n_rejected, "duplicate",
                      (json_int_t)h->n_duplicates, "timeout", (json_int_t)h->n_timeouts,
                      "dead_lettered", (json_int_t)h->n_dead_lettered);
        json_t *bind = json_array();
        for (char **b = h->bind; bind && b && *b; b++)
            if (json_array_append_new(bind, json_string(*b)) != 0) {
                json_decref(bind);
                bind = NULL;
            }
        /* "o" steals counters and bind, also when the pack fails. */
        json_t *o = json_pack("{s:s, s:s?, s:o, s:b, s:I, s:o}", "name", h->name, "module_handler",
                              h->def ? h->def->name : NULL, "bind", bind, "blocking", h->blocking,
                              "timeout_ms", (json_int_t)h->timeout_ms, "counters", counters);
        if (!o || json_array_append_new(arr, o) != 0)
            goto err;
    }
    json_decref(arr);
    return doc;
err:
    json_decref(arr);
    json_decref(doc);
    return NULL;
}
