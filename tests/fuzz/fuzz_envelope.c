/* Fuzz target: the envelope decoder and the JSON scanner under it.
 *
 * Byte 0 picks the envelope (native over AMQP, native over Kafka with headers, CloudEvents
 * binary, CloudEvents structured); the rest is the body. Beyond "no crash, no leak", the
 * scanner is cross-checked against jansson: whatever one accepts the other must accept
 * (jansson may additionally refuse duplicate keys below the top level), and every indexed
 * top-level member must equal what jansson parsed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/error.h"
#include "envelope.h"
#include "jscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cross_check(const char *buf, size_t len)
{
    sb__jindex_t idx;
    sb__jtype_t root;
    char err[160];
    int rc = sb__jscan(buf, len, SB__JSCAN_MAX_DEPTH, &idx, &root, err, sizeof err);
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (rc == SB_EOK && !j)
        abort(); /* we accepted what jansson refuses */
    if (rc != SB_EOK) {
        /* jansson accepts duplicate keys without the flag (we refuse top-level ones) and
         * stops reading at a raw NUL byte (we refuse what follows). */
        if (j && !strstr(err, "duplicate key") && !strstr(err, "number too long") &&
            !memchr(buf, 0, len))
            abort();
        json_decref(j);
        return;
    }
    if (json_is_object(j) && !idx.overflow) {
        if (idx.n != json_object_size(j))
            abort();
        for (unsigned i = 0; i < idx.n; i++) {
            char key[4096];
            if (idx.f[i].key_len >= sizeof key)
                continue;
            size_t kl = sb__junescape(idx.f[i].key, idx.f[i].key_len, key);
            json_t *v = json_object_getn(j, key, kl);
            if (!v)
                abort();
            const char *vs = idx.f[i].val;
            size_t vl = idx.f[i].val_len;
            if (idx.f[i].type == SB__JT_STRING) {
                vs--;
                vl += 2;
            }
            json_t *w = json_loadb(vs, vl, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!w || !json_equal(v, w))
                abort();
            json_decref(w);
        }
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    cross_check(body, len);

    static const sb__header_t kafka[] = {
        {.name = "event-type", .value = "DataSyncCompletedEvent", .name_len = 10, .value_len = 22},
        {.name = "traceparent",
         .value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         .name_len = 11,
         .value_len = 55}};
    static const sb__header_t ce[] = {
        {.name = "ce_specversion", .value = "1.0", .name_len = 14, .value_len = 3},
        {.name = "ce_id", .value = "id-1", .name_len = 5, .value_len = 4},
        {.name = "ce_source", .value = "/fuzz", .name_len = 9, .value_len = 5},
        {.name = "ce_type", .value = "T", .name_len = 7, .value_len = 1}};
    sb__intake_msg_t m = {.body = body, .body_len = len};
    switch (data[0] & 3) {
    case 0:
        m.routing_key = "DataSyncCompletedEvent";
        m.message_id = "mid";
        break;
    case 1:
        m.topic = "t";
        m.headers = kafka;
        m.n_headers = 2;
        break;
    case 2:
        m.topic = "t";
        m.headers = ce;
        m.n_headers = 4;
        break;
    case 3:
        m.routing_key = "x";
        m.content_type = "application/cloudevents+json";
        break;
    }
    sb__envelope_opts_t o = {
        .max_depth = (data[0] & 4) ? 2048 : 64, .id_hash = data[0] & 8, .type_field = "EventType"};
    static sb_event_t ev;
    static int inited;
    if (!inited) {
        sb__event_init(&ev);
        inited = 1;
    }
    if (sb__envelope_decode(&o, &m, &ev) == SB_EOK) {
        const char *s;
        int64_t i;
        double d;
        bool b;
        if (!ev.id || !ev.type || strlen(ev.id) != ev.id_len)
            abort();
        sb__event_get_str(&ev, "JobId", &s, NULL);
        sb__event_get_int(&ev, "RecordsProcessed", &i);
        sb__event_get_double(&ev, "RecordsProcessed", &d);
        sb__event_get_bool(&ev, "Flag", &b);
        sb__event_get_time(&ev, "CompletedAt", &i);
        sb__event_json(&ev);
    }
    sb__event_reset(&ev);
    return 0;
}
