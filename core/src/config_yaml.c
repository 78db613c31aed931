/* config_yaml.c: pass 1 of the configuration loader, YAML text -> the raw jansson tree.
 *
 * Walks libyaml's event stream (not its document API) with an explicit stack of frames, so
 * that the concrete key path and the line of every node are known while it is built: each goes
 * into the side table c->lines (path -> line * 2 + "scalar was plain"), through which later
 * errors say file:line. Scalars stay text, after ${VAR} substitution; the validator
 * (config.c) types them by the type of their key, and `any` subtrees by the YAML 1.2 core
 * schema, which is why the table remembers which scalars were plain.
 *
 * Refused on purpose: anchors and aliases (and so merge keys), tags other than the standard
 * str/map/seq ones, complex keys, several documents, nesting deeper than 64. Does not know the
 * property table, reads no SWITCHBOARD_* override (only ${VAR}), and checks nothing but the
 * shape of the YAML and its UTF-8. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <yaml.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "config_internal.h"

#define DEPTH_MAX 64 /* deepest nesting of mappings and sequences */

/* ---- pass 1: YAML -> raw tree ----------------------------------------------------------- */

/* Expands ${NAME}, ${NAME:-default} and $$ in `in`. A lone $ stays as it is. */
static int substitute(sb__cfg_ctx_t *c, const char *in, size_t len, size_t line, const char *cpath,
                      char **out)
{
    *out = NULL;
    if (!memchr(in, '$', len)) {
        *out = sb_strndup(in, len);
        return *out ? SB_EOK : sb__cfg_oom(c);
    }
    size_t cap = len + 64, n = 0;
    char *buf = sb_malloc(cap);
    if (!buf)
        return sb__cfg_oom(c);
    size_t i = 0;
    int rc = SB_EOK;
    while (i < len) {
        const char *piece = in + i;
        size_t plen = 1;
        char name[128];
        if (in[i] == '$' && i + 1 < len && in[i + 1] == '$') {
            i += 2;
        } else if (in[i] == '$' && i + 1 < len && in[i + 1] == '{') {
            const char *close = memchr(in + i + 2, '}', len - i - 2);
            if (!close) {
                rc = sb__cfg_fail_line(c, line, cpath,
                                       "unterminated \"${\" (write $$ for a dollar)");
                break;
            }
            const char *nm = in + i + 2;
            size_t nlen = 0;
            while (nm + nlen < close && (nm[nlen] == '_' || (nm[nlen] >= 'A' && nm[nlen] <= 'Z') ||
                                         (nm[nlen] >= 'a' && nm[nlen] <= 'z') ||
                                         (nlen > 0 && nm[nlen] >= '0' && nm[nlen] <= '9')))
                nlen++;
            const char *rest = nm + nlen;
            bool has_default = rest + 1 < close && rest[0] == ':' && rest[1] == '-';
            if (nlen == 0 || nlen >= sizeof name || (rest != close && !has_default)) {
                rc = sb__cfg_fail_line(c, line, cpath,
                                       "invalid substitution \"%.*s\" (expected ${NAME} or "
                                       "${NAME:-default})",
                                       (int)(close - (in + i) + 1 > 80 ? 80 : close - (in + i) + 1),
                                       in + i);
                break;
            }
            memcpy(name, nm, nlen);
            name[nlen] = '\0';
            const char *val = getenv(name);
            if (has_default && (!val || !*val)) {
                piece = rest + 2;
                plen = (size_t)(close - piece);
            } else if (!val) {
                rc =
                    sb__cfg_fail_line(c, line, cpath,
                                      "environment variable %s is not set (write ${%s:-default} to "
                                      "give a default)",
                                      name, name);
                break;
            } else {
                piece = val;
                plen = strlen(val);
            }
            i = (size_t)(close - in) + 1;
        } else {
            i++;
        }
        if (n + plen + 1 > cap) {
            size_t ncap = (n + plen + 1) * 2;
            char *nb = sb_realloc(buf, ncap);
            if (!nb) {
                rc = sb__cfg_oom(c);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        memcpy(buf + n, piece, plen);
        n += plen;
    }
    if (rc != SB_EOK) {
        sb_free(buf);
        return rc;
    }
    buf[n] = '\0';
    if (!sb__cfg_utf8_valid((const unsigned char *)buf, n) || strlen(buf) != n) {
        sb_free(buf);
        return sb__cfg_fail_line(c, line, cpath,
                                 "value is not valid UTF-8 text after substitution");
    }
    *out = buf;
    return SB_EOK;
}

typedef struct frame {
    json_t *node;     /* borrowed: owned by its parent (or the root) */
    size_t saved_len; /* path length before this node's own segment */
    size_t index;     /* next element index (sequences) */
    char *key;        /* pending key (mappings), owned */
    size_t key_line;
} frame_t;

static int record_line(sb__cfg_ctx_t *c, const char *cpath, size_t line, bool plain)
{
    json_t *v = json_integer((json_int_t)(line * 2 + (plain ? 1 : 0)));
    if (!v || json_object_set_new(c->lines, cpath, v) != 0)
        return sb__cfg_oom(c);
    return SB_EOK;
}

/* Adds `node` (owned; always consumed) under the top frame, pushing its path segment onto
 * `path` (the caller pops it). For the root, stores it in *root. */
static int attach(sb__cfg_ctx_t *c, frame_t *stack, int depth, sb__cfg_path_t *path, json_t *node,
                  size_t line, bool plain, json_t **root, size_t *saved)
{
    *saved = path->len;
    if (depth == 0) {
        *root = node;
        return SB_EOK;
    }
    frame_t *top = &stack[depth - 1];
    int rc;
    if (json_is_object(top->node)) {
        if (path_push(path, top->key, saved) != 0) {
            json_decref(node);
            return sb__cfg_fail_line(c, top->key_line, NULL, "key path too long");
        }
        json_t *prev = json_object_get(c->lines, path->buf);
        if (json_object_get(top->node, top->key)) {
            json_decref(node);
            return sb__cfg_fail_line(c, top->key_line, path->buf,
                                     "duplicate key (first at line %lld)",
                                     prev ? (long long)(json_integer_value(prev) / 2) : 0LL);
        }
        rc = record_line(c, path->buf, top->key_line, plain);
        if (rc != SB_EOK) {
            json_decref(node);
            return rc;
        }
        if (json_object_set_new(top->node, top->key, node) != 0)
            return sb__cfg_oom(c);
        sb_free(top->key);
        top->key = NULL;
    } else {
        if (path_push_index(path, top->index++, saved) != 0) {
            json_decref(node);
            return sb__cfg_fail_line(c, line, NULL, "key path too long");
        }
        rc = record_line(c, path->buf, line, plain);
        if (rc != SB_EOK) {
            json_decref(node);
            return rc;
        }
        if (json_array_append_new(top->node, node) != 0)
            return sb__cfg_oom(c);
    }
    return SB_EOK;
}

static bool tag_ok(const yaml_char_t *tag, const char *standard)
{
    return !tag || !strcmp((const char *)tag, "!") || !strcmp((const char *)tag, standard);
}

static int yaml_fail(sb__cfg_ctx_t *c, const yaml_parser_t *parser)
{
    if (parser->error == YAML_MEMORY_ERROR)
        return sb__cfg_oom(c);
    size_t line = parser->problem_mark.line + 1;
    const char *problem = parser->problem ? parser->problem : "unknown problem";
    if (parser->context)
        return sb__cfg_fail_line(c, line, NULL, "YAML syntax error: %s %s", problem,
                                 parser->context);
    return sb__cfg_fail_line(c, line, NULL, "YAML syntax error: %s", problem);
}

int sb__cfg_yaml_read(sb__cfg_ctx_t *c, const char *buf, size_t len, json_t **out)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    frame_t stack[DEPTH_MAX];
    int depth = 0, docs = 0, rc = SB_EOK;
    bool done = false;
    json_t *root = NULL;
    sb__cfg_path_t *path = sb_malloc(sizeof *path);
    *out = NULL;
    if (!path)
        return sb__cfg_oom(c);
    path->len = 0;
    path->buf[0] = '\0';
    if (!yaml_parser_initialize(&parser)) {
        sb_free(path);
        return sb__cfg_oom(c);
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    while (!done && rc == SB_EOK) {
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = yaml_fail(c, &parser);
            break;
        }
        size_t line = ev.start_mark.line + 1;
        frame_t *top = depth ? &stack[depth - 1] : NULL;
        bool want_key = top && json_is_object(top->node) && !top->key;
        char cpath[SB__CFG_PATH_MAX + 32]; /* the path the node of this event will have */
        if (!want_key && top && top->key)
            snprintf(cpath, sizeof cpath, "%s%s%s", path->buf, path->len ? "." : "", top->key);
        else if (!want_key && top)
            snprintf(cpath, sizeof cpath, "%s[%zu]", path->buf, top->index);
        else
            snprintf(cpath, sizeof cpath, "%s", path->buf);
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                rc = sb__cfg_fail_line(c, line, NULL, "only one YAML document is allowed");
            break;
        case YAML_ALIAS_EVENT:
            rc = sb__cfg_fail_line(c, line, cpath, "anchors and aliases are not supported");
            break;
        case YAML_SCALAR_EVENT: {
            const char *s = (const char *)ev.data.scalar.value;
            size_t slen = ev.data.scalar.length;
            if (ev.data.scalar.anchor) {
                rc = sb__cfg_fail_line(c, line, cpath, "anchors and aliases are not supported");
                break;
            }
            if (!tag_ok(ev.data.scalar.tag, YAML_STR_TAG)) {
                rc = sb__cfg_fail_line(c, line, cpath, "YAML tag %.64s is not supported",
                                       (const char *)ev.data.scalar.tag);
                break;
            }
            if (memchr(s, '\0', slen) || !sb__cfg_utf8_valid((const unsigned char *)s, slen)) {
                rc = sb__cfg_fail_line(c, line, cpath, "NUL character or invalid UTF-8");
                break;
            }
            if (want_key) {
                top->key = sb_strndup(s, slen);
                top->key_line = line;
                if (!top->key)
                    rc = sb__cfg_oom(c);
                break;
            }
            bool plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev.data.scalar.tag;
            json_t *node;
            if (plain && (slen == 0 || !strcmp(s, "~") || !strcmp(s, "null") ||
                          !strcmp(s, "Null") || !strcmp(s, "NULL"))) {
                node = json_null();
            } else {
                char *text;
                rc = substitute(c, s, slen, line, cpath, &text);
                if (rc != SB_EOK)
                    break;
                node = json_string(text);
                sb_free(text);
                if (!node) {
                    rc = sb__cfg_oom(c);
                    break;
                }
            }
            size_t saved;
            rc = attach(c, stack, depth, path, node, line, plain, &root, &saved);
            path_pop(path, saved);
            if (rc == SB_EOK && depth == 0 && !json_is_null(node))
                rc = sb__cfg_fail_line(c, line, NULL, "the top level must be a mapping of keys");
            break;
        }
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            bool map = ev.type == YAML_MAPPING_START_EVENT;
            const yaml_char_t *anchor =
                map ? ev.data.mapping_start.anchor : ev.data.sequence_start.anchor;
            const yaml_char_t *tag = map ? ev.data.mapping_start.tag : ev.data.sequence_start.tag;
            if (anchor) {
                rc = sb__cfg_fail_line(c, line, cpath, "anchors and aliases are not supported");
                break;
            }
            if (!tag_ok(tag, map ? YAML_MAP_TAG : YAML_SEQ_TAG)) {
                rc = sb__cfg_fail_line(c, line, cpath, "YAML tag %.64s is not supported",
                                       (const char *)tag);
                break;
            }
            if (want_key) {
                rc = sb__cfg_fail_line(c, line, cpath, "complex mapping keys are not supported");
                break;
            }
            if (depth == DEPTH_MAX) {
                rc = sb__cfg_fail_line(c, line, cpath, "nesting deeper than %d levels", DEPTH_MAX);
                break;
            }
            if (depth == 0 && !map) {
                rc = sb__cfg_fail_line(c, line, NULL, "the top level must be a mapping of keys");
                break;
            }
            json_t *node = map ? json_object() : json_array();
            if (!node) {
                rc = sb__cfg_oom(c);
                break;
            }
            size_t saved;
            rc = attach(c, stack, depth, path, node, line, false, &root, &saved);
            if (rc != SB_EOK) {
                path_pop(path, saved);
                break;
            }
            stack[depth].node = node;
            stack[depth].saved_len = saved;
            stack[depth].index = 0;
            stack[depth].key = NULL;
            stack[depth].key_line = 0;
            depth++;
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0) {
                depth--;
                sb_free(stack[depth].key);
                path_pop(path, stack[depth].saved_len);
            }
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    while (depth > 0)
        sb_free(stack[--depth].key);
    yaml_parser_delete(&parser);
    sb_free(path);
    if (rc != SB_EOK) {
        json_decref(root);
        return rc;
    }
    if (!root || json_is_null(root)) {
        json_decref(root);
        root = json_object();
        if (!root)
            return sb__cfg_oom(c);
    }
    *out = root;
    return SB_EOK;
}
