/* cmd_dlq.c: `switchboard dlq -c FILE <verb> [filters]`, the operator's dead-letter tool.
 *
 * Design: every verb is one loop over the DLQ backend (dlq_backend.h) chosen by
 * transport.kind: next() -> filter -> [publish_confirmed()] -> ack() or keep(). Reading
 * verbs (stats, list, show, export) open the DLQ read-only and keep everything; replay and
 * purge ack only what they moved (replay: after the broker confirmed the copy); import
 * publishes records from a file into the DLQ. --dry-run prints what would move and moves
 * nothing. Data goes to stdout, the progress line (TTY only) and the summary to stderr.
 * Exit status: 0, 1 when anything selected failed or was refused (listed by id), 64 usage,
 * 69 broker unavailable, 78 configuration. replay runs the loop shared with the admin
 * server's replay jobs (dlq_replay.c). On Kafka, a reading verb with --since starts at a
 * timestamp seek (since_seek_ms), and --type sees the type the consumer routed by, which
 * may be a body member (transport.kafka.event_type_field).
 *
 * It does not run on the daemon's loop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "cmd_dlq.h"
#include "config.h"
#include "datetime.h"
#include "dlq_amqp.h"
#include "dlq_filter.h"
#include "dlq_kafka.h"
#include "dlq_replay.h"
#include "ratelimit.h"

#define EX_OK_           0
#define EX_FAIL          1
#define EX_USAGE_        64
#define EX_UNAVAILABLE_  69
#define EX_CONFIG_       78
#define MAX_FAILED_SHOWN 50
/* How far before --since a read-only Kafka scan starts (see since_seek_ms). */
#define SEEK_SLACK_MS (3600 * 1000LL)

typedef enum { V_STATS, V_LIST, V_SHOW, V_EXPORT, V_IMPORT, V_REPLAY, V_PURGE } verb_t;

typedef struct dlqcmd {
    verb_t verb;
    const char *cfg_path, *out_path, *in_path, *to, *queue, *rate;
    const char *type_field; /* the body member holding a Kafka event's type; NULL: none */
    bool json, dry_run, all;
    sb__dlq_filter_t *filter;
    const sb__dlq_backend_ops_t *ops;
    sb__dlq_backend_t *b;
    sb__ratelimit_t rl;
    bool paced, tty;
    int64_t start_us, last_progress_us;
    uint64_t total, seen, selected, moved, failed, refused;
    char failed_ids[MAX_FAILED_SHOWN][128];
    size_t n_failed_ids;
    sb__dlq_replay_progress_t rp; /* replay's counters (dlq_replay.c) */
} dlqcmd_t;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: switchboard dlq -c FILE <verb> [options]\n"
               "verbs:\n"
               "  stats                     counts by reason, event type and handler\n"
               "  list [--json]             one line per dead letter\n"
               "  show ID                   every property and header of one dead letter\n"
               "  export --out FILE.jsonl   lossless copy (messages stay in the DLQ)\n"
               "  import FILE.jsonl         publish records into the DLQ (confirmed)\n"
               "  replay [--to EXCHANGE[:ROUTING_KEY]] [--max-replays N] [--force] [--rate N/s]\n"
               "  purge [--all]             remove the selected dead letters\n"
               "filters: --type PATTERN --reason LIST --error REGEX --handler LIST --since TIME\n"
               "         --until TIME --id ID --limit N; also --queue NAME, --dry-run\n"
               "Kafka, reading verbs (stats, list, show, export): --from-beginning or --offset N\n"
               "         read the retained log from there, including what was already replayed\n"
               "         or purged (by default they read what is still to be replayed)\n");
}

static const char *rec_id(const sb__dlq_record_t *r, char *buf, size_t n)
{
    size_t len;
    const char *id = sb__dlq_record_event_id(r, &len, buf, n);
    if (!id)
        return "(no id)";
    if (id != buf) {
        snprintf(buf, n, "%.*s", (int)(len > n - 1 ? n - 1 : len), id);
        return buf;
    }
    return buf;
}

static void note_failed(dlqcmd_t *c, const sb__dlq_record_t *r, const char *what, const char *why)
{
    char idb[96];
    const char *id = rec_id(r, idb, sizeof idb);
    fprintf(stderr, "%sswitchboard dlq: %s %s: %s\n", c->tty ? "\r\033[K" : "", what, id, why);
    if (c->n_failed_ids < MAX_FAILED_SHOWN)
        snprintf(c->failed_ids[c->n_failed_ids++], sizeof c->failed_ids[0], "%s", id);
}

static void progress(dlqcmd_t *c, bool final)
{
    if (!c->tty)
        return;
    int64_t now = mono_us();
    if (!final && now - c->last_progress_us < 100000)
        return;
    c->last_progress_us = now;
    char line[128];
    sb__progress_format(line, sizeof line, c->seen, c->total, (uint64_t)(now - c->start_us));
    fprintf(stderr, "\r\033[K%s", final ? "" : line);
    fflush(stderr);
}

static void pace(dlqcmd_t *c)
{
    if (!c->paced)
        return;
    for (;;) {
        int64_t d = sb__ratelimit_delay_us(&c->rl, mono_us());
        if (d <= 0)
            return;
        struct timespec ts = {d / 1000000, (long)(d % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

static void print_row(const dlqcmd_t *c, const sb__dlq_record_t *r)
{
    char idb[128], tb[1025];
    size_t tl = 0;
    const char *type = sb__dlq_filter_event_type(c->filter, r, &tl, tb, sizeof tb);
    const char *reason = sb__dlq_record_reason(r), *handler = sb__dlq_record_handler(r);
    const char *err = sb__dlq_record_error(r);
    const char *at = sb__dlq_record_header_str(r, SB__DLQ_H_FAILED_AT, NULL);
    printf("%-36s %-28.*s %-14s %-14s %-27s %3llu  %.80s\n", rec_id(r, idb, sizeof idb),
           type ? (int)(tl > 28 ? 28 : tl) : 1, type ? type : "-", reason ? reason : "-",
           handler ? handler : "-", at ? at : "-",
           (unsigned long long)sb__dlq_record_replay_count(r), err ? err : "");
}

static int print_show(const sb__dlq_record_t *r)
{
    char *line = NULL;
    size_t len;
    int rc = sb__dlq_record_to_json(r, &line, &len);
    if (rc != SB_EOK)
        return rc;
    json_t *j = json_loadb(line, len, 0, NULL);
    char *pretty = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    printf("%s\n", pretty ? pretty : line);
    if (pretty)
        sb_free(pretty);
    json_decref(j);
    sb_free(line);
    return SB_EOK;
}

static int write_json(const sb__dlq_record_t *r, FILE *out)
{
    char *line = NULL;
    size_t len;
    int rc = sb__dlq_record_to_json(r, &line, &len);
    if (rc != SB_EOK)
        return rc;
    fwrite(line, 1, len, out);
    fputc('\n', out);
    sb_free(line);
    return ferror(out) ? SB_EIO : SB_EOK;
}

/* Handles one selected record of a scanning verb. Returns true to ack it. */
static bool handle(dlqcmd_t *c, const sb__dlq_record_t *r, sb__dlq_stats_t *stats, FILE *out)
{
    char idb[128];
    switch (c->verb) {
    case V_STATS:
        if (sb__dlq_stats_add(stats, r) != SB_EOK)
            c->failed++;
        return false;
    case V_LIST:
        if (c->json)
            write_json(r, stdout);
        else
            print_row(c, r);
        return false;
    case V_SHOW:
        print_show(r);
        return false;
    case V_EXPORT:
        if (write_json(r, out) != SB_EOK) {
            c->failed++;
            note_failed(c, r, "cannot export", strerror(errno));
        } else {
            c->moved++;
        }
        return false;
    case V_PURGE:
        if (c->dry_run) {
            printf("would purge %s\n", rec_id(r, idb, sizeof idb));
            c->moved++;
            return false;
        }
        return true;
    case V_REPLAY: /* replay() */
    case V_IMPORT:
        break;
    }
    return false;
}

/* ---- replay: the loop shared with the admin server's jobs (dlq_replay.c) ---------------- */

static void replay_on_record(void *arg, sb__dlq_replay_event_t ev, const char *id, const char *why)
{
    dlqcmd_t *c = arg;
    if (ev == SB__DLQ_REPLAY_WOULD) {
        printf("would replay %s\n", id);
        return;
    }
    const char *what = ev == SB__DLQ_REPLAY_REFUSED ? "refused" : "cannot replay";
    fprintf(stderr, "%sswitchboard dlq: %s %s: %s\n", c->tty ? "\r\033[K" : "", what, id,
            why ? why : "");
    if (c->n_failed_ids < MAX_FAILED_SHOWN)
        snprintf(c->failed_ids[c->n_failed_ids++], sizeof c->failed_ids[0], "%s", id);
}

static void replay_on_progress(void *arg)
{
    dlqcmd_t *c = arg;
    c->seen = atomic_load(&c->rp.seen);
    progress(c, false);
}

static int replay(dlqcmd_t *c)
{
    sb__dlq_replay_opts_t o = {.b = c->b,
                               .filter = c->filter,
                               .to = c->to,
                               .dry_run = c->dry_run,
                               .rl = c->paced ? &c->rl : NULL,
                               .on_record = replay_on_record,
                               .arg = c,
                               .on_progress = replay_on_progress};
    char err[512] = "";
    int rc = sb__dlq_replay_run(&o, &c->rp, err, sizeof err);
    progress(c, true);
    c->seen = atomic_load(&c->rp.seen);
    c->selected = atomic_load(&c->rp.selected);
    c->moved = atomic_load(&c->rp.replayed);
    c->failed = atomic_load(&c->rp.failed);
    c->refused = atomic_load(&c->rp.refused);
    if (rc != SB_EOK) {
        fprintf(stderr, "switchboard dlq: %s\n", *err ? err : sb_strerror(rc));
        return rc == SB_EUNAVAILABLE ? EX_UNAVAILABLE_ : EX_FAIL;
    }
    return EX_OK_;
}

static int scan(dlqcmd_t *c)
{
    sb__dlq_stats_t *stats = NULL;
    FILE *out = NULL;
    int status = EX_OK_;
    if (c->verb == V_STATS && (sb__dlq_stats_new(&stats) != SB_EOK ||
                               sb__dlq_stats_set_type_field(stats, c->type_field) != SB_EOK)) {
        sb__dlq_stats_destroy(stats);
        return EX_FAIL;
    }
    if (c->verb == V_EXPORT) {
        out = strcmp(c->out_path, "-") ? fopen(c->out_path, "w") : stdout;
        if (!out) {
            fprintf(stderr, "switchboard dlq: cannot write %s: %s\n", c->out_path, strerror(errno));
            sb__dlq_stats_destroy(stats);
            return EX_FAIL;
        }
    }
    uint64_t limit = sb__dlq_filter_limit(c->filter);
    for (;;) {
        if (limit && c->selected >= limit)
            break;
        sb__dlq_record_t *r = NULL;
        sb__dlq_pos_t *pos = NULL;
        int rc = c->ops->next(c->b, 0, &r, &pos);
        if (rc == SB_ECLOSED || rc == SB_ETIMEOUT)
            break;
        if (rc == SB_ETOOBIG) { /* the backend logged where and why it stopped */
            fprintf(stderr,
                    "%sswitchboard dlq: stopped: no room to record more moved records "
                    "behind the ones that stay; nothing was lost or sent twice\n",
                    c->tty ? "\r\033[K" : "");
            status = EX_FAIL;
            break;
        }
        if (rc != SB_EOK) {
            fprintf(stderr, "%sswitchboard dlq: reading the DLQ failed: %s\n",
                    c->tty ? "\r\033[K" : "", sb_strerror(rc));
            status = rc == SB_EUNAVAILABLE ? EX_UNAVAILABLE_ : EX_FAIL;
            break;
        }
        c->seen++;
        bool ack = false;
        if (sb__dlq_filter_match(c->filter, r)) {
            c->selected++;
            ack = handle(c, r, stats, out);
        }
        if (ack) {
            if (c->ops->ack(c->b, pos) == SB_EOK) {
                c->moved++;
            } else {
                c->failed++;
                note_failed(c, r, "cannot remove", "ack failed (it may be moved again)");
            }
        } else {
            c->ops->keep(c->b, pos);
        }
        sb__dlq_record_destroy(r);
        progress(c, false);
    }
    progress(c, true);
    if (out && out != stdout && fclose(out) != 0) {
        fprintf(stderr, "switchboard dlq: writing %s failed: %s\n", c->out_path, strerror(errno));
        status = EX_FAIL;
    }
    if (stats) {
        char *txt = NULL;
        if ((c->json ? sb__dlq_stats_to_json(stats, &txt)
                     : sb__dlq_stats_format_table(stats, &txt)) == SB_EOK) {
            fputs(txt, stdout);
            if (c->json)
                fputc('\n', stdout);
        }
        sb_free(txt);
        sb__dlq_stats_destroy(stats);
    }
    if (c->verb == V_SHOW && c->selected == 0) {
        fprintf(stderr, "switchboard dlq: no dead letter with that id\n");
        status = EX_FAIL;
    }
    return status;
}

static int import(dlqcmd_t *c)
{
    FILE *in = strcmp(c->in_path, "-") ? fopen(c->in_path, "r") : stdin;
    if (!in) {
        fprintf(stderr, "switchboard dlq: cannot read %s: %s\n", c->in_path, strerror(errno));
        return EX_FAIL;
    }
    /* Straight into the DLQ queue through the default exchange. */
    char to[600];
    snprintf(to, sizeof to, ":%s", c->queue);
    sb__dlq_dest_t dest = {.to = to};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    size_t lineno = 0;
    int status = EX_OK_;
    uint64_t limit = sb__dlq_filter_limit(c->filter);
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        if (len == 0 || line[0] == '\n')
            continue;
        if (limit && c->selected >= limit)
            break;
        c->seen++;
        char err[512];
        sb__dlq_record_t *r = NULL;
        if (sb__dlq_record_from_json(line, (size_t)len, &r, err, sizeof err) != SB_EOK) {
            fprintf(stderr, "switchboard dlq: %s:%zu: %s\n", c->in_path, lineno, err);
            c->failed++;
            continue;
        }
        if (sb__dlq_filter_match(c->filter, r)) {
            c->selected++;
            char idb[128];
            if (c->dry_run) {
                printf("would import %s\n", rec_id(r, idb, sizeof idb));
                c->moved++;
            } else {
                pace(c);
                err[0] = '\0';
                int rc = c->ops->publish_confirmed(c->b, r, &dest, err, sizeof err);
                if (rc == SB_EOK) {
                    c->moved++;
                } else {
                    c->failed++;
                    note_failed(c, r, "cannot import", *err ? err : sb_strerror(rc));
                }
            }
        }
        sb__dlq_record_destroy(r);
        progress(c, false);
    }
    progress(c, true);
    free(line);
    if (in != stdin)
        fclose(in);
    return status;
}

/* The Kafka start time for a read-only scan with --since, or -1 (no seek).
 *
 * The backend seeks each partition to its first record whose Kafka timestamp is >= this
 * (rd_kafka_offsets_for_times), when that is past the replay group's offset; --since itself
 * is still decided by match() on x-sb-failed-at, so the seek must never skip a record whose
 * x-sb-failed-at >= since. Kafka returns the FIRST offset whose timestamp is >= the target,
 * so every record it skips has a timestamp below the target; a skipped match would need a
 * timestamp below x-sb-failed-at - slack. The transport sets x-sb-failed-at and then
 * produces, and librdkafka stamps the record (CreateTime) from the same wall clock at
 * produce time, so timestamp >= x-sb-failed-at (in whole milliseconds); an `import`ed record
 * is stamped at import, after its x-sb-failed-at. What remains is clock trouble: a broker
 * with LogAppendTime whose clock lags the consumer's, or a wall clock stepped back between
 * the two stamps. The slack absorbs that much skew; reading an hour more of a DLQ costs
 * little.
 *
 * --until gives no such bound the other way (an imported record is stamped long after its
 * x-sb-failed-at), so a scan never stops early on timestamps.
 *
 * Writing verbs (replay, purge) never seek: they start at the replay group's committed
 * offset, which only advances past what they moved, so records they do not select (by time
 * or anything else) stay in the DLQ. A --dry-run is read-only and may seek. */
static int64_t since_seek_ms(const sb__dlq_filter_t *f)
{
    int64_t us;
    if (!sb__dlq_filter_since(f, &us))
        return -1;
    int64_t ms = us / 1000;
    return ms > SEEK_SLACK_MS ? ms - SEEK_SLACK_MS : -1; /* -1: before 1970 + slack */
}

static const char *const verbs[] = {"stats", "list", "show", "export", "import", "replay", "purge"};

int sb__cmd_dlq(int argc, char **argv)
{
    dlqcmd_t c;
    memset(&c, 0, sizeof c);
    int status = EX_USAGE_;
    char err[512];
    const char *verb = NULL, *arg = NULL;
    sb__config_t *cfg = NULL;
    const char *max_replays = NULL;
    bool from_beginning = false;
    int64_t start_offset = -1;
    if (sb__dlq_filter_new(sb__datetime_now_us(), &c.filter) != SB_EOK) {
        fprintf(stderr, "switchboard dlq: out of memory\n");
        return EX_FAIL;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            status = EX_OK_;
            goto out;
        }
        if (!strcmp(a, "--json")) {
            c.json = true;
        } else if (!strcmp(a, "--dry-run")) {
            c.dry_run = true;
        } else if (!strcmp(a, "--all")) {
            c.all = true;
        } else if (!strcmp(a, "--from-beginning")) {
            from_beginning = true;
        } else if (!strcmp(a, "--offset") && v) {
            char *end;
            long long o = strtoll(v, &end, 10);
            if (end == v || *end || o < 0) {
                fprintf(stderr, "switchboard dlq: --offset needs an offset >= 0, not \"%s\"\n", v);
                goto out;
            }
            start_offset = o;
            i++;
        } else if (!strcmp(a, "--force")) {
            sb__dlq_filter_set(c.filter, "force", NULL, NULL, 0);
        } else if (a[0] == '-' && a[1]) {
            if (!v) {
                fprintf(stderr, "switchboard dlq: %s needs a value\n", a);
                goto out;
            }
            i++;
            if (!strcmp(a, "-c") || !strcmp(a, "--config"))
                c.cfg_path = v;
            else if (!strcmp(a, "--out") || !strcmp(a, "-o"))
                c.out_path = v;
            else if (!strcmp(a, "--to"))
                c.to = v;
            else if (!strcmp(a, "--queue"))
                c.queue = v;
            else if (!strcmp(a, "--rate"))
                c.rate = v;
            else if (!strcmp(a, "--max-replays"))
                max_replays = v;
            else if (!strncmp(a, "--", 2) && strcmp(a, "--max-replays") &&
                     sb__dlq_filter_set(c.filter, a + 2, v, err, sizeof err) == SB_EOK)
                ;
            else {
                fprintf(stderr, "switchboard dlq: %s\n",
                        strncmp(a, "--", 2) ? "unknown option" : err);
                goto out;
            }
        } else if (!verb) {
            verb = a;
        } else if (!arg) {
            arg = a;
        } else {
            fprintf(stderr, "switchboard dlq: unexpected argument \"%s\"\n", a);
            goto out;
        }
    }
    if (!verb) {
        usage(stderr);
        goto out;
    }
    size_t vi = 0;
    while (vi < sizeof verbs / sizeof verbs[0] && strcmp(verbs[vi], verb))
        vi++;
    if (vi == sizeof verbs / sizeof verbs[0]) {
        fprintf(stderr, "switchboard dlq: unknown verb \"%s\"\n", verb);
        usage(stderr);
        goto out;
    }
    c.verb = (verb_t)vi;
    if (!c.cfg_path) {
        fprintf(stderr, "switchboard dlq: -c FILE is required (the config `run` uses)\n");
        goto out;
    }
    if (c.verb == V_SHOW) {
        if (!arg) {
            fprintf(stderr, "switchboard dlq: show needs an ID\n");
            goto out;
        }
        if (sb__dlq_filter_set(c.filter, "id", arg, err, sizeof err) != SB_EOK) {
            fprintf(stderr, "switchboard dlq: %s\n", err);
            goto out;
        }
        arg = NULL;
    }
    if (c.verb == V_IMPORT) {
        if (!(c.in_path = arg)) {
            fprintf(stderr, "switchboard dlq: import needs a FILE.jsonl\n");
            goto out;
        }
        arg = NULL;
    }
    if (arg) {
        fprintf(stderr, "switchboard dlq: unexpected argument \"%s\"\n", arg);
        goto out;
    }
    if (c.verb == V_EXPORT && !c.out_path) {
        fprintf(stderr, "switchboard dlq: export needs --out FILE.jsonl (- for stdout)\n");
        goto out;
    }
    if (c.verb == V_PURGE && !c.all && !sb__dlq_filter_selects(c.filter)) {
        fprintf(stderr, "switchboard dlq: purge without a filter removes everything; "
                        "say --all\n");
        goto out;
    }
    if (c.verb == V_REPLAY &&
        sb__dlq_filter_set(c.filter, "max-replays", max_replays ? max_replays : "5", err,
                           sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard dlq: %s\n", err);
        goto out;
    }
    if (c.rate) {
        uint64_t n, period;
        if (sb__ratelimit_parse(c.rate, &n, &period, err, sizeof err) != SB_EOK) {
            fprintf(stderr, "switchboard dlq: --rate: %s\n", err);
            goto out;
        }
        sb__ratelimit_init(&c.rl, n, period, 1);
        c.paced = true;
    }
    if (sb__config_load(c.cfg_path, &cfg, err, sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard dlq: %s\n", err);
        status = EX_CONFIG_;
        goto out;
    }
    const char *kind = sb__config_str(cfg, "transport.kind");
    if (kind && !strcmp(kind, "amqp")) {
        c.ops = &sb__dlq_amqp_ops;
    } else if (kind && !strcmp(kind, "kafka")) {
        c.ops = &sb__dlq_kafka_ops;
        /* The consumer falls back to this body member when no header names the type
         * (envelope.c); --type and stats must see the same type. */
        c.type_field = sb__config_str(cfg, "transport.kafka.event_type_field");
    } else {
        fprintf(stderr,
                "switchboard dlq: transport.kind %s has no dead-letter queue (amqp or kafka)\n",
                kind ? kind : "(none)");
        status = EX_CONFIG_;
        goto out;
    }
    bool writes = c.verb == V_IMPORT || ((c.verb == V_REPLAY || c.verb == V_PURGE) && !c.dry_run);
    if (sb__dlq_filter_set_type_field(c.filter, c.type_field) != SB_EOK) {
        fprintf(stderr, "switchboard dlq: out of memory\n");
        status = EX_FAIL;
        goto out;
    }
    if ((from_beginning || start_offset >= 0) &&
        (writes || c.verb == V_IMPORT || c.ops != &sb__dlq_kafka_ops)) {
        fprintf(stderr, "switchboard dlq: --from-beginning and --offset are for reading a "
                        "Kafka DLQ (stats, list, show, export, --dry-run); replay and purge "
                        "always start at the replay group's progress\n");
        status = EX_USAGE_;
        goto out;
    }
    sb__dlq_open_opts_t oo = {.dlq = c.queue,
                              .read_only = !writes,
                              .from_beginning = from_beginning,
                              .since_ms = writes ? -1 : since_seek_ms(c.filter),
                              .start_offset = start_offset};
    err[0] = '\0';
    int rc = c.ops->open(cfg, &oo, &c.b, err, sizeof err);
    if (rc != SB_EOK) {
        fprintf(stderr, "switchboard dlq: %s\n", *err ? err : sb_strerror(rc));
        status = rc == SB_EUNAVAILABLE ? EX_UNAVAILABLE_ : EX_FAIL;
        goto out;
    }
    if (c.verb == V_IMPORT && !c.queue && c.ops == &sb__dlq_kafka_ops) {
        fprintf(stderr, "switchboard dlq: import on Kafka needs --queue TOPIC (the DLQ topic)\n");
        status = EX_USAGE_;
        goto out;
    }
    if (c.verb == V_IMPORT && !c.queue) {
        /* The name the backend resolved from the config. */
        const char *q = sb__config_str(cfg, "transport.amqp.queue");
        static char qbuf[512];
        snprintf(qbuf, sizeof qbuf, "%s.dlq", q && *q ? q : "switchboard");
        c.queue = qbuf;
    }
    c.tty = isatty(2) != 0;
    c.start_us = mono_us();
    if (c.verb != V_IMPORT)
        c.ops->count(c.b, &c.total);
    status = c.verb == V_IMPORT ? import(&c) : c.verb == V_REPLAY ? replay(&c) : scan(&c);
    c.ops->close(c.b);
    c.b = NULL;

    static const char *const done_word[] = {"counted",  "listed",   "shown", "exported",
                                            "imported", "replayed", "purged"};
    if (c.verb == V_STATS || c.verb == V_LIST || c.verb == V_SHOW)
        fprintf(stderr, "switchboard dlq %s: %llu scanned, %llu selected\n", verb,
                (unsigned long long)c.seen, (unsigned long long)c.selected);
    else
        fprintf(stderr,
                "switchboard dlq %s: %llu scanned, %llu selected, %llu %s%s, %llu failed%s\n", verb,
                (unsigned long long)c.seen, (unsigned long long)c.selected,
                (unsigned long long)c.moved, c.dry_run ? "would be " : "", done_word[c.verb],
                (unsigned long long)c.failed, c.dry_run ? " (dry run: nothing moved)" : "");
    if (c.refused)
        fprintf(stderr, "switchboard dlq %s: %llu refused (max replays reached; --force)\n", verb,
                (unsigned long long)c.refused);
    if (c.failed || c.refused) {
        fprintf(stderr, "switchboard dlq %s: not moved:", verb);
        for (size_t i = 0; i < c.n_failed_ids; i++)
            fprintf(stderr, " %s", c.failed_ids[i]);
        fprintf(stderr, "%s\n", c.failed + c.refused > c.n_failed_ids ? " ..." : "");
        if (status == EX_OK_)
            status = EX_FAIL;
    }
out:
    if (c.b)
        c.ops->close(c.b);
    sb__config_destroy(cfg);
    sb__dlq_filter_destroy(c.filter);
    return status;
}
