/* envelope.c: decoding of native and CloudEvents envelopes into sb_event; see envelope.h.
 *
 * The hot path (a native event whose type is the routing key) is: one validating scan of
 * the body that also indexes its top-level members, one lookup of `Id`, one of
 * `CreationDate`, two small arena copies. No tree, no malloc. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "switchboard/error.h"
#include "datetime.h"
#include "envelope.h"

#define DEFAULT_MAX_SIZE  (1024 * 1024)
#define DEFAULT_MAX_DEPTH 64
#define MAX_ID_LEN        1024
#define MAX_TYPE_LEN      1024

static int bad(sb_event_t *ev, int rc, const char *fmt, ...) SB_PRINTF(3, 4);

static int bad(sb_event_t *ev, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->error, sizeof ev->error, fmt, ap);
    va_end(ap);
    return rc;
}

static const char *jtype_name(sb__jtype_t t)
{
    switch (t) {
    case SB__JT_OBJECT:
        return "an object";
    case SB__JT_ARRAY:
        return "an array";
    case SB__JT_STRING:
        return "a string";
    case SB__JT_NUMBER:
        return "a number";
    case SB__JT_TRUE:
    case SB__JT_FALSE:
        return "a boolean";
    case SB__JT_NULL:
        return "null";
    default:
        return "nothing";
    }
}

static const char *dup(sb_event_t *ev, const char *s, size_t n)
{
    return sb__arena_strndup(&ev->arena, s, n);
}

/* A top-level string member, decoded into the arena. 1 found, 0 absent, -1 wrong type,
 * -2 out of memory (ev->error set). */
static int member_str(sb_event_t *ev, const sb__jindex_t *idx, const char *name, const char **out,
                      size_t *len)
{
    const sb__jfield_t *f = sb__jindex_find(idx, name, strlen(name));
    if (!f || f->type == SB__JT_NULL)
        return 0;
    if (f->type != SB__JT_STRING) {
        bad(ev, SB_EDECODE, "member \"%s\" must be a string, got %s", name,
            jtype_name((sb__jtype_t)f->type));
        return -1;
    }
    char *s = sb__arena_alloc(&ev->arena, (size_t)f->val_len + 1);
    if (!s) {
        bad(ev, SB_ENOMEM, "out of memory");
        return -2;
    }
    size_t n = f->val_esc ? sb__junescape(f->val, f->val_len, s) : f->val_len;
    if (!f->val_esc)
        memcpy(s, f->val, n);
    s[n] = '\0';
    *out = s;
    *len = n;
    return 1;
}

static const sb__header_t *header(const sb__intake_msg_t *m, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < m->n_headers; i++)
        if (m->headers[i].name_len == nl && memcmp(m->headers[i].name, name, nl) == 0)
            return &m->headers[i];
    return NULL;
}

/* CloudEvents binary-mode attribute from any of the transport prefixes. */
static const sb__header_t *ce_header(const sb__intake_msg_t *m, const char *attr)
{
    static const char *prefixes[] = {"ce_", "cloudEvents:", "cloudEvents_"};
    char name[64];
    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s%s", prefixes[i], attr);
        const sb__header_t *h = header(m, name);
        if (h)
            return h;
    }
    return NULL;
}

static bool has_ce_headers(const sb__intake_msg_t *m)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        const sb__header_t *h = &m->headers[i];
        if ((h->name_len > 3 && memcmp(h->name, "ce_", 3) == 0) ||
            (h->name_len > 12 && (memcmp(h->name, "cloudEvents:", 12) == 0 ||
                                  memcmp(h->name, "cloudEvents_", 12) == 0)))
            return true;
    }
    return false;
}

/* Media type without parameters, compared case-insensitively. */
static bool media_is(const char *ct, const char *type)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen(type);
    return strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static bool media_is_json(const char *ct)
{
    if (!ct)
        return true; /* integration events are JSON unless said otherwise */
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    if ((n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
        (n == 9 && strncasecmp(ct, "text/json", 9) == 0))
        return true;
    return n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* W3C traceparent: "vv-<32 hex>-<16 hex>-<2 hex>", not all-zero ids, version != ff. */
static bool traceparent_ok(const char *s, size_t n)
{
    if (n < 55)
        return false;
    for (size_t i = 0; i < 55; i++) {
        if (i == 2 || i == 35 || i == 52) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) {
            return false;
        }
    }
    if (s[0] == 'f' && s[1] == 'f')
        return false;
    if (n > 55 && (s[0] == '0' && s[1] == '0'))
        return false; /* version 00 has exactly 55 characters */
    bool zero = true;
    for (size_t i = 3; i < 35; i++)
        zero &= s[i] == '0';
    if (zero)
        return false;
    zero = true;
    for (size_t i = 36; i < 52; i++)
        zero &= s[i] == '0';
    return !zero;
}

static int set_trace(sb_event_t *ev, const char *tp, size_t tp_len, const char *ts, size_t ts_len)
{
    if (tp && traceparent_ok(tp, tp_len)) {
        if (!(ev->traceparent = dup(ev, tp, tp_len)))
            return bad(ev, SB_ENOMEM, "out of memory");
        if (ts && ts_len <= 512 && !(ev->tracestate = dup(ev, ts, ts_len)))
            return bad(ev, SB_ENOMEM, "out of memory");
    }
    return SB_EOK;
}

static int hash_id(sb_event_t *ev, const char *body, size_t len)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return bad(ev, SB_ENOMEM, "SHA-256 of the body failed");
    char *hex = sb__arena_alloc(&ev->arena, 65);
    if (!hex)
        return bad(ev, SB_ENOMEM, "out of memory");
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    ev->id = hex;
    ev->id_len = 64;
    ev->id_hashed = true;
    return SB_EOK;
}

/* Scans the payload span and indexes it; `what` names it in errors. */
static int scan_payload(sb_event_t *ev, const char *what, bool require_object)
{
    char why[160];
    sb__jtype_t root = SB__JT_NONE;
    if (sb__jscan(ev->data, ev->data_len, ev->max_depth, &ev->index, &root, why, sizeof why) !=
        SB_EOK)
        return bad(ev, SB_EDECODE, "%s: %s", what, why);
    ev->data_type = root;
    if (require_object && root != SB__JT_OBJECT)
        return bad(ev, SB_EDECODE, "%s must be a JSON object, got %s", what, jtype_name(root));
    return SB_EOK;
}

static int check_id(sb_event_t *ev)
{
    if (ev->id_len == 0)
        return bad(ev, SB_EDECODE, "the event id is empty");
    if (ev->id_len > MAX_ID_LEN)
        return bad(ev, SB_EDECODE, "the event id is %zu bytes, at most %d allowed", ev->id_len,
                   MAX_ID_LEN);
    if (memchr(ev->id, '\0', ev->id_len))
        return bad(ev, SB_EDECODE, "the event id contains a NUL character");
    return SB_EOK;
}

static int set_type(sb_event_t *ev, const char *t, size_t n)
{
    if (n == 0)
        return SB_ENOTFOUND;
    if (n > MAX_TYPE_LEN)
        return bad(ev, SB_EDECODE, "the event type is %zu bytes, at most %d allowed", n,
                   MAX_TYPE_LEN);
    if (memchr(t, '\0', n))
        return bad(ev, SB_EDECODE, "the event type contains a NUL character");
    if (!(ev->type = dup(ev, t, n)))
        return bad(ev, SB_ENOMEM, "out of memory");
    ev->type_len = n;
    return SB_EOK;
}

static int decode_native(const sb__envelope_opts_t *o, const sb__intake_msg_t *m, sb_event_t *ev)
{
    int rc;
    ev->kind = SB__ENV_NATIVE;
    ev->data = m->body;
    ev->data_len = m->body_len;
    if (m->body_len == 0)
        return bad(ev, SB_EDECODE, "empty body: an integration event is a JSON object");
    if ((rc = scan_payload(ev, "event body", true)) != SB_EOK)
        return rc;

    /* Type: routing key, AMQP type, event-type header, body member, topic. */
    const sb__header_t *h;
    rc = SB_ENOTFOUND;
    if (m->routing_key && *m->routing_key)
        rc = set_type(ev, m->routing_key, strlen(m->routing_key));
    if (rc == SB_ENOTFOUND && m->amqp_type && *m->amqp_type)
        rc = set_type(ev, m->amqp_type, strlen(m->amqp_type));
    if (rc == SB_ENOTFOUND && (h = header(m, "event-type")) != NULL)
        rc = set_type(ev, h->value, h->value_len);
    if (rc == SB_ENOTFOUND && o->type_field) {
        const char *t;
        size_t tl;
        int r = member_str(ev, &ev->index, o->type_field, &t, &tl);
        if (r < 0)
            return r == -2 ? SB_ENOMEM : SB_EDECODE;
        if (r > 0)
            rc = set_type(ev, t, tl);
    }
    if (rc == SB_ENOTFOUND && m->topic && *m->topic)
        rc = set_type(ev, m->topic, strlen(m->topic));
    if (rc == SB_ENOTFOUND)
        return bad(ev, SB_EDECODE,
                   "no event type: no routing key, type property or event-type header");
    if (rc != SB_EOK)
        return rc;

    /* Id: body Id, body id, message-id. */
    int r = member_str(ev, &ev->index, "Id", &ev->id, &ev->id_len);
    if (r == 0)
        r = member_str(ev, &ev->index, "id", &ev->id, &ev->id_len);
    if (r < 0)
        return r == -2 ? SB_ENOMEM : SB_EDECODE;
    if (r == 0 && m->message_id && *m->message_id) {
        size_t n = strlen(m->message_id);
        if (!(ev->id = dup(ev, m->message_id, n)))
            return bad(ev, SB_ENOMEM, "out of memory");
        ev->id_len = n;
        r = 1;
    }
    if (r == 0) {
        if (!o->id_hash)
            return bad(ev, SB_EDECODE,
                       "no event id: the body has no \"Id\" or \"id\" and the message has no "
                       "message-id (set intake.id_strategy: hash to derive one)");
        if ((rc = hash_id(ev, m->body, m->body_len)) != SB_EOK)
            return rc;
    }
    if ((rc = check_id(ev)) != SB_EOK)
        return rc;

    /* CreationDate, when present, must be a date-time. */
    const char *cd;
    size_t cdl;
    r = member_str(ev, &ev->index, "CreationDate", &cd, &cdl);
    if (r < 0)
        return r == -2 ? SB_ENOMEM : SB_EDECODE;
    if (r > 0) {
        if (sb__datetime_parse(cd, cdl, true, &ev->creation_us, NULL) != 0)
            return bad(ev, SB_EDECODE, "CreationDate \"%.64s\" is not an ISO-8601 date-time", cd);
        ev->creation_date = cd;
    }
    const sb__header_t *tp = header(m, "traceparent"), *ts = header(m, "tracestate");
    return set_trace(ev, tp ? tp->value : NULL, tp ? tp->value_len : 0, ts ? ts->value : NULL,
                     ts ? ts->value_len : 0);
}

static int ce_attr(sb_event_t *ev, const sb__intake_msg_t *m, const char *attr, const char **out,
                   bool required)
{
    const sb__header_t *h = ce_header(m, attr);
    if (!h || h->value_len == 0) {
        if (required)
            return bad(ev, SB_EDECODE,
                       "CloudEvents binary-mode message lacks the required attribute \"%s\"", attr);
        return SB_EOK;
    }
    if (!(*out = dup(ev, h->value, h->value_len)))
        return bad(ev, SB_ENOMEM, "out of memory");
    return SB_EOK;
}

static int decode_ce_binary(const sb__intake_msg_t *m, sb_event_t *ev)
{
    int rc;
    ev->kind = SB__ENV_CE_BINARY;
    const char *id = NULL, *type = NULL;
    if ((rc = ce_attr(ev, m, "specversion", &ev->ce_specversion, true)) != SB_EOK ||
        (rc = ce_attr(ev, m, "id", &id, true)) != SB_EOK ||
        (rc = ce_attr(ev, m, "source", &ev->ce_source, true)) != SB_EOK ||
        (rc = ce_attr(ev, m, "type", &type, true)) != SB_EOK ||
        (rc = ce_attr(ev, m, "subject", &ev->ce_subject, false)) != SB_EOK ||
        (rc = ce_attr(ev, m, "time", &ev->ce_time, false)) != SB_EOK)
        return rc;
    if (strcmp(ev->ce_specversion, "1.0") != 0)
        return bad(ev, SB_EDECODE, "unsupported CloudEvents specversion \"%.16s\" (1.0 expected)",
                   ev->ce_specversion);
    if (ev->ce_time && sb__datetime_parse(ev->ce_time, strlen(ev->ce_time), false, NULL, NULL))
        return bad(ev, SB_EDECODE, "CloudEvents time \"%.64s\" is not an RFC 3339 timestamp",
                   ev->ce_time);
    ev->id = id;
    ev->id_len = strlen(id);
    ev->type = type;
    ev->type_len = strlen(type);
    if ((rc = check_id(ev)) != SB_EOK)
        return rc;
    if (ev->type_len > MAX_TYPE_LEN)
        return bad(ev, SB_EDECODE, "the event type is too long");
    const sb__header_t *ct = header(m, "content-type");
    ev->content_type = m->content_type;
    if (!ev->content_type && ct && !(ev->content_type = dup(ev, ct->value, ct->value_len)))
        return bad(ev, SB_ENOMEM, "out of memory");
    ev->data = m->body;
    ev->data_len = m->body_len;
    if (m->body_len > 0 && media_is_json(ev->content_type) &&
        (rc = scan_payload(ev, "CloudEvents data", false)) != SB_EOK)
        return rc;
    const sb__header_t *tp = ce_header(m, "traceparent"), *ts = ce_header(m, "tracestate");
    if (!tp) {
        tp = header(m, "traceparent");
        ts = header(m, "tracestate");
    }
    return set_trace(ev, tp ? tp->value : NULL, tp ? tp->value_len : 0, ts ? ts->value : NULL,
                     ts ? ts->value_len : 0);
}

static int decode_ce_structured(const sb__intake_msg_t *m, sb_event_t *ev)
{
    int rc;
    char why[160];
    sb__jindex_t attrs;
    sb__jtype_t root;
    ev->kind = SB__ENV_CE_STRUCTURED;
    if (m->body_len == 0)
        return bad(ev, SB_EDECODE, "empty body: a structured CloudEvent is a JSON object");
    if (sb__jscan(m->body, m->body_len, ev->max_depth, &attrs, &root, why, sizeof why) != SB_EOK)
        return bad(ev, SB_EDECODE, "CloudEvent: %s", why);
    if (root != SB__JT_OBJECT)
        return bad(ev, SB_EDECODE, "a structured CloudEvent must be a JSON object, got %s",
                   jtype_name(root));
    static const char *required[] = {"specversion", "id", "source", "type"};
    const char *vals[4];
    size_t lens[4];
    for (int i = 0; i < 4; i++) {
        int r = member_str(ev, &attrs, required[i], &vals[i], &lens[i]);
        if (r < 0)
            return r == -2 ? SB_ENOMEM : SB_EDECODE;
        if (r == 0 || lens[i] == 0)
            return bad(ev, SB_EDECODE, "CloudEvent lacks the required attribute \"%s\"",
                       required[i]);
    }
    if (strcmp(vals[0], "1.0") != 0)
        return bad(ev, SB_EDECODE, "unsupported CloudEvents specversion \"%.16s\" (1.0 expected)",
                   vals[0]);
    ev->ce_specversion = vals[0];
    ev->id = vals[1];
    ev->id_len = lens[1];
    ev->ce_source = vals[2];
    ev->type = vals[3];
    ev->type_len = lens[3];
    if ((rc = check_id(ev)) != SB_EOK)
        return rc;
    if (ev->type_len > MAX_TYPE_LEN)
        return bad(ev, SB_EDECODE, "the event type is too long");
    size_t n;
    const char *tp = NULL, *ts = NULL;
    size_t tpl = 0, tsl = 0;
    static const char *optional[] = {"subject", "time", "datacontenttype", "traceparent",
                                     "tracestate"};
    const char **slots[] = {&ev->ce_subject, &ev->ce_time, &ev->content_type, &tp, &ts};
    size_t *lslots[] = {&n, &n, &n, &tpl, &tsl};
    for (int i = 0; i < 5; i++) {
        int r = member_str(ev, &attrs, optional[i], slots[i], lslots[i]);
        if (r < 0)
            return r == -2 ? SB_ENOMEM : SB_EDECODE;
    }
    if (ev->ce_time && sb__datetime_parse(ev->ce_time, strlen(ev->ce_time), false, NULL, NULL))
        return bad(ev, SB_EDECODE, "CloudEvents time \"%.64s\" is not an RFC 3339 timestamp",
                   ev->ce_time);
    if (sb__jindex_find(&attrs, "data_base64", 11))
        return bad(ev, SB_EDECODE, "CloudEvents data_base64 is not supported: send JSON data");
    const sb__jfield_t *data = sb__jindex_find(&attrs, "data", 4);
    if (data && data->type != SB__JT_NULL) {
        if (data->type == SB__JT_STRING) {
            /* A JSON string: keep the quotes so the payload stays a JSON text. */
            ev->data = data->val - 1;
            ev->data_len = (size_t)data->val_len + 2;
        } else {
            ev->data = data->val;
            ev->data_len = data->val_len;
        }
        if ((rc = scan_payload(ev, "CloudEvent data", false)) != SB_EOK)
            return rc;
    }
    if (!tp) {
        const sb__header_t *h = header(m, "traceparent"), *hs = header(m, "tracestate");
        if (h) {
            tp = h->value;
            tpl = h->value_len;
            ts = hs ? hs->value : NULL;
            tsl = hs ? hs->value_len : 0;
        }
    }
    return set_trace(ev, tp, tpl, ts, tsl);
}

int sb__envelope_decode(const sb__envelope_opts_t *o, const sb__intake_msg_t *m, sb_event_t *ev)
{
    sb__event_reset(ev);
    ev->msg = m;
    ev->attempt = 1;
    size_t max = o->max_message_size ? o->max_message_size : DEFAULT_MAX_SIZE;
    ev->max_depth = o->max_depth ? o->max_depth : DEFAULT_MAX_DEPTH;
    if (ev->max_depth > SB__JSCAN_MAX_DEPTH)
        ev->max_depth = SB__JSCAN_MAX_DEPTH;
    if (m->body_len > max)
        return bad(ev, SB_ETOOBIG, "message of %zu bytes exceeds intake.max_message_size (%zu)",
                   m->body_len, max);
    const char *ct = m->content_type;
    const sb__header_t *cth = NULL;
    char ctbuf[128];
    if (!ct && (cth = header(m, "content-type")) != NULL) {
        size_t n = cth->value_len < sizeof ctbuf - 1 ? cth->value_len : sizeof ctbuf - 1;
        memcpy(ctbuf, cth->value, n);
        ctbuf[n] = '\0';
        ct = ctbuf;
    }
    if (media_is(ct, "application/cloudevents-batch+json"))
        return bad(ev, SB_EDECODE,
                   "CloudEvents batch mode is not supported: publish one event per message");
    if (media_is(ct, "application/cloudevents+json"))
        return decode_ce_structured(m, ev);
    if (has_ce_headers(m))
        return decode_ce_binary(m, ev);
    return decode_native(o, m, ev);
}
