/* kafka_conf.h: transport.kafka.properties applied to a librdkafka configuration, shared by
 * the Kafka transport and the Kafka DLQ tool so both read the same properties the same way:
 * plain keys go to every client, "consumer.<key>" / "producer.<key>" only to that one. */
#ifndef SB_KAFKA_CONF_H
#define SB_KAFKA_CONF_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

/* rd_kafka_conf_set with an error naming the property. SB_EOK or SB_ECONFIG. */
int sb__kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                       size_t errstr_size);

/* Applies the properties meant for `which` ("consumer" or "producer"); scalar JSON values are
 * turned into librdkafka's strings. SB_EOK or SB_ECONFIG naming the property. */
int sb__kafka_conf_apply(const json_t *props, rd_kafka_conf_t *conf, const char *which,
                         char *errstr, size_t errstr_size);

/* Warns about settings the librdkafka loaded at run time (not the one built against:
 * switchboard runs unchanged on a newer librdkafka.so.1) cannot serve as the user expects:
 * today SCRAM before 2.6.1, which Kafka 4 brokers refuse. Call once per consumer. */
void sb__kafka_conf_warn(rd_kafka_conf_t *conf);

/* Applies the properties to throw-away consumer and producer configurations, so a typo is
 * refused before anything connects; with warn, also sb__kafka_conf_warn(). SB_EOK or the
 * error of the first property librdkafka refuses. */
int sb__kafka_conf_check(const json_t *props, bool warn, char *errstr, size_t errstr_size);

/* True when the user set `key` for `which` (plainly or scoped), so defaults stay out. */
bool sb__kafka_conf_user_set(const json_t *props, const char *which, const char *key);

#endif
