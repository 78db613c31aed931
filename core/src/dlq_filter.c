/* dlq_filter.c: selecting dead letters for `switchboard dlq` and replay jobs; `dlq stats`.
 *
 * Design: every option is parsed and checked once, when it is set (the type patterns go into
 * a topic router with a single target, the error regex is compiled with regcomp), so that
 * matching a record costs a few header lookups and no allocation. The command line and the
 * JSON body of POST /replay share one setter, so both accept and refuse the same values.
 * Stats keep small arrays of (name, count): a DLQ holds few distinct reasons, types and
 * handlers, and the table is sorted only when printed.
 *
 * Not here: counting the limit (the caller's loop), reading records, printing records. */
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "dlq_filter.h"
#include "errf.h"
#include "jscan.h"
#include "router.h"
#include "units.h"

typedef struct strlist {
    char **v;
    size_t n;
} strlist_t;

#define DEFAULT_TYPE_FIELD "EventType" /* transport.kafka.event_type_field's default */
#define TYPE_BUF           1025        /* envelope.c accepts types of up to 1024 bytes */

struct sb__dlq_filter {
    int64_t now_us;
    sb__router_t *types; /* NULL: no type option */
    char *type_field;    /* NULL: no body member */
    strlist_t reasons, handlers;
    bool has_error;
    regex_t error_re;
    bool has_since, has_until;
    int64_t since_us, until_us;
    char *id;
    size_t id_len;
    uint64_t limit;
    bool has_max_replays, force;
    uint64_t max_replays;
};

static const char type_target; /* the router's one target */

int sb__dlq_filter_new(int64_t now_us, sb__dlq_filter_t **out)
{
    sb__dlq_filter_t *f = sb_calloc(1, sizeof *f);
    if (!f)
        return SB_ENOMEM;
    f->now_us = now_us;
    if (!(f->type_field = sb_strdup(DEFAULT_TYPE_FIELD))) {
        sb_free(f);
        return SB_ENOMEM;
    }
    *out = f;
    return SB_EOK;
}

/* *slot = a copy of field (NULL for NULL or ""). */
static int set_field(char **slot, const char *field)
{
    char *copy = NULL;
    if (field && *field && !(copy = sb_strdup(field)))
        return SB_ENOMEM;
    sb_free(*slot);
    *slot = copy;
    return SB_EOK;
}

int sb__dlq_filter_set_type_field(sb__dlq_filter_t *f, const char *field)
{
    return set_field(&f->type_field, field);
}

static void strlist_free(strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        sb_free(l->v[i]);
    sb_free(l->v);
    l->v = NULL;
    l->n = 0;
}

void sb__dlq_filter_destroy(sb__dlq_filter_t *f)
{
    if (!f)
        return;
    sb__router_destroy(f->types);
    strlist_free(&f->reasons);
    strlist_free(&f->handlers);
    if (f->has_error)
        regfree(&f->error_re);
    sb_free(f->id);
    sb_free(f->type_field);
    sb_free(f);
}

/* Appends the non-empty items of a comma-separated list (blanks around items trimmed).
 * All or nothing. */
static int strlist_add_csv(strlist_t *l, const char *opt, const char *csv, char *errstr,
                           size_t errstr_size)
{
    size_t items = 1;
    for (const char *p = csv; *p; p++)
        items += *p == ',';
    char **v = sb_realloc(l->v, (l->n + items) * sizeof *v);
    if (!v)
        return sb__errf(errstr, errstr_size, SB_ENOMEM, "%s: out of memory", opt);
    l->v = v;
    size_t n = l->n;
    const char *p = csv;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            char *s = sb_strndup(a, (size_t)(b - a));
            if (!s) {
                while (n > l->n)
                    sb_free(v[--n]);
                return sb__errf(errstr, errstr_size, SB_ENOMEM, "%s: out of memory", opt);
            }
            v[n++] = s;
        }
        if (!*end)
            break;
        p = end + 1;
    }
    if (n == l->n)
        return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: empty list \"%s\"", opt, csv);
    l->n = n;
    return SB_EOK;
}

/* RFC 3339 (offset optional, UTC), a bare date, or a duration before now. */
static int parse_time(const sb__dlq_filter_t *f, const char *opt, const char *s, int64_t *out,
                      char *errstr, size_t errstr_size)
{
    size_t len = strlen(s);
    int64_t us;
    if (sb__datetime_parse(s, len, true, &us, NULL) == 0) {
        *out = us;
        return SB_EOK;
    }
    if (len == 10 && s[4] == '-' && s[7] == '-') {
        char full[32];
        snprintf(full, sizeof full, "%sT00:00:00Z", s);
        if (sb__datetime_parse(full, strlen(full), false, &us, NULL) == 0) {
            *out = us;
            return SB_EOK;
        }
    }
    uint64_t ms;
    if (len && s[0] >= '0' && s[0] <= '9' && sb__parse_duration_ms(s, &ms, NULL, 0) == SB_EOK) {
        if (ms > (uint64_t)INT64_MAX / 1000 || f->now_us < INT64_MIN + (int64_t)(ms * 1000))
            return sb__errf(errstr, errstr_size, SB_ERANGE, "%s: duration \"%s\" is too large", opt,
                            s);
        *out = f->now_us - (int64_t)(ms * 1000);
        return SB_EOK;
    }
    return sb__errf(errstr, errstr_size, SB_EPARSE,
                    "%s: invalid time \"%s\": expected RFC 3339 (2026-03-01T12:00:00Z), a date "
                    "(2026-03-01) or a duration ago (30m, 2h, 7d)",
                    opt, s);
}

static int parse_count(const char *opt, const char *s, uint64_t min, uint64_t *out, char *errstr,
                       size_t errstr_size)
{
    uint64_t acc = 0;
    const char *p = s;
    if (!*p)
        goto bad;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            goto bad;
        unsigned d = (unsigned)(*p - '0');
        if (acc > (UINT64_MAX - d) / 10)
            return sb__errf(errstr, errstr_size, SB_ERANGE, "%s: \"%s\" is too large", opt, s);
        acc = acc * 10 + d;
    }
    if (acc < min)
        goto bad;
    *out = acc;
    return SB_EOK;
bad:
    return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: expected an integer >= %llu, got \"%s\"",
                    opt, (unsigned long long)min, s);
}

static bool known_option(const char *name)
{
    static const char *const known[] = {"type",        "reason",      "error", "handler",
                                        "since",       "until",       "id",    "limit",
                                        "max-replays", "max_replays", "force"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(name, known[i]) == 0)
            return true;
    return false;
}

static int unknown_option(const char *opt, char *errstr, size_t errstr_size)
{
    return sb__errf(errstr, errstr_size, SB_EINVAL,
                    "%s: unknown filter option (type, reason, error, handler, since, until, "
                    "id, limit, max-replays, force)",
                    opt);
}

static int set_option(sb__dlq_filter_t *f, const char *name, const char *opt, const char *value,
                      char *errstr, size_t errstr_size)
{
    int rc;
    if (strcmp(name, "force") == 0) {
        if (!value || strcmp(value, "true") == 0)
            f->force = true;
        else if (strcmp(value, "false") == 0)
            f->force = false;
        else
            return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: expected true or false", opt);
        return SB_EOK;
    }
    if (!known_option(name))
        return unknown_option(opt, errstr, errstr_size);
    if (!value)
        return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: a value is required", opt);

    if (strcmp(name, "type") == 0) {
        sb__router_t *r = f->types;
        if (!r && sb__router_new(&r) != SB_EOK)
            return sb__errf(errstr, errstr_size, SB_ENOMEM, "%s: out of memory", opt);
        char why[256] = "";
        rc = sb__router_add(r, value, (void *)(uintptr_t)&type_target, why, sizeof why);
        if (rc != SB_EOK) {
            if (r != f->types)
                sb__router_destroy(r);
            return sb__errf(errstr, errstr_size, rc, "%s: invalid pattern \"%s\": %s", opt, value,
                            why);
        }
        f->types = r;
        return SB_EOK;
    }
    if (strcmp(name, "reason") == 0)
        return strlist_add_csv(&f->reasons, opt, value, errstr, errstr_size);
    if (strcmp(name, "handler") == 0)
        return strlist_add_csv(&f->handlers, opt, value, errstr, errstr_size);
    if (strcmp(name, "error") == 0) {
        regex_t re;
        int erc = regcomp(&re, value, REG_EXTENDED | REG_NOSUB);
        if (erc != 0) {
            char why[256];
            regerror(erc, &re, why, sizeof why);
            return sb__errf(errstr, errstr_size, SB_EPARSE,
                            "%s: invalid regular expression "
                            "\"%s\": %s",
                            opt, value, why);
        }
        if (f->has_error)
            regfree(&f->error_re);
        f->error_re = re;
        f->has_error = true;
        return SB_EOK;
    }
    if (strcmp(name, "since") == 0 || strcmp(name, "until") == 0) {
        int64_t t = 0;
        rc = parse_time(f, opt, value, &t, errstr, errstr_size);
        if (rc != SB_EOK)
            return rc;
        if (name[0] == 's') {
            f->since_us = t;
            f->has_since = true;
        } else {
            f->until_us = t;
            f->has_until = true;
        }
        return SB_EOK;
    }
    if (strcmp(name, "id") == 0) {
        if (!*value)
            return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: empty id", opt);
        char *id = sb_strdup(value);
        if (!id)
            return sb__errf(errstr, errstr_size, SB_ENOMEM, "%s: out of memory", opt);
        sb_free(f->id);
        f->id = id;
        f->id_len = strlen(id);
        return SB_EOK;
    }
    if (strcmp(name, "limit") == 0)
        return parse_count(opt, value, 1, &f->limit, errstr, errstr_size);
    /* max-replays */
    rc = parse_count(opt, value, 0, &f->max_replays, errstr, errstr_size);
    if (rc == SB_EOK)
        f->has_max_replays = true;
    return rc;
}

int sb__dlq_filter_set(sb__dlq_filter_t *f, const char *name, const char *value, char *errstr,
                       size_t errstr_size)
{
    char opt[64];
    snprintf(opt, sizeof opt, "--%.60s", name ? name : "");
    if (!f || !name)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "no filter option given");
    return set_option(f, name, opt, value, errstr, errstr_size);
}

static int json_text_option(sb__dlq_filter_t *f, const char *key, const char *opt, const json_t *v,
                            char *errstr, size_t errstr_size)
{
    char num[32];
    if (!known_option(key)) /* whatever its value: the name is what is wrong */
        return unknown_option(opt, errstr, errstr_size);
    if (strcmp(key, "limit") == 0 || strcmp(key, "max_replays") == 0 ||
        strcmp(key, "max-replays") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: expected an integer >= %d", opt,
                            key[0] == 'l' ? 1 : 0);
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        return set_option(f, key, opt, num, errstr, errstr_size);
    }
    if (strcmp(key, "force") == 0) {
        if (!json_is_boolean(v))
            return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: expected true or false", opt);
        return set_option(f, key, opt, json_is_true(v) ? "true" : "false", errstr, errstr_size);
    }
    bool list_ok =
        strcmp(key, "type") == 0 || strcmp(key, "reason") == 0 || strcmp(key, "handler") == 0;
    if (json_is_array(v) && list_ok) {
        if (json_array_size(v) == 0)
            return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: empty list", opt);
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e))
                return sb__errf(errstr, errstr_size, SB_EPARSE, "%s[%zu]: expected a string", opt,
                                i);
            int rc = set_option(f, key, opt, json_string_value(e), errstr, errstr_size);
            if (rc != SB_EOK)
                return rc;
        }
        return SB_EOK;
    }
    if (!json_is_string(v))
        return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: expected a string%s", opt,
                        list_ok ? " or an array of strings" : "");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return sb__errf(errstr, errstr_size, SB_EPARSE, "%s: contains a NUL character", opt);
    return set_option(f, key, opt, json_string_value(v), errstr, errstr_size);
}

int sb__dlq_filter_from_json(sb__dlq_filter_t *f, const json_t *obj,
                             const char *const *also_allowed, char *errstr, size_t errstr_size)
{
    if (!f || !json_is_object(obj))
        return sb__errf(errstr, errstr_size, SB_EPARSE, "the filter must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)obj, key, v)
    {
        bool skip = false;
        for (size_t i = 0; also_allowed && also_allowed[i] && !skip; i++)
            skip = strcmp(key, also_allowed[i]) == 0;
        if (skip)
            continue;
        char opt[80];
        snprintf(opt, sizeof opt, "\"%.60s\"", key);
        int rc = json_text_option(f, key, opt, v, errstr, errstr_size);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

static bool in_list(const strlist_t *l, const char *s)
{
    if (!s)
        return false;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

const char *sb__dlq_event_type(const sb__dlq_record_t *r, const char *type_field, size_t *len,
                               char *buf, size_t size)
{
    size_t n = 0;
    const char *s = sb__dlq_record_event_type(r, &n);
    if ((s && n) || sb__dlq_record_transport(r) == SB__DLQ_TX_AMQP) {
        if (s && len)
            *len = n;
        return s;
    }
    /* A Kafka event's type often lives only in its body. envelope.c's order after the
     * event-type header: the body member, then the topic; an absent, null or empty member
     * falls through, any other non-string one made the event undecodable. */
    s = NULL;
    size_t blen = 0;
    const char *body = sb__dlq_record_get(r, SB__DLQ_BODY, &blen);
    sb__jindex_t idx;
    sb__jtype_t root = SB__JT_NONE;
    if (sb__jscan(body, blen, SB__JSCAN_MAX_DEPTH, &idx, &root, NULL, 0) != SB_EOK ||
        root != SB__JT_OBJECT)
        return NULL;
    const sb__jfield_t *m =
        type_field ? sb__jindex_find(&idx, type_field, strlen(type_field)) : NULL;
    if (m && m->type == SB__JT_STRING && m->val_len > 0) {
        if (!m->val_esc) {
            s = m->val;
            n = m->val_len;
        } else {
            if (!buf || m->val_len > size)
                return NULL;
            n = sb__junescape(m->val, m->val_len, buf);
            s = buf;
        }
    } else if (m && m->type != SB__JT_NULL && m->type != SB__JT_STRING) {
        return NULL;
    }
    if (!s || !n)
        s = sb__dlq_record_header_str(r, SB__DLQ_H_ORIG_TOPIC, &n);
    if (!s || !n)
        return NULL;
    if (len)
        *len = n;
    return s;
}

const char *sb__dlq_filter_event_type(const sb__dlq_filter_t *f, const sb__dlq_record_t *r,
                                      size_t *len, char *buf, size_t size)
{
    return sb__dlq_event_type(r, f->type_field, len, buf, size);
}

bool sb__dlq_filter_match(const sb__dlq_filter_t *f, const sb__dlq_record_t *r)
{
    if (f->types) {
        size_t len = 0, n = 0;
        char buf[TYPE_BUF];
        const char *type = sb__dlq_event_type(r, f->type_field, &len, buf, sizeof buf);
        if (!type || sb__router_match(f->types, type, len, NULL, 0, &n) == SB_ETOOBIG || n == 0)
            return false;
    }
    if (f->reasons.n && !in_list(&f->reasons, sb__dlq_record_reason(r)))
        return false;
    if (f->handlers.n && !in_list(&f->handlers, sb__dlq_record_handler(r)))
        return false;
    if (f->has_error) {
        const char *e = sb__dlq_record_error(r);
        if (!e || regexec(&f->error_re, e, 0, NULL, 0) != 0)
            return false;
    }
    if (f->has_since || f->has_until) {
        int64_t at;
        if (!sb__dlq_record_failed_at_us(r, &at))
            return false;
        if (f->has_since && at < f->since_us)
            return false;
        if (f->has_until && at >= f->until_us)
            return false;
    }
    if (f->id) {
        char buf[512];
        size_t len = 0;
        const char *id = sb__dlq_record_event_id(r, &len, buf, sizeof buf);
        if (!id || len != f->id_len || memcmp(id, f->id, len) != 0)
            return false;
    }
    return true;
}

bool sb__dlq_filter_replay_allowed(const sb__dlq_filter_t *f, const sb__dlq_record_t *r)
{
    return f->force || !f->has_max_replays || sb__dlq_record_replay_count(r) < f->max_replays;
}

uint64_t sb__dlq_filter_limit(const sb__dlq_filter_t *f)
{
    return f->limit;
}

bool sb__dlq_filter_since(const sb__dlq_filter_t *f, int64_t *us)
{
    if (f->has_since && us)
        *us = f->since_us;
    return f->has_since;
}

bool sb__dlq_filter_selects(const sb__dlq_filter_t *f)
{
    return f->types || f->reasons.n || f->handlers.n || f->has_error || f->has_since ||
           f->has_until || f->id;
}

/* ---- stats ------------------------------------------------------------------------------- */

typedef struct count {
    char *name;
    uint64_t n;
} count_t;

typedef struct counts {
    count_t *v;
    size_t n, cap;
} counts_t;

enum { DIM_REASON, DIM_TYPE, DIM_HANDLER, N_DIMS };

struct sb__dlq_stats {
    char *type_field; /* NULL: no body member */
    uint64_t total, without_time;
    bool has_time;
    int64_t oldest_us, newest_us;
    counts_t dims[N_DIMS];
};

static const char *const dim_json[N_DIMS] = {"by_reason", "by_type", "by_handler"};
static const char *const dim_title[N_DIMS] = {"REASON", "EVENT TYPE", "HANDLER"};

int sb__dlq_stats_new(sb__dlq_stats_t **out)
{
    sb__dlq_stats_t *s = sb_calloc(1, sizeof *s);
    if (!s)
        return SB_ENOMEM;
    if (!(s->type_field = sb_strdup(DEFAULT_TYPE_FIELD))) {
        sb_free(s);
        return SB_ENOMEM;
    }
    *out = s;
    return SB_EOK;
}

int sb__dlq_stats_set_type_field(sb__dlq_stats_t *s, const char *field)
{
    return set_field(&s->type_field, field);
}

void sb__dlq_stats_destroy(sb__dlq_stats_t *s)
{
    if (!s)
        return;
    for (int d = 0; d < N_DIMS; d++) {
        for (size_t i = 0; i < s->dims[d].n; i++)
            sb_free(s->dims[d].v[i].name);
        sb_free(s->dims[d].v);
    }
    sb_free(s->type_field);
    sb_free(s);
}

/* A copy of name[0..len) that is valid UTF-8 (offending bytes become '?'). */
static char *clean_name(const char *name, size_t len)
{
    if (!name) {
        name = "(none)";
        len = 6;
    }
    char *c = sb_malloc(len + 1);
    if (!c)
        return NULL;
    memcpy(c, name, len);
    c[len] = '\0';
    size_t i = 0;
    while (i < len) {
        /* Find the longest valid prefix length of one character. */
        size_t k = 1;
        while (k <= 4 && i + k <= len && !sb__dlq_utf8_valid(c + i, k))
            k++;
        if (k > 4 || i + k > len || c[i] == '\0') {
            c[i] = '?';
            i++;
        } else {
            i += k;
        }
    }
    return c;
}

/* Finds name in d, or reserves a slot for it: *slot gets its index; *is_new whether the
 * caller must fill it. */
static int counts_slot(counts_t *d, const char *name, size_t *slot, bool *is_new)
{
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->v[i].name, name) == 0) {
            *slot = i;
            *is_new = false;
            return SB_EOK;
        }
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        count_t *v = sb_realloc(d->v, cap * sizeof *v);
        if (!v)
            return SB_ENOMEM;
        d->v = v;
        d->cap = cap;
    }
    *slot = d->n;
    *is_new = true;
    return SB_EOK;
}

int sb__dlq_stats_add(sb__dlq_stats_t *s, const sb__dlq_record_t *r)
{
    const char *raw[N_DIMS];
    size_t raw_len[N_DIMS] = {0};
    raw[DIM_REASON] = sb__dlq_record_header_str(r, SB__DLQ_H_REASON, &raw_len[DIM_REASON]);
    char tbuf[TYPE_BUF];
    raw[DIM_TYPE] = sb__dlq_event_type(r, s->type_field, &raw_len[DIM_TYPE], tbuf, sizeof tbuf);
    raw[DIM_HANDLER] = sb__dlq_record_header_str(r, SB__DLQ_H_HANDLER, &raw_len[DIM_HANDLER]);
    char *names[N_DIMS] = {NULL};
    size_t slot[N_DIMS];
    bool is_new[N_DIMS];
    for (int d = 0; d < N_DIMS; d++) {
        names[d] = clean_name(raw[d], raw_len[d]);
        if (!names[d] || counts_slot(&s->dims[d], names[d], &slot[d], &is_new[d]) != SB_EOK)
            goto nomem;
    }
    /* Nothing can fail from here on. */
    for (int d = 0; d < N_DIMS; d++) {
        counts_t *c = &s->dims[d];
        if (is_new[d]) {
            c->v[c->n].name = names[d];
            c->v[c->n].n = 0;
            c->n++;
            names[d] = NULL;
        }
        c->v[slot[d]].n++;
        sb_free(names[d]);
    }
    s->total++;
    int64_t at;
    if (sb__dlq_record_failed_at_us(r, &at)) {
        if (!s->has_time || at < s->oldest_us)
            s->oldest_us = at;
        if (!s->has_time || at > s->newest_us)
            s->newest_us = at;
        s->has_time = true;
    } else {
        s->without_time++;
    }
    return SB_EOK;
nomem:
    for (int d = 0; d < N_DIMS; d++)
        sb_free(names[d]);
    return SB_ENOMEM;
}

uint64_t sb__dlq_stats_total(const sb__dlq_stats_t *s)
{
    return s->total;
}

static int by_count(const void *a, const void *b)
{
    const count_t *x = *(const count_t *const *)a, *y = *(const count_t *const *)b;
    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Sorted views of each dimension (arrays of pointers, freed by the caller). */
static const count_t **sorted(const counts_t *c)
{
    const count_t **v = sb_malloc((c->n ? c->n : 1) * sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < c->n; i++)
        v[i] = &c->v[i];
    qsort(v, c->n, sizeof *v, by_count);
    return v;
}

typedef struct out {
    char *p;
    size_t len, cap;
    bool oom;
} out_t;

static void outf(out_t *o, const char *fmt, ...) SB_PRINTF(2, 3);

static void outf(out_t *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if (o->p && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap ? o->cap : 256;
        while (cap <= o->len + (size_t)n)
            cap *= 2;
        char *p = sb_realloc(o->p, cap);
        if (!p) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

static int out_finish(out_t *o, char **res)
{
    if (o->oom || !o->p) {
        sb_free(o->p);
        return SB_ENOMEM;
    }
    *res = o->p;
    return SB_EOK;
}

/* Display width in characters (UTF-8 continuation bytes do not count). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static void out_name(out_t *o, const char *s, size_t pad_to)
{
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        outf(o, "%c", c < 0x20 || c == 0x7f ? '?' : (char)c);
    }
    for (size_t w = width(s); w < pad_to; w++)
        outf(o, " ");
}

int sb__dlq_stats_format_table(const sb__dlq_stats_t *s, char **res)
{
    out_t o = {0};
    char t[32];
    outf(&o, "total     %llu\n", (unsigned long long)s->total);
    if (s->has_time) {
        sb__datetime_format(s->oldest_us, t);
        outf(&o, "oldest    %s\n", t);
        sb__datetime_format(s->newest_us, t);
        outf(&o, "newest    %s\n", t);
    }
    if (s->without_time)
        outf(&o, "no time   %llu (without a valid x-sb-failed-at)\n",
             (unsigned long long)s->without_time);
    for (int d = 0; d < N_DIMS; d++) {
        const counts_t *c = &s->dims[d];
        if (!c->n)
            continue;
        const count_t **v = sorted(c);
        if (!v) {
            o.oom = true;
            break;
        }
        size_t w = width(dim_title[d]);
        for (size_t i = 0; i < c->n; i++)
            if (width(v[i]->name) > w)
                w = width(v[i]->name);
        outf(&o, "\n");
        out_name(&o, dim_title[d], w);
        outf(&o, "  %10s\n", "COUNT");
        for (size_t i = 0; i < c->n; i++) {
            out_name(&o, v[i]->name, w);
            outf(&o, "  %10llu\n", (unsigned long long)v[i]->n);
        }
        sb_free(v);
    }
    return out_finish(&o, res);
}

static void out_jstr(out_t *o, const char *s)
{
    outf(o, "\"");
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            outf(o, "\\%c", c);
        else if (c < 0x20)
            outf(o, "\\u%04x", c);
        else
            outf(o, "%c", c);
    }
    outf(o, "\"");
}

int sb__dlq_stats_to_json(const sb__dlq_stats_t *s, char **res)
{
    out_t o = {0};
    char t[32];
    outf(&o, "{\"total\":%llu", (unsigned long long)s->total);
    if (s->has_time) {
        sb__datetime_format(s->oldest_us, t);
        outf(&o, ",\"oldest\":\"%s\"", t);
        sb__datetime_format(s->newest_us, t);
        outf(&o, ",\"newest\":\"%s\"", t);
    } else {
        outf(&o, ",\"oldest\":null,\"newest\":null");
    }
    outf(&o, ",\"without_failed_at\":%llu", (unsigned long long)s->without_time);
    for (int d = 0; d < N_DIMS; d++) {
        const counts_t *c = &s->dims[d];
        const count_t **v = sorted(c);
        if (!v) {
            o.oom = true;
            break;
        }
        outf(&o, ",\"%s\":{", dim_json[d]);
        for (size_t i = 0; i < c->n; i++) {
            if (i)
                outf(&o, ",");
            out_jstr(&o, v[i]->name);
            outf(&o, ":%llu", (unsigned long long)v[i]->n);
        }
        outf(&o, "}");
        sb_free(v);
    }
    outf(&o, "}");
    return out_finish(&o, res);
}
