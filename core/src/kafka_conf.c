/* kafka_conf.c: applying transport.kafka.properties to librdkafka; see kafka_conf.h. */
#include <stdio.h>
#include <string.h>

#include "switchboard/error.h"
#include "errf.h"
#include "kafka_conf.h"

int sb__kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                       size_t n)
{
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK)
        return sb__errf(errstr, n, SB_ECONFIG, "transport.kafka.properties.%s: %s", key, err);
    return SB_EOK;
}

int sb__kafka_conf_apply(const json_t *props, rd_kafka_conf_t *conf, const char *which,
                         char *errstr, size_t n)
{
    const char *k;
    json_t *v;
    size_t wl = strlen(which);
    json_object_foreach((json_t *)props, k, v)
    {
        const char *key = k;
        if (!strncmp(k, "consumer.", 9) || !strncmp(k, "producer.", 9)) {
            if (strncmp(k, which, wl) || k[wl] != '.')
                continue;
            key = k + wl + 1;
        }
        char num[64];
        const char *val = num;
        if (json_is_string(v))
            val = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_boolean(v))
            val = json_is_true(v) ? "true" : "false";
        else if (json_is_real(v))
            snprintf(num, sizeof num, "%g", json_real_value(v));
        else
            return sb__errf(errstr, n, SB_ECONFIG,
                            "transport.kafka.properties.%s: expected a string", k);
        int rc = sb__kafka_conf_set(conf, key, val, errstr, n);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

bool sb__kafka_conf_user_set(const json_t *props, const char *which, const char *key)
{
    char scoped[128];
    snprintf(scoped, sizeof scoped, "%s.%s", which, key);
    return json_object_get(props, key) || json_object_get(props, scoped);
}
