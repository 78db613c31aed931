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

/* True when the user set `key` for `which` (plainly or scoped), so defaults stay out. */
bool sb__kafka_conf_user_set(const json_t *props, const char *which, const char *key);

#endif
