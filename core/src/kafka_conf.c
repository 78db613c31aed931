/* kafka_conf.c: applying transport.kafka.properties to librdkafka; see kafka_conf.h. */
#include <stdio.h>
#include <string.h>

#include "switchboard/error.h"
#include "errf.h"
#include "kafka_conf.h"
#include "log.h"

/* The first librdkafka whose SCRAM exchange Kafka 4 brokers accept: before 2.6.1 the
 * client-final-message carries the client nonce twice (librdkafka#4895); Kafka 3.8.1 to 3.9
 * tolerate it, Kafka 4 answers "invalid credentials". */
#define SCRAM_FIXED_VERSION 0x020601ff

void sb__kafka_conf_warn(rd_kafka_conf_t *conf)
{
    char mech[64];
    size_t len = sizeof mech;
    if (rd_kafka_conf_get(conf, "sasl.mechanisms", mech, &len) != RD_KAFKA_CONF_OK)
        return;
    if (strncmp(mech, "SCRAM-", 6) == 0 && rd_kafka_version() < SCRAM_FIXED_VERSION)
        sb__log(SB_LOG_WARN, NULL,
                "kafka: sasl.mechanism %s with librdkafka %s: Kafka 4 brokers refuse its SCRAM "
                "exchange as invalid credentials (librdkafka#4895, fixed in 2.6.1); run "
                "switchboard with librdkafka 2.6.1 or later, or use PLAIN over SSL",
                mech, rd_kafka_version_str());
}

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

/* librdkafka takes any sasl.mechanisms string and refuses an unknown one only when a
 * client is created; config check says so first. */
static int check_mechanism(rd_kafka_conf_t *conf, char *errstr, size_t n)
{
    static const char *const known[] = {"PLAIN",  "SCRAM-SHA-256", "SCRAM-SHA-512",
                                        "GSSAPI", "OAUTHBEARER",   NULL};
    char mech[64];
    size_t len = sizeof mech;
    if (rd_kafka_conf_get(conf, "sasl.mechanisms", mech, &len) != RD_KAFKA_CONF_OK)
        return SB_EOK;
    for (int i = 0; known[i]; i++)
        if (!strcmp(mech, known[i]))
            return SB_EOK;
    return sb__errf(errstr, n, SB_ECONFIG,
                    "transport.kafka.properties.sasl.mechanism: SASL mechanism \"%s\" is not one "
                    "of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI, OAUTHBEARER",
                    mech);
}

int sb__kafka_conf_check(const json_t *props, bool warn, char *errstr, size_t n)
{
    static const char *const clients[] = {"consumer", "producer"};
    for (size_t i = 0; i < sizeof clients / sizeof *clients; i++) {
        rd_kafka_conf_t *probe = rd_kafka_conf_new();
        if (!probe)
            return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        int rc = sb__kafka_conf_apply(props, probe, clients[i], errstr, n);
        if (rc == SB_EOK)
            rc = check_mechanism(probe, errstr, n);
        if (rc == SB_EOK && warn && i == 0)
            sb__kafka_conf_warn(probe); /* the consumer's settings */
        rd_kafka_conf_destroy(probe);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}
