/* kafka_common.h: shared helpers of the Kafka transport tests (integration and fault):
 * events with unique ids, a switchboard config around the record ledger, and spawning. */
#ifndef KAFKA_COMMON_H
#define KAFKA_COMMON_H

#include <stddef.h>
#include <sys/types.h>

/* n events: ids[i] (a unique id), bodies[i] (a ~300-byte JSON event of `type`)
 * and keys[i] ("k<i % nkeys>"). Caller frees with kt_events_free(). */
typedef struct kt_events {
    char **ids, **bodies, **keys;
    int n;
} kt_events_t;
void kt_events_make(kt_events_t *ev, int n, int nkeys, const char *type); /* NULL type:
                                                                          DataSyncCompletedEvent */
void kt_events_free(kt_events_t *ev);

/* Writes a config: kafka transport on brokers/topic/group, the record handler writing to
 * ledger first, then `handlers` (YAML list items, may be NULL), `kafka_extra` lines under
 * transport.kafka (each line indented by 4 spaces already, may be NULL) and `top_extra`
 * top-level YAML (may be NULL). Idempotency is off unless top_extra sets `idempotency:`.
 * Returns the malloc'd path. */
char *kt_config(const char *brokers, const char *topic, const char *group, const char *ledger,
                const char *kafka_extra, const char *handlers, const char *top_extra);

/* `switchboard run -c cfg`, output appended to log. */
pid_t kt_run(const char *cfg, const char *log);

/* Prints the last lines of a log to stderr (on failure). */
void kt_dump_log(const char *log);

/* Removes the ledger, log and config files and frees the five names (a test's teardown). */
void kt_files_free(char *topic, char *group, char *ledger, char *log, char *cfg);

#endif
