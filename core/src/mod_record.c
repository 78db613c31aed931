/* mod_record.c: the built-in `record` module: a JSON-lines ledger of handled events.
 *
 * Handler "record", default binding "#". For each event it appends one line
 *   {"id":..,"type":..,"handler":..,"attempt":N,"time":"<RFC 3339 UTC now>"[, fields...]}
 * to the file `path` (required). Tests and the demo use that file as ground truth, so
 * correctness beats speed: the file is opened O_APPEND and every line goes out in a single
 * write(2), which keeps lines whole when several consumer processes append to the same
 * ledger; nothing is buffered between events (no stdio), and `fsync: true` adds an
 * fdatasync(2) per line. `fields: [A, B]` copies those top-level payload fields (null when
 * absent). A failed write is a retryable failure of the event.
 *
 * `recover_lines: N` makes the ledger its own inbox across a crash: at start-up the last N
 * lines are read back, and an event whose (handler, id) is among them is not appended again
 * (it succeeds, logged at info). That closes the one gap an idempotency store outside the
 * effect's own storage leaves open: a process killed after appending a line but before the
 * store marked the event done runs it again once its lease expires, in the next process.
 * N should cover the messages in flight (prefetch, or the Kafka in-flight cap). Only lines
 * written before this start are consulted, so duplicates within one process are still the
 * idempotency store's to skip. It does not rotate or lock the ledger, and records only
 * events that reached this handler. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "builtin_modules.h"
#include "datetime.h"

#define MOD         "record"
#define LINE_BUF    1024     /* most lines fit on the stack; longer ones are allocated */
#define RECOVER_MAX 10000000 /* lines read back at most */
#define READ_CHUNK  65536

typedef struct record_inst {
    int fd;
    bool fsync;
    char *path;
    char **fields;
    size_t n_fields;
    json_t *recovered; /* "<handler>\n<id>" -> true: lines of earlier processes; or NULL */
} record_inst_t;

static const char *const reserved_keys[] = {"id", "type", "handler", "attempt", "time", NULL};

static void record_shutdown(void *ud)
{
    record_inst_t *in = ud;
    if (!in)
        return;
    if (in->fd >= 0)
        close(in->fd);
    sb__mod_fields_free(in->fields, in->n_fields);
    json_decref(in->recovered);
    sb_free(in->path);
    sb_free(in);
}

/* The set key of (handler, id) into buf; false when it does not fit. */
static bool recover_key(char *buf, size_t size, const char *handler, const char *id)
{
    int n = snprintf(buf, size, "%s\n%s", handler ? handler : "", id ? id : "");
    return n >= 0 && (size_t)n < size;
}

/* Reads the last `lines` lines of the ledger into in->recovered. Lines that do not parse
 * (a fragment torn by a kill) are passed over: their events were not recorded whole. */
static int recover(record_inst_t *in, size_t lines, char *errstr, size_t errstr_size)
{
    int rc = SB_EIO;
    char *buf = NULL;
    int fd = open(in->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto io;
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0)
        goto io;
    /* Back from the end, a chunk at a time, to the start of the lines-th last line. */
    off_t start = size;
    size_t newlines = 0;
    char chunk[READ_CHUNK];
    while (start > 0) {
        size_t len = start > READ_CHUNK ? READ_CHUNK : (size_t)start;
        if (pread(fd, chunk, len, start - (off_t)len) != (ssize_t)len)
            goto io;
        size_t i = len;
        while (i > 0 && newlines < lines) {
            if (chunk[--i] == '\n' && start - (off_t)len + (off_t)i != size - 1)
                newlines++;
        }
        if (newlines == lines) { /* the first line wanted starts after that newline */
            start = start - (off_t)len + (off_t)i + 1;
            break;
        }
        start -= (off_t)len;
    }
    size_t total = (size_t)(size - start);
    if (!(buf = sb_malloc(total + 1)) || !(in->recovered = json_object())) {
        rc = SB_ENOMEM;
        sb__mod_err(errstr, errstr_size, MOD ": out of memory");
        goto out;
    }
    if (total && pread(fd, buf, total, start) != (ssize_t)total)
        goto io;
    buf[total] = '\0';
    for (char *line = buf, *end; line < buf + total; line = end) { /* NUL bytes included */
        end = memchr(line, '\n', (size_t)(buf + total - line));
        end = end ? end + 1 : buf + total;
        json_t *j = json_loadb(line, (size_t)(end - line), 0, NULL);
        const char *id = j ? json_string_value(json_object_get(j, "id")) : NULL;
        const char *handler = j ? json_string_value(json_object_get(j, "handler")) : NULL;
        char key[LINE_BUF];
        if (id && recover_key(key, sizeof key, handler, id) &&
            json_object_set_new(in->recovered, key, json_true()) != 0) {
            json_decref(j);
            rc = SB_ENOMEM;
            sb__mod_err(errstr, errstr_size, MOD ": out of memory");
            goto out;
        }
        json_decref(j);
    }
    rc = SB_EOK;
    goto out;
io:
    sb__mod_err(errstr, errstr_size, MOD ": cannot read back %s: %s", in->path, strerror(errno));
out:
    sb_free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* The configuration alone (config check, and first thing in init); the file is not touched.
 * *fields: the parsed fields, when wanted (free with sb__mod_fields_free). */
static int parse_config(json_t *config, char ***fields, size_t *n_fields, char *errstr,
                        size_t errstr_size)
{
    static const char *const keys[] = {"path", "fsync", "fields", "recover_lines", NULL};
    int rc = sb__mod_check_keys(MOD, config, keys, errstr, errstr_size);
    if (rc != SB_EOK)
        return rc;
    const char *path = config ? json_string_value(json_object_get(config, "path")) : NULL;
    if (!path || !*path) {
        sb__mod_err(errstr, errstr_size,
                    MOD ": config.path is required (the file to append the ledger to)");
        return SB_ECONFIG;
    }
    json_t *fs = json_object_get(config, "fsync");
    if (fs && !json_is_boolean(fs)) {
        sb__mod_err(errstr, errstr_size, MOD ": fsync must be true or false");
        return SB_ECONFIG;
    }
    json_t *rl = json_object_get(config, "recover_lines");
    if (rl && (!json_is_integer(rl) || json_integer_value(rl) < 0 ||
               json_integer_value(rl) > RECOVER_MAX)) {
        sb__mod_err(errstr, errstr_size, MOD ": recover_lines must be an integer 0..%d",
                    RECOVER_MAX);
        return SB_ECONFIG;
    }
    char **f = NULL;
    size_t nf = 0;
    rc = sb__mod_fields(MOD, json_object_get(config, "fields"), &f, &nf, errstr, errstr_size);
    if (rc != SB_EOK)
        return rc;
    for (size_t i = 0; i < nf && rc == SB_EOK; i++) {
        for (const char *const *k = reserved_keys; *k; k++) {
            if (!strcmp(*k, f[i])) {
                sb__mod_err(errstr, errstr_size,
                            MOD ": fields: \"%s\" clashes with the ledger's own key", *k);
                rc = SB_ECONFIG;
                break;
            }
        }
    }
    if (rc == SB_EOK && fields) {
        *fields = f;
        *n_fields = nf;
    } else {
        sb__mod_fields_free(f, nf);
    }
    return rc;
}

static int record_check(json_t *config, char *errstr, size_t errstr_size)
{
    return parse_config(config, NULL, NULL, errstr, errstr_size);
}

static int record_init(json_t *config, void **ud, char *errstr, size_t errstr_size)
{
    record_inst_t *in = sb_calloc(1, sizeof *in);
    if (!in) {
        sb__mod_err(errstr, errstr_size, MOD ": out of memory");
        return SB_ENOMEM;
    }
    in->fd = -1;
    int rc = parse_config(config, &in->fields, &in->n_fields, errstr, errstr_size);
    if (rc != SB_EOK)
        goto err;
    const char *path = json_string_value(json_object_get(config, "path"));
    json_t *rl = json_object_get(config, "recover_lines");
    in->fsync = json_is_true(json_object_get(config, "fsync"));
    if (!(in->path = sb_strdup(path))) {
        sb__mod_err(errstr, errstr_size, MOD ": out of memory");
        rc = SB_ENOMEM;
        goto err;
    }
    in->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (in->fd < 0) {
        sb__mod_err(errstr, errstr_size, MOD ": cannot open %s: %s", path, strerror(errno));
        rc = SB_EIO;
        goto err;
    }
    /* A process killed in the middle of write(2) can leave a torn last line; end it, so
     * the next line starts on its own and every whole line stays parseable. */
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    if (rfd >= 0) {
        char last;
        off_t size = lseek(rfd, 0, SEEK_END);
        if (size > 0 && pread(rfd, &last, 1, size - 1) == 1 && last != '\n' &&
            write(in->fd, "\n", 1) != 1) {
            sb__mod_err(errstr, errstr_size, MOD ": cannot write to %s: %s", path, strerror(errno));
            close(rfd);
            rc = SB_EIO;
            goto err;
        }
        close(rfd);
    }
    if (rl && json_integer_value(rl) > 0 &&
        (rc = recover(in, (size_t)json_integer_value(rl), errstr, errstr_size)) != SB_EOK)
        goto err;
    *ud = in;
    return SB_EOK;
err:
    record_shutdown(in);
    return rc;
}

/* Builds the line's object. NULL when out of memory. */
static json_t *build_line(const record_inst_t *in, sb_context_t *ctx, const sb_event_t *ev)
{
    char now[32];
    sb__datetime_format(sb__datetime_now_us(), now);
    json_t *o = json_pack("{s:s, s:s, s:s?, s:I, s:s}", "id", sb_event_id(ev), "type",
                          sb_event_type(ev), "handler", sb_ctx_handler(ctx), "attempt",
                          (json_int_t)sb_event_attempt(ev), "time", now);
    if (!o || !in->n_fields)
        return o;
    const json_t *body = sb_event_json(ev);
    for (size_t i = 0; i < in->n_fields; i++) {
        const json_t *v = json_is_object(body) ? json_object_get(body, in->fields[i]) : NULL;
        /* A copy: the event's tree is borrowed and may be read by other handlers at once. */
        json_t *copy = v ? json_deep_copy(v) : json_null();
        if (!copy || json_object_set_new(o, in->fields[i], copy) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* Writes all of buf with one write(2) (retried only on EINTR or a short write). */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static sb_outcome_t record_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    const record_inst_t *in = ud;
    if (!in) {
        sb_ctx_reason(ctx, MOD ": not initialised");
        return SB_RETRY;
    }
    char key[LINE_BUF];
    if (in->recovered && recover_key(key, sizeof key, sb_ctx_handler(ctx), sb_event_id(ev)) &&
        json_object_get(in->recovered, key)) {
        sb_log(MOD, SB_LOG_INFO,
               "%s: event %s is in the ledger already (written before this start, before "
               "its completion was stored): not appended again",
               sb_ctx_handler(ctx), sb_event_id(ev));
        return SB_OK;
    }
    json_t *o = build_line(in, ctx, ev);
    if (!o) {
        sb_ctx_reason(ctx, MOD ": out of memory");
        return SB_RETRY;
    }
    char stack[LINE_BUF];
    char *buf = stack;
    size_t len = json_dumpb(o, stack, sizeof stack - 1, JSON_COMPACT);
    if (len > sizeof stack - 1) {
        buf = sb_malloc(len + 1);
        if (buf)
            len = json_dumpb(o, buf, len, JSON_COMPACT);
    }
    json_decref(o);
    if (!buf || len == 0) {
        if (buf != stack)
            sb_free(buf);
        sb_ctx_reason(ctx, MOD ": cannot encode the ledger line");
        return SB_RETRY;
    }
    buf[len++] = '\n';
    int rc = write_all(in->fd, buf, len);
    int saved = errno;
    if (buf != stack)
        sb_free(buf);
    if (rc == 0 && in->fsync && fdatasync(in->fd) != 0) {
        rc = -1;
        saved = errno;
    }
    if (rc != 0) {
        char msg[128]; /* strerror_r: blocking handlers run on worker threads */
        if (strerror_r(saved, msg, sizeof msg) != 0)
            snprintf(msg, sizeof msg, "error %d", saved);
        sb_ctx_reason(ctx, MOD ": cannot append to %s: %s", in->path, msg);
        return SB_RETRY;
    }
    return SB_OK;
}

static const sb_handler_def_t record_handlers[] = {
    {.name = "record", .pattern = "#", .fn = record_event},
    {0},
};

const sb_module_t sb__mod_record = {
    SB_MODULE_HEADER,      .name = "record",
    .version = "1.0.0",    .handlers = record_handlers,
    .init = record_init,   .shutdown = record_shutdown,
    .check = record_check,
};
