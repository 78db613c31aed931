/* kafka_common.c: see kafka_common.h. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "kafka_common.h"
#include "sbtest.h"

void kt_events_make(kt_events_t *ev, int n, int nkeys, const char *type)
{
    ev->n = n;
    ev->ids = calloc((size_t)n, sizeof *ev->ids);
    ev->bodies = calloc((size_t)n, sizeof *ev->bodies);
    ev->keys = calloc((size_t)n, sizeof *ev->keys);
    SBT_CHECK(ev->ids && ev->bodies && ev->keys);
    char *run = sbt_unique_name("ev");
    for (int i = 0; i < n; i++) {
        char id[96], body[512], key[32];
        snprintf(id, sizeof id, "%s-%06d", run, i);
        snprintf(body, sizeof body,
                 "{\"Id\":\"%s\",\"EventType\":\"%s\","
                 "\"CreationDate\":\"2024-05-01T10:00:00Z\",\"JobId\":\"job-%d\","
                 "\"SourceSystem\":\"CRM\",\"TargetSystem\":\"DataWarehouse\","
                 "\"RecordsProcessed\":%d,\"Seq\":%d}",
                 id, type ? type : "DataSyncCompletedEvent", i, i * 7, i);
        snprintf(key, sizeof key, "k%d", nkeys > 0 ? i % nkeys : i);
        ev->ids[i] = strdup(id);
        ev->bodies[i] = strdup(body);
        ev->keys[i] = strdup(key);
        SBT_CHECK(ev->ids[i] && ev->bodies[i] && ev->keys[i]);
    }
    free(run);
}

void kt_events_free(kt_events_t *ev)
{
    for (int i = 0; i < ev->n; i++) {
        free(ev->ids[i]);
        free(ev->bodies[i]);
        free(ev->keys[i]);
    }
    free(ev->ids);
    free(ev->bodies);
    free(ev->keys);
}

char *kt_config(const char *brokers, const char *topic, const char *group, const char *ledger,
                const char *kafka_extra, const char *handlers, const char *top_extra)
{
    size_t cap = 8192 + (kafka_extra ? strlen(kafka_extra) : 0) +
                 (handlers ? strlen(handlers) : 0) + (top_extra ? strlen(top_extra) : 0);
    char *y = malloc(cap);
    SBT_CHECK(y != NULL);
    snprintf(y, cap,
             "service: {name: sbt-kafka, shutdown_timeout: 20s}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: kafka\n"
             "  kafka:\n"
             "    brokers: \"%s\"\n"
             "    group_id: %s\n"
             "    topics: [%s]\n"
             "%s"
             "handlers:\n"
             "  - name: rec\n"
             "    module: record\n"
             "    bind: [\"#\"]\n"
             "    config: {path: %s}\n"
             "%s"
             "%s"
             "admin: {listen: \"\"}\n"
             "%s",
             brokers, group, topic, kafka_extra ? kafka_extra : "", ledger,
             handlers ? handlers : "",
             top_extra && strstr(top_extra, "idempotency:") ? "" : "idempotency: {store: none}\n",
             top_extra ? top_extra : "");
    char *path = sbt_write_temp(y, ".yaml");
    free(y);
    return path;
}

pid_t kt_run(const char *cfg, const char *log)
{
    const char *args[] = {"run", "-c", cfg, NULL};
    return sbt_spawn_switchboard(args, NULL, log);
}

void kt_dump_log(const char *log)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    char line[1024];
    char ring[40][1024];
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        memcpy(ring[n % 40], line, sizeof line);
        n++;
    }
    fclose(f);
    fprintf(stderr, "---- last lines of %s\n", log);
    for (size_t i = n > 40 ? n - 40 : 0; i < n; i++)
        fputs(ring[i % 40], stderr);
}

void kt_files_free(char *topic, char *group, char *ledger, char *log, char *cfg)
{
    unlink(ledger);
    unlink(log);
    unlink(cfg);
    free(cfg);
    free(topic);
    free(group);
    free(ledger);
    free(log);
}
