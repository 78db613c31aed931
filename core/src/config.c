/* config.c: loading the configuration: environment overrides, validation and getters.
 *
 * Three passes over small trees, each simple on its own:
 *   1. the YAML text -> a "raw" jansson tree whose scalars are all strings (after ${VAR}
 *      substitution), with a side table  path -> line  (config_yaml.c);
 *   2. SWITCHBOARD_* environment variables written into the raw tree, with a side table
 *      path -> variable name, so that errors name the variable instead of file:line;
 *   3. the raw tree checked against the property table (config_schema.c) into an
 *      "effective" tree, pre-filled with every default in table order and holding typed values.
 * Printing the result is config_dump.c's alone. Scalars stay text until pass 3 so that a value
 * is parsed by the type of its key, the same way whether it came from a plain, a quoted or an
 * environment string ("0123" stays a string for a queue name). Only `any` subtrees (a module's
 * own settings) are typed by the YAML 1.2 core schema, which is why the loader remembers which
 * scalars were plain. The error helpers here serve all three passes.
 *
 * Refused on purpose: dotted keys standing for nested ones. Does not parse YAML itself, does
 * not print, does not open any file named by the configuration except the *_file secrets, and
 * checks nothing that needs the network or a module. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "config.h"
#include "config_internal.h"
#include "errf.h"
#include "units.h"

#define SOURCE_MAX (16u << 20) /* largest configuration file */
#define SECRET_MAX (64u << 10) /* largest *_file secret */
#define ENV_PREFIX "SWITCHBOARD_"

/* ---- small helpers ---------------------------------------------------------------------- */

bool sb__cfg_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static const char *kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "a mapping";
    case JSON_ARRAY:
        return "a sequence";
    case JSON_NULL:
        return "null";
    default:
        return "a scalar";
    }
}

/* ---- errors ----------------------------------------------------------------------------- */

/* Where did `cpath` come from? The nearest enclosing path that an environment variable set,
 * or that the file gave a line for. Writes "VAR", "file:line" or "file". */
static void locate(const sb__cfg_ctx_t *c, const char *cpath, char *out, size_t size)
{
    char p[SB__CFG_PATH_MAX + 1];
    snprintf(p, sizeof p, "%s", cpath ? cpath : "");
    for (;;) {
        json_t *v;
        if (c->envsrc && (v = json_object_get(c->envsrc, p)) != NULL) {
            snprintf(out, size, "%s", json_string_value(v));
            return;
        }
        if (c->lines && (v = json_object_get(c->lines, p)) != NULL) {
            snprintf(out, size, "%s:%lld", c->name, (long long)(json_integer_value(v) / 2));
            return;
        }
        size_t n = strlen(p);
        if (n == 0)
            break;
        while (n > 0 && p[n - 1] != '.' && p[n - 1] != '[')
            n--;
        if (n > 0)
            n--; /* drop the '.' or the '[' */
        p[n] = '\0';
    }
    snprintf(out, size, "%s", c->name);
}

static int vfail(sb__cfg_ctx_t *c, const char *where, const char *cpath, const char *fmt,
                 va_list ap)
{
    char msg[512];
    if (!c->errstr || !c->errsize)
        return SB_ECONFIG;
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (cpath && *cpath)
        return sb__errf(c->errstr, c->errsize, SB_ECONFIG, "%s: %s: %s", where, cpath, msg);
    return sb__errf(c->errstr, c->errsize, SB_ECONFIG, "%s: %s", where, msg);
}

static int fail(sb__cfg_ctx_t *c, const char *cpath, const char *fmt, ...) SB_PRINTF(3, 4);
static int fail(sb__cfg_ctx_t *c, const char *cpath, const char *fmt, ...)
{
    char where[SB__CFG_PATH_MAX + 64];
    locate(c, cpath, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(c, where, cpath, fmt, ap);
    va_end(ap);
    return rc;
}

int sb__cfg_fail_line(sb__cfg_ctx_t *c, size_t line, const char *cpath, const char *fmt, ...)
{
    char where[SB__CFG_PATH_MAX + 64];
    snprintf(where, sizeof where, "%s:%zu", c->name, line);
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(c, where, cpath, fmt, ap);
    va_end(ap);
    return rc;
}

static int fail_env(sb__cfg_ctx_t *c, const char *var, const char *fmt, ...) SB_PRINTF(3, 4);
static int fail_env(sb__cfg_ctx_t *c, const char *var, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(c, var, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int sb__cfg_oom(sb__cfg_ctx_t *c)
{
    return sb__errf(c->errstr, c->errsize, SB_ENOMEM, "%s: out of memory", c->name);
}

/* Edit distance, for "did you mean". Case-insensitive; long strings are not compared. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[65];
    if (la > 64 || lb > 64)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            int ca = a[i - 1], cb = b[j - 1];
            if (ca >= 'A' && ca <= 'Z')
                ca += 'a' - 'A';
            if (cb >= 'A' && cb <= 'Z')
                cb += 'a' - 'A';
            size_t best = diag + (ca != cb);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static bool close_enough(size_t d, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t longest = la > lb ? la : lb;
    return d != (size_t)-1 && d * 3 <= longest;
}

/* ---- the table, seen from the validator ------------------------------------------------- */

/* True if some table key lies below schema path `sp` (so sp is a section). */
static bool is_section(const char *sp, size_t len)
{
    size_t n;
    const sb__cfg_prop_t *t = sb__cfg_props(&n);
    for (size_t i = 0; i < n; i++)
        if (strncmp(t[i].path, sp, len) == 0 && t[i].path[len] == '.')
            return true;
    return false;
}

static int unknown_key(sb__cfg_ctx_t *c, const sb__cfg_path_t *sp, size_t parent_len,
                       const char *key, const char *cpath)
{
    size_t n;
    const sb__cfg_prop_t *t = sb__cfg_props(&n);
    char best[128] = "";
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        const char *p = t[i].path;
        if (parent_len && (strncmp(p, sp->buf, parent_len) != 0 || p[parent_len] != '.'))
            continue;
        const char *rel = parent_len ? p + parent_len + 1 : p;
        size_t seg = strcspn(rel, ".[");
        char cand[128];
        if (seg >= sizeof cand)
            continue;
        memcpy(cand, rel, seg);
        cand[seg] = '\0';
        size_t d = distance(key, cand);
        if (d < best_d) {
            best_d = d;
            snprintf(best, sizeof best, "%s", cand);
        }
        /* The key exists deeper in this section: "max_attempts" -> "retry.max_attempts". */
        const char *last = strrchr(rel, '.');
        if (last && strcmp(last + 1, key) == 0 && !strchr(rel, '[') && best_d != 0) {
            best_d = 0;
            snprintf(best, sizeof best, "%s", rel);
        }
    }
    if (strpbrk(key, ".[]"))
        return fail(c, cpath, "unknown key (dotted keys are not expanded: nest the keys)");
    if (best[0] && (best_d == 0 || close_enough(best_d, key, best)))
        return fail(c, cpath, "unknown key (did you mean \"%s\"?)", best);
    return fail(c, cpath, "unknown key");
}

/* ---- typed scalars ---------------------------------------------------------------------- */

static int parse_int(const char *s, int64_t *out)
{
    const char *p = s;
    bool neg = false;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (*p < '0' || *p > '9')
        return -1;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    if (*p)
        return -1;
    if (v > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
        return -2;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    char low[8];
    size_t n = strlen(s);
    if (n >= sizeof low)
        return -1;
    for (size_t i = 0; i <= n; i++)
        low[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 'a' - 'A') : s[i];
    for (size_t i = 0; i < 4; i++) {
        if (!strcmp(low, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcmp(low, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static void format_bound(sb__cfg_type_t type, int64_t v, char *buf, size_t size)
{
    if (type == SB__CFG_DURATION)
        sb__format_duration_ms((uint64_t)v, buf, size);
    else if (type == SB__CFG_SIZE)
        sb__format_size((uint64_t)v, buf, size);
    else
        snprintf(buf, size, "%lld", (long long)v);
}

/* Writes "TEXT is out of range (LO..HI)" into msg. */
static int range_fail(const sb__cfg_prop_t *p, const char *text, char *msg, size_t n)
{
    if (p->min < p->max) {
        char lo[48], hi[48];
        format_bound(p->type, p->min, lo, sizeof lo);
        format_bound(p->type, p->max, hi, sizeof hi);
        snprintf(msg, n, "%.64s is out of range (%s..%s)", text, lo, hi);
    } else {
        snprintf(msg, n, "%.64s is out of range", text);
    }
    return SB_ECONFIG;
}

/* Parses the text of a scalar by the type of its key. SB_ECONFIG with a message (which
 * never quotes the value of a secret: secrets are strings, and strings do not fail here). */
static int parse_scalar(const sb__cfg_prop_t *p, const char *s, json_t **out, char *msg, size_t n)
{
    char sub[256];
    *out = NULL;
    switch (p->type) {
    case SB__CFG_STRING:
        *out = json_string(s);
        break;
    case SB__CFG_ENUM: {
        size_t len = 0;
        for (const char *const *v = p->values; *v; v++) {
            if (!strcmp(*v, s)) {
                *out = json_string(s);
                return *out ? SB_EOK : SB_ENOMEM;
            }
        }
        char list[200] = "";
        for (const char *const *v = p->values; *v && len < sizeof list; v++) {
            int k = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", *v);
            if (k < 0)
                break;
            len += (size_t)k;
        }
        snprintf(msg, n, "invalid value \"%.64s\" (expected one of: %s)", s, list);
        return SB_ECONFIG;
    }
    case SB__CFG_INT: {
        int64_t v = 0;
        int r = parse_int(s, &v);
        if (r == -1) {
            snprintf(msg, n, "expected an integer, got \"%.64s\"", s);
            return SB_ECONFIG;
        }
        if (r == -2 || (p->min < p->max && (v < p->min || v > p->max)))
            return range_fail(p, s, msg, n);
        *out = json_integer(v);
        break;
    }
    case SB__CFG_BOOL: {
        bool b;
        if (parse_bool(s, &b) != 0) {
            snprintf(msg, n, "expected true or false, got \"%.64s\"", s);
            return SB_ECONFIG;
        }
        *out = json_boolean(b);
        break;
    }
    case SB__CFG_DURATION:
    case SB__CFG_SIZE: {
        uint64_t v;
        int r = p->type == SB__CFG_DURATION ? sb__parse_duration_ms(s, &v, sub, sizeof sub)
                                            : sb__parse_size(s, &v, sub, sizeof sub);
        if (r != SB_EOK) {
            snprintf(msg, n, "%s", sub);
            return SB_ECONFIG;
        }
        if (v > (uint64_t)INT64_MAX ||
            (p->min < p->max && ((int64_t)v < p->min || (int64_t)v > p->max)))
            return range_fail(p, s, msg, n);
        *out = json_integer((json_int_t)v);
        break;
    }
    default:
        snprintf(msg, n, "not a scalar key");
        return SB_ECONFIG;
    }
    return *out ? SB_EOK : SB_ENOMEM;
}

/* ---- pass 2: environment ---------------------------------------------------------------- */

static void env_name(const char *path, char *buf, size_t size)
{
    size_t n = snprintf(buf, size, "%s", ENV_PREFIX) > 0 ? strlen(buf) : 0;
    for (const char *p = path; *p && n + 1 < size; p++)
        buf[n++] = *p == '.' ? '_' : (*p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
    buf[n] = '\0';
}

/* Finds (creating empty mappings on the way) the raw mapping holding table path `tpath`'s
 * last segment, or NULL if the file has a non-mapping there (validation reports it). */
static int env_parent(sb__cfg_ctx_t *c, json_t *raw, const char *tpath, json_t **parent,
                      const char **last)
{
    json_t *node = raw;
    const char *seg = tpath;
    *parent = NULL;
    for (;;) {
        const char *dot = strchr(seg, '.');
        if (!dot)
            break;
        char key[128];
        size_t klen = (size_t)(dot - seg);
        if (klen >= sizeof key)
            return SB_EOK;
        memcpy(key, seg, klen);
        key[klen] = '\0';
        json_t *next = json_object_get(node, key);
        if (!next || json_is_null(next)) {
            next = json_object();
            if (!next || json_object_set_new(node, key, next) != 0)
                return sb__cfg_oom(c);
        } else if (!json_is_object(next)) {
            return SB_EOK;
        }
        node = next;
        seg = dot + 1;
    }
    *parent = node;
    *last = seg;
    return SB_EOK;
}

static int env_note(sb__cfg_ctx_t *c, const char *cpath, const char *var)
{
    json_t *v = json_string(var);
    if (!v || json_object_set_new(c->envsrc, cpath, v) != 0)
        return sb__cfg_oom(c);
    return SB_EOK;
}

/* Sets parent[key] = value from variable `var`, dropping the other form of a secret
 * (key vs key_file) that the file gave: the environment wins over the file. */
static int env_set(sb__cfg_ctx_t *c, json_t *parent, const char *key, const char *other,
                   const char *prefix, const char *value, const char *var)
{
    char cpath[SB__CFG_PATH_MAX + 1], opath[SB__CFG_PATH_MAX + 1];
    snprintf(cpath, sizeof cpath, "%s%s%s", prefix, *prefix ? "." : "", key);
    if (other) {
        snprintf(opath, sizeof opath, "%s%s%s", prefix, *prefix ? "." : "", other);
        json_t *o = json_object_get(c->envsrc, opath);
        if (o)
            return fail_env(c, var, "%s is also set; use one of the two", json_string_value(o));
        json_object_del(parent, other);
    }
    json_t *v = json_string(value);
    if (!v || json_object_set_new(parent, key, v) != 0)
        return sb__cfg_oom(c);
    return env_note(c, cpath, var);
}

static int env_apply_one(sb__cfg_ctx_t *c, json_t *raw, const char *var, const char *value)
{
    size_t n;
    const sb__cfg_prop_t *t = sb__cfg_props(&n);
    char name[SB__CFG_PATH_MAX + 32];
    size_t vlen = strlen(var);
    if (!sb__cfg_utf8_valid((const unsigned char *)value, strlen(value)))
        return fail_env(c, var, "value is not valid UTF-8");
    /* Exact names (and NAME_FILE for secrets) first: map keys must not shadow them. */
    for (size_t i = 0; i < n; i++) {
        const sb__cfg_prop_t *p = &t[i];
        if (strchr(p->path, '[') || p->type == SB__CFG_OBJECT_LIST)
            continue;
        env_name(p->path, name, sizeof name);
        size_t nlen = strlen(name);
        bool exact = vlen == nlen && !memcmp(var, name, nlen);
        bool file = (p->flags & SB__CFG_SECRET) && vlen == nlen + 5 && !memcmp(var, name, nlen) &&
                    !strcmp(var + nlen, "_FILE");
        if (!exact && !file)
            continue;
        json_t *parent;
        const char *last;
        int rc = env_parent(c, raw, p->path, &parent, &last);
        if (rc != SB_EOK || !parent)
            return rc;
        char key[160], other[160];
        snprintf(key, sizeof key, "%s%s", last, file ? "_file" : "");
        snprintf(other, sizeof other, "%s%s", last, file ? "" : "_file");
        char prefix[SB__CFG_PATH_MAX + 1];
        int plen = last > p->path ? (int)(last - p->path - 1) : 0;
        snprintf(prefix, sizeof prefix, "%.*s", plen, p->path);
        return env_set(c, parent, key, (p->flags & SB__CFG_SECRET) ? other : NULL, prefix, value,
                       var);
    }
    /* SWITCHBOARD_<MAP>_<REST>: one map key, REST lower-cased with _ as dots. */
    for (size_t i = 0; i < n; i++) {
        const sb__cfg_prop_t *p = &t[i];
        if (p->type != SB__CFG_STRING_MAP || strchr(p->path, '['))
            continue;
        env_name(p->path, name, sizeof name);
        size_t nlen = strlen(name);
        if (vlen <= nlen + 1 || memcmp(var, name, nlen) != 0 || var[nlen] != '_')
            continue;
        char key[256], other[256];
        size_t k = 0;
        for (const char *s = var + nlen + 1; *s && k + 8 < sizeof key; s++)
            key[k++] = *s == '_' ? '.' : (*s >= 'A' && *s <= 'Z') ? (char)(*s - 'A' + 'a') : *s;
        key[k] = '\0';
        const char *other_key = NULL;
        if (k > 5 && !strcmp(key + k - 5, ".file")) {
            key[k - 5] = '\0';
            if (sb__cfg_secret_name(key)) { /* KEY_FILE: the secret key's _file form */
                memcpy(other, key, k - 4);
                memcpy(key + k - 5, "_file", 6);
                other_key = other;
            } else {
                key[k - 5] = '.';
            }
        } else if (sb__cfg_secret_name(key)) {
            memcpy(other, key, k);
            memcpy(other + k, "_file", 6);
            other_key = other;
        }
        json_t *parent;
        const char *last;
        int rc = env_parent(c, raw, p->path, &parent, &last);
        if (rc != SB_EOK || !parent)
            return rc;
        json_t *map = json_object_get(parent, last);
        if (!map || json_is_null(map)) {
            map = json_object();
            if (!map || json_object_set_new(parent, last, map) != 0)
                return sb__cfg_oom(c);
        } else if (!json_is_object(map)) {
            return SB_EOK; /* the file's value is wrong; validation says so */
        }
        return env_set(c, map, key, other_key, p->path, value, var);
    }
    if (!strcmp(var, ENV_PREFIX "HANDLERS") ||
        !strncmp(var, ENV_PREFIX "HANDLERS_", strlen(ENV_PREFIX "HANDLERS_")))
        return fail_env(c, var, "handlers cannot be set from the environment");
    /* Unknown: suggest the nearest variable. */
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    char best_name[SB__CFG_PATH_MAX + 32];
    for (size_t i = 0; i < n; i++) {
        if (strchr(t[i].path, '[') || t[i].type == SB__CFG_OBJECT_LIST)
            continue;
        env_name(t[i].path, name, sizeof name);
        size_t d = distance(var + strlen(ENV_PREFIX), name + strlen(ENV_PREFIX));
        if (d < best_d) {
            best_d = d;
            snprintf(best_name, sizeof best_name, "%s", name);
            best = best_name;
        }
    }
    if (best && close_enough(best_d, var + strlen(ENV_PREFIX), best + strlen(ENV_PREFIX)))
        return fail_env(c, var, "unknown configuration variable (did you mean %s?)", best);
    return fail_env(c, var, "unknown configuration variable");
}

extern char **environ;

static int apply_env(sb__cfg_ctx_t *c, json_t *raw)
{
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, ENV_PREFIX, strlen(ENV_PREFIX)) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char var[256];
        size_t len = (size_t)(eq - *e);
        if (len >= sizeof var)
            return fail_env(c, "environment", "variable name too long: %.64s...", *e);
        memcpy(var, *e, len);
        var[len] = '\0';
        if (!strcmp(var, ENV_PREFIX "CONFIG"))
            continue; /* reserved: the path of the configuration file */
        int rc = env_apply_one(c, raw, var, eq + 1);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

/* ---- pass 3: validation into the effective tree ----------------------------------------- */

/* Sets obj[rel] (rel dotted, table keys never contain dots), creating mappings on the way.
 * Consumes `val`. */
static int set_rel(sb__cfg_ctx_t *c, json_t *obj, const char *rel, json_t *val)
{
    for (;;) {
        const char *dot = strchr(rel, '.');
        if (!dot)
            break;
        char key[128];
        size_t klen = (size_t)(dot - rel);
        if (klen >= sizeof key) {
            json_decref(val);
            return SB_EINVAL;
        }
        memcpy(key, rel, klen);
        key[klen] = '\0';
        json_t *next = json_object_get(obj, key);
        if (!next) {
            next = json_object();
            if (!next || json_object_set_new(obj, key, next) != 0) {
                json_decref(val);
                return sb__cfg_oom(c);
            }
        }
        obj = next;
        rel = dot + 1;
    }
    if (json_object_set_new(obj, rel, val) != 0)
        return sb__cfg_oom(c);
    return SB_EOK;
}

/* Fills every default below schema prefix ("" or "handlers[]") into obj, in table order. */
static int fill_defaults(sb__cfg_ctx_t *c, json_t *obj, const char *prefix)
{
    size_t n, plen = strlen(prefix);
    const sb__cfg_prop_t *t = sb__cfg_props(&n);
    for (size_t i = 0; i < n; i++) {
        const sb__cfg_prop_t *p = &t[i];
        const char *rel = p->path;
        if (plen) {
            if (strncmp(rel, prefix, plen) != 0 || rel[plen] != '.')
                continue;
            rel += plen + 1;
        }
        if (strchr(rel, '['))
            continue;
        if (!p->def && (p->flags & SB__CFG_INHERIT))
            continue;
        json_t *v;
        if (!p->def && (p->flags & SB__CFG_REQUIRED)) {
            v = json_null(); /* holds the key's place; validation fills or reports it */
        } else if (p->def) {
            char msg[256];
            int rc = parse_scalar(p, p->def, &v, msg, sizeof msg);
            if (rc == SB_ENOMEM)
                return sb__cfg_oom(c);
            if (rc != SB_EOK)
                return fail(c, p->path, "bad default in the property table: %s", msg);
        } else if (p->type == SB__CFG_STRING_LIST || p->type == SB__CFG_OBJECT_LIST) {
            v = json_array();
        } else if (p->type == SB__CFG_STRING_MAP || p->type == SB__CFG_ANY) {
            v = json_object();
        } else {
            v = json_string("");
        }
        if (!v)
            return sb__cfg_oom(c);
        int rc = set_rel(c, obj, rel, v);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

/* Reads a *_file secret. Only regular files: a FIFO or a device (/dev/stdin, /dev/zero)
 * could block or never end, and opening with O_NONBLOCK keeps even the open from blocking. */
static int read_secret_file(sb__cfg_ctx_t *c, const char *cpath, const char *file, json_t **out)
{
    *out = NULL;
    if (!*file)
        return fail(c, cpath, "empty file name");
    int fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return fail(c, cpath, "cannot read \"%s\": %s", file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(c, cpath, "cannot read \"%s\": not a regular file", file);
    }
    char *buf = sb_malloc(SECRET_MAX + 1);
    if (!buf) {
        close(fd);
        return sb__cfg_oom(c);
    }
    size_t n = 0;
    int err = 0;
    while (n < SECRET_MAX + 1) {
        ssize_t r = read(fd, buf + n, SECRET_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            err = errno;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    int rc = SB_EOK;
    if (err)
        rc = fail(c, cpath, "cannot read \"%s\": %s", file, strerror(err));
    else if (n > SECRET_MAX)
        rc = fail(c, cpath, "\"%s\" is larger than %u bytes", file, SECRET_MAX);
    while (rc == SB_EOK && n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (rc == SB_EOK && (memchr(buf, '\0', n) || !sb__cfg_utf8_valid((unsigned char *)buf, n)))
        rc = fail(c, cpath, "\"%s\" is not UTF-8 text", file);
    if (rc == SB_EOK && !(*out = json_stringn(buf, n)))
        rc = sb__cfg_oom(c);
    sb_free(buf);
    return rc;
}

/* key_file given for a secret key: the secret is the file's content. */
static int secret_from_file(sb__cfg_ctx_t *c, json_t *raw_parent, json_t *eff_parent,
                            const char *key, json_t *val, const char *cpath)
{
    size_t klen = strlen(key) - 5;
    char base[256];
    snprintf(base, sizeof base, "%.*s", (int)klen, key);
    json_t *other = json_object_get(raw_parent, base);
    if (other && !json_is_null(other))
        return fail(c, cpath, "both %s and %s are set; use one of the two", base, key);
    if (json_is_null(val))
        return SB_EOK;
    if (!json_is_string(val))
        return fail(c, cpath, "expected a file name, got %s", kind_of(val));
    json_t *content;
    int rc = read_secret_file(c, cpath, json_string_value(val), &content);
    if (rc != SB_EOK)
        return rc;
    if (json_object_set_new(eff_parent, base, content) != 0)
        return sb__cfg_oom(c);
    return SB_EOK;
}

static bool ends_with_file(const char *key)
{
    size_t n = strlen(key);
    return n > 5 && !strcmp(key + n - 5, "_file");
}

/* Types a scalar of an `any` subtree by the YAML 1.2 core schema (plain scalars only). */
static json_t *core_scalar(const char *s, bool plain)
{
    if (!plain)
        return json_string(s);
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return json_true();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return json_false();
    int64_t v;
    if (parse_int(s, &v) == 0)
        return json_integer(v);
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o') && s[2] &&
        strspn(s + 2, s[1] == 'x' ? "0123456789abcdefABCDEF" : "01234567") == strlen(s + 2)) {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(s + 2, &end, s[1] == 'x' ? 16 : 8);
        if (!*end && errno == 0 && u <= (unsigned long long)INT64_MAX)
            return json_integer((json_int_t)u);
    }
    /* [-+]? ( . digits | digits [. digits*] ) ([eE] [-+]? digits)? */
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    size_t d1 = strspn(p, "0123456789");
    p += d1;
    size_t d2 = 0;
    if (*p == '.') {
        p++;
        d2 = strspn(p, "0123456789");
        p += d2;
    }
    if (d1 + d2 > 0 && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1;
        if (*q == '+' || *q == '-')
            q++;
        size_t d3 = strspn(q, "0123456789");
        p = d3 ? q + d3 : p;
    }
    if (d1 + d2 > 0 && !*p) {
        double x = strtod(s, NULL);
        if (x == x && x - x == 0) /* finite */
            return json_real(x);
    }
    return json_string(s);
}

static int convert_any(sb__cfg_ctx_t *c, json_t *raw, sb__cfg_path_t *cp, json_t **out)
{
    *out = NULL;
    if (json_is_object(raw)) {
        json_t *obj = json_object();
        if (!obj)
            return sb__cfg_oom(c);
        const char *k;
        json_t *v;
        json_object_foreach(raw, k, v)
        {
            size_t saved;
            json_t *child;
            if (path_push(cp, k, &saved) != 0) {
                json_decref(obj);
                return fail(c, cp->buf, "key path too long");
            }
            int rc = convert_any(c, v, cp, &child);
            path_pop(cp, saved);
            if (rc == SB_EOK && json_object_set_new(obj, k, child) != 0)
                rc = sb__cfg_oom(c);
            if (rc != SB_EOK) {
                json_decref(obj);
                return rc;
            }
        }
        *out = obj;
        return SB_EOK;
    }
    if (json_is_array(raw)) {
        json_t *arr = json_array();
        if (!arr)
            return sb__cfg_oom(c);
        for (size_t i = 0; i < json_array_size(raw); i++) {
            size_t saved;
            json_t *child;
            if (path_push_index(cp, i, &saved) != 0) {
                json_decref(arr);
                return fail(c, cp->buf, "key path too long");
            }
            int rc = convert_any(c, json_array_get(raw, i), cp, &child);
            path_pop(cp, saved);
            if (rc == SB_EOK && json_array_append_new(arr, child) != 0)
                rc = sb__cfg_oom(c);
            if (rc != SB_EOK) {
                json_decref(arr);
                return rc;
            }
        }
        *out = arr;
        return SB_EOK;
    }
    if (json_is_string(raw)) {
        json_t *l = json_object_get(c->lines, cp->buf);
        bool plain = l && (json_integer_value(l) & 1);
        *out = core_scalar(json_string_value(raw), plain);
        return *out ? SB_EOK : sb__cfg_oom(c);
    }
    *out = json_incref(raw); /* null */
    return SB_EOK;
}

static int validate_object(sb__cfg_ctx_t *c, json_t *raw, json_t *eff, sb__cfg_path_t *sp,
                           sb__cfg_path_t *cp);

static int validate_list(sb__cfg_ctx_t *c, const sb__cfg_prop_t *p, json_t *val, json_t **out,
                         sb__cfg_path_t *cp)
{
    json_t *arr = json_array();
    if (!arr)
        return sb__cfg_oom(c);
    int rc = SB_EOK;
    if (json_is_string(val)) { /* comma-separated */
        const char *s = json_string_value(val);
        while (*s && rc == SB_EOK) {
            size_t len = strcspn(s, ",");
            const char *b = s, *e = s + len;
            while (b < e && (*b == ' ' || *b == '\t'))
                b++;
            while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e > b) {
                json_t *item = json_stringn(b, (size_t)(e - b));
                if (!item || json_array_append_new(arr, item) != 0)
                    rc = sb__cfg_oom(c);
            }
            s += len + (s[len] == ',');
        }
    } else if (json_is_array(val)) {
        for (size_t i = 0; i < json_array_size(val) && rc == SB_EOK; i++) {
            json_t *item = json_array_get(val, i);
            if (!json_is_string(item)) {
                size_t saved;
                path_push_index(cp, i, &saved);
                rc = fail(c, cp->buf, "expected a string, got %s", kind_of(item));
                path_pop(cp, saved);
                break;
            }
            if (json_array_append(arr, item) != 0)
                rc = sb__cfg_oom(c);
        }
    } else {
        rc = fail(c, cp->buf, "expected a sequence of strings, got %s", kind_of(val));
    }
    (void)p;
    if (rc != SB_EOK) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return SB_EOK;
}

/* "k1=v1, k2=v2" (the one-variable form of a map, e.g. SWITCHBOARD_SCHEMAS_BINDINGS). */
static int map_from_text(sb__cfg_ctx_t *c, const char *s, json_t **out, sb__cfg_path_t *cp)
{
    json_t *map = json_object();
    if (!map)
        return sb__cfg_oom(c);
    int rc = SB_EOK;
    while (*s && rc == SB_EOK) {
        size_t len = strcspn(s, ",");
        const char *b = s, *e = s + len;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > b) {
            const char *eq = memchr(b, '=', (size_t)(e - b));
            if (!eq || eq == b) {
                rc = fail(c, cp->buf, "expected KEY=VALUE items separated by commas");
                break;
            }
            char *key = sb_strndup(b, (size_t)(eq - b));
            json_t *v = json_stringn(eq + 1, (size_t)(e - eq - 1));
            if (!key || !v || json_object_set_new(map, key, v) != 0) {
                if (!key)
                    json_decref(v);
                rc = sb__cfg_oom(c);
            }
            sb_free(key);
        }
        s += len + (s[len] == ',');
    }
    if (rc != SB_EOK) {
        json_decref(map);
        return rc;
    }
    *out = map;
    return SB_EOK;
}

static int validate_map(sb__cfg_ctx_t *c, json_t *val, json_t **out, sb__cfg_path_t *cp)
{
    if (json_is_string(val))
        return map_from_text(c, json_string_value(val), out, cp);
    if (!json_is_object(val))
        return fail(c, cp->buf, "expected a mapping of strings, got %s", kind_of(val));
    json_t *map = json_object();
    if (!map)
        return sb__cfg_oom(c);
    const char *k;
    json_t *v;
    int rc = SB_EOK;
    json_object_foreach(val, k, v)
    {
        size_t saved;
        if (path_push(cp, k, &saved) != 0) {
            rc = fail(c, cp->buf, "key path too long");
            break;
        }
        if (ends_with_file(k)) {
            char base[256];
            snprintf(base, sizeof base, "%.*s", (int)(strlen(k) - 5), k);
            if (sb__cfg_secret_name(base)) {
                rc = secret_from_file(c, val, map, k, v, cp->buf);
                path_pop(cp, saved);
                if (rc != SB_EOK)
                    break;
                continue;
            }
        }
        if (!json_is_string(v))
            rc = fail(c, cp->buf, "expected a string, got %s", kind_of(v));
        else if (json_object_set(map, k, v) != 0)
            rc = sb__cfg_oom(c);
        path_pop(cp, saved);
        if (rc != SB_EOK)
            break;
    }
    if (rc != SB_EOK) {
        json_decref(map);
        return rc;
    }
    *out = map;
    return SB_EOK;
}

static int validate_objects(sb__cfg_ctx_t *c, json_t *val, json_t **out, sb__cfg_path_t *sp,
                            sb__cfg_path_t *cp)
{
    if (!json_is_array(val))
        return fail(c, cp->buf, "expected a sequence of mappings, got %s", kind_of(val));
    size_t ssaved;
    if (path_push_raw(sp, "[]", &ssaved) != 0)
        return fail(c, cp->buf, "key path too long");
    char name_key[SB__CFG_PATH_MAX + 8];
    snprintf(name_key, sizeof name_key, "%s.name", sp->buf);
    bool named = sb__cfg_prop_find(name_key, strlen(name_key)) != NULL;
    json_t *arr = json_array();
    int rc = arr ? SB_EOK : sb__cfg_oom(c);
    for (size_t i = 0; rc == SB_EOK && i < json_array_size(val); i++) {
        json_t *item = json_array_get(val, i);
        size_t csaved;
        if (path_push_index(cp, i, &csaved) != 0) {
            rc = fail(c, cp->buf, "key path too long");
            break;
        }
        json_t *elem = NULL;
        if (!json_is_object(item)) {
            rc = fail(c, cp->buf, "expected a mapping, got %s", kind_of(item));
        } else if (!(elem = json_object())) {
            rc = sb__cfg_oom(c);
        } else if (json_array_append_new(arr, elem) != 0) {
            rc = sb__cfg_oom(c);
        } else if ((rc = fill_defaults(c, elem, sp->buf)) == SB_EOK) {
            rc = validate_object(c, item, elem, sp, cp);
        }
        /* Required keys, and unique names. */
        size_t n;
        const sb__cfg_prop_t *t = sb__cfg_props(&n);
        for (size_t k = 0; rc == SB_EOK && k < n; k++) {
            if (!(t[k].flags & SB__CFG_REQUIRED) || strncmp(t[k].path, sp->buf, sp->len) != 0 ||
                t[k].path[sp->len] != '.')
                continue;
            const char *rel = t[k].path + sp->len + 1;
            json_t *have = json_object_get(elem, rel);
            if (!have || json_is_null(have))
                rc = fail(c, cp->buf, "missing required key \"%s\"", rel);
        }
        if (rc == SB_EOK && named) {
            const char *nm = json_string_value(json_object_get(elem, "name"));
            for (size_t j = 0; nm && j < i; j++) {
                const char *other =
                    json_string_value(json_object_get(json_array_get(arr, j), "name"));
                if (other && !strcmp(other, nm)) {
                    size_t s2;
                    path_push(cp, "name", &s2);
                    rc = fail(c, cp->buf, "duplicate name \"%.64s\" (also %.*s[%zu])", nm,
                              (int)csaved, cp->buf, j);
                    path_pop(cp, s2);
                    break;
                }
            }
        }
        path_pop(cp, csaved);
    }
    path_pop(sp, ssaved);
    if (rc != SB_EOK) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return SB_EOK;
}

static int validate_prop(sb__cfg_ctx_t *c, const sb__cfg_prop_t *p, json_t *val, json_t *eff,
                         const char *key, sb__cfg_path_t *sp, sb__cfg_path_t *cp)
{
    json_t *node = NULL;
    int rc;
    if (json_is_null(val))
        return SB_EOK; /* an empty value keeps the default */
    switch (p->type) {
    case SB__CFG_STRING_LIST:
        rc = validate_list(c, p, val, &node, cp);
        break;
    case SB__CFG_STRING_MAP:
        rc = validate_map(c, val, &node, cp);
        break;
    case SB__CFG_OBJECT_LIST:
        rc = validate_objects(c, val, &node, sp, cp);
        break;
    case SB__CFG_ANY:
        rc = convert_any(c, val, cp, &node);
        break;
    default: {
        if (!json_is_string(val))
            return fail(c, cp->buf, "expected %s %s, got %s", p->type == SB__CFG_INT ? "an" : "a",
                        sb__cfg_type_name(p->type), kind_of(val));
        char msg[384];
        rc = parse_scalar(p, json_string_value(val), &node, msg, sizeof msg);
        if (rc == SB_ENOMEM)
            return sb__cfg_oom(c);
        if (rc != SB_EOK)
            return fail(c, cp->buf, "%s", msg);
        if ((p->flags & SB__CFG_REQUIRED) && p->type == SB__CFG_STRING &&
            !*json_string_value(node)) {
            json_decref(node);
            return fail(c, cp->buf, "must not be empty");
        }
        break;
    }
    }
    if (rc != SB_EOK)
        return rc;
    if (json_object_set_new(eff, key, node) != 0)
        return sb__cfg_oom(c);
    return SB_EOK;
}

static int validate_object(sb__cfg_ctx_t *c, json_t *raw, json_t *eff, sb__cfg_path_t *sp,
                           sb__cfg_path_t *cp)
{
    const char *key;
    json_t *val;
    json_object_foreach(raw, key, val)
    {
        size_t ssaved, csaved, parent_len = sp->len;
        if (path_push(sp, key, &ssaved) != 0 || path_push(cp, key, &csaved) != 0)
            return fail(c, NULL, "key path too long");
        const sb__cfg_prop_t *p = strpbrk(key, ".[]") ? NULL : sb__cfg_prop_find(sp->buf, sp->len);
        int rc;
        if (p) {
            rc = validate_prop(c, p, val, eff, key, sp, cp);
        } else if (!strpbrk(key, ".[]") && is_section(sp->buf, sp->len)) {
            if (json_is_null(val)) {
                rc = SB_EOK;
            } else if (!json_is_object(val)) {
                rc = fail(c, cp->buf, "expected a mapping, got %s", kind_of(val));
            } else {
                json_t *child = json_object_get(eff, key);
                rc = SB_EOK;
                if (!child) {
                    child = json_object();
                    if (!child || json_object_set_new(eff, key, child) != 0)
                        rc = sb__cfg_oom(c);
                }
                if (rc == SB_EOK)
                    rc = validate_object(c, val, child, sp, cp);
            }
        } else {
            const sb__cfg_prop_t *base = NULL;
            if (ends_with_file(key))
                base = sb__cfg_prop_find(sp->buf, sp->len - 5);
            if (base && (base->flags & SB__CFG_SECRET) && base->type == SB__CFG_STRING)
                rc = secret_from_file(c, raw, eff, key, val, cp->buf);
            else if (base)
                rc = fail(c, cp->buf, "unknown key (only secrets have a _file form)");
            else
                rc = unknown_key(c, sp, parent_len, key, cp->buf);
        }
        path_pop(sp, ssaved);
        path_pop(cp, csaved);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

/* ---- loading ---------------------------------------------------------------------------- */

int sb__config_load_buffer(const char *buf, size_t len, const char *name, sb__config_t **out,
                           char *errstr, size_t errstr_size)
{
    sb__cfg_ctx_t c = {.name = name ? name : "<config>", .errstr = errstr, .errsize = errstr_size};
    json_t *raw = NULL, *eff = NULL;
    sb__cfg_path_t *sp = NULL, *cp = NULL;
    sb__config_t *cfg = NULL;
    int rc;
    if (!out)
        return SB_EINVAL;
    *out = NULL;
    if (errstr && errstr_size)
        errstr[0] = '\0';
    c.lines = json_object();
    c.envsrc = json_object();
    sp = sb_malloc(sizeof *sp);
    cp = sb_malloc(sizeof *cp);
    eff = json_object();
    cfg = sb_calloc(1, sizeof *cfg);
    if (!c.lines || !c.envsrc || !sp || !cp || !eff || !cfg) {
        rc = sb__cfg_oom(&c);
        goto err;
    }
    sp->len = cp->len = 0;
    sp->buf[0] = cp->buf[0] = '\0';
    if (buf) {
        rc = sb__cfg_yaml_read(&c, buf, len, &raw);
    } else {
        raw = json_object();
        rc = raw ? SB_EOK : sb__cfg_oom(&c);
    }
    if (rc == SB_EOK)
        rc = apply_env(&c, raw);
    if (rc == SB_EOK)
        rc = fill_defaults(&c, eff, "");
    if (rc == SB_EOK)
        rc = validate_object(&c, raw, eff, sp, cp);
    if (rc != SB_EOK)
        goto err;
    cfg->name = sb_strdup(c.name);
    if (!cfg->name) {
        rc = sb__cfg_oom(&c);
        goto err;
    }
    cfg->root = eff;
    json_decref(raw);
    json_decref(c.lines);
    json_decref(c.envsrc);
    sb_free(sp);
    sb_free(cp);
    *out = cfg;
    return SB_EOK;
err:
    json_decref(raw);
    json_decref(eff);
    json_decref(c.lines);
    json_decref(c.envsrc);
    sb_free(sp);
    sb_free(cp);
    sb_free(cfg);
    return rc;
}

int sb__config_load(const char *path, sb__config_t **out, char *errstr, size_t errstr_size)
{
    if (!out)
        return SB_EINVAL;
    *out = NULL;
    if (!path)
        return sb__config_load_buffer(NULL, 0, "<defaults>", out, errstr, errstr_size);
    FILE *f = fopen(path, "rb");
    if (!f)
        return sb__errf(errstr, errstr_size, SB_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = sb_malloc(cap);
    int rc = buf ? SB_EOK : SB_ENOMEM;
    while (rc == SB_EOK) {
        if (len == cap) {
            char *nb = cap >= SOURCE_MAX ? NULL : sb_realloc(buf, cap * 2);
            if (!nb) {
                rc = cap >= SOURCE_MAX ? SB_ECONFIG : SB_ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                rc = SB_EIO;
            break;
        }
    }
    int err = errno;
    fclose(f);
    if (rc == SB_ENOMEM)
        sb__errf(errstr, errstr_size, rc, "%s: out of memory", path);
    else if (rc == SB_ECONFIG)
        sb__errf(errstr, errstr_size, rc, "%s: larger than %u MiB", path, SOURCE_MAX >> 20);
    else if (rc != SB_EOK)
        sb__errf(errstr, errstr_size, rc, "%s: cannot read: %s", path, strerror(err));
    if (rc == SB_EOK)
        rc = sb__config_load_buffer(buf, len, path, out, errstr, errstr_size);
    sb_free(buf);
    return rc;
}

void sb__config_destroy(sb__config_t *cfg)
{
    if (!cfg)
        return;
    json_decref(cfg->root);
    sb_free(cfg->name);
    sb_free(cfg);
}

/* ---- getters ---------------------------------------------------------------------------- */

static json_t *lookup(json_t *node, const char *path)
{
    if (!path)
        return node;
    while (*path && node) {
        if (*path == '[') {
            char *end;
            unsigned long i = strtoul(path + 1, &end, 10);
            if (end == path + 1 || *end != ']' || !json_is_array(node))
                return NULL;
            node = json_array_get(node, i);
            path = end + 1;
            if (*path == '.')
                path++;
            continue;
        }
        if (!json_is_object(node))
            return NULL;
        /* Longest key first, so that map keys with dots match whole. */
        size_t len = strlen(path);
        json_t *next = NULL;
        size_t used = 0;
        for (size_t end = len; end > 0; end--) {
            if (path[end] != '\0' && path[end] != '.' && path[end] != '[')
                continue;
            if ((next = json_object_getn(node, path, end)) != NULL) {
                used = end;
                break;
            }
        }
        if (!next)
            return NULL;
        node = next;
        path += used;
        if (*path == '.')
            path++;
    }
    return node;
}

json_t *sb__config_json(const sb__config_t *cfg, const char *path)
{
    return cfg ? lookup(cfg->root, path) : NULL;
}

bool sb__config_has(const sb__config_t *cfg, const char *path)
{
    return sb__config_json(cfg, path) != NULL;
}

const char *sb__config_str(const sb__config_t *cfg, const char *path)
{
    return json_string_value(sb__config_json(cfg, path));
}

int64_t sb__config_int(const sb__config_t *cfg, const char *path)
{
    return (int64_t)json_integer_value(sb__config_json(cfg, path));
}

bool sb__config_bool(const sb__config_t *cfg, const char *path)
{
    return json_is_true(sb__config_json(cfg, path));
}

uint64_t sb__config_duration_ms(const sb__config_t *cfg, const char *path)
{
    json_int_t v = json_integer_value(sb__config_json(cfg, path));
    return v > 0 ? (uint64_t)v : 0;
}

uint64_t sb__config_size(const sb__config_t *cfg, const char *path)
{
    json_int_t v = json_integer_value(sb__config_json(cfg, path));
    return v > 0 ? (uint64_t)v : 0;
}

const char *sb__config_source(const sb__config_t *cfg)
{
    return cfg ? cfg->name : NULL;
}
