/* kafka_waker.c: see kafka_waker.h. One thread per consumer, asleep on a condition variable
 * until poked; a poke replaces the pending partition list, so any number of pokes during a
 * request costs one more request. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "switchboard/alloc.h"
#include "kafka_waker.h"
#include "log.h"

#define WAKE_TIMEOUT_MS 2000

struct sb__kafka_waker {
    rd_kafka_t *consumer;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rd_kafka_topic_partition_list_t *pending; /* under mu */
    bool stop;                                /* under mu */
    atomic_uint_fast64_t sent;
};

static void *waker_main(void *arg)
{
    sb__kafka_waker_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->pending && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        rd_kafka_topic_partition_list_t *l = w->pending;
        w->pending = NULL;
        pthread_mutex_unlock(&w->mu);
        for (int i = 0; i < l->cnt; i++)
            l->elems[i].offset = RD_KAFKA_OFFSET_END; /* "latest": any timestamp would do */
        rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(w->consumer, l, WAKE_TIMEOUT_MS);
        if (err)
            sb__log(SB_LOG_DEBUG, NULL, "kafka: fetcher wake-up: %s", rd_kafka_err2str(err));
        atomic_fetch_add(&w->sent, 1);
        rd_kafka_topic_partition_list_destroy(l);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

sb__kafka_waker_t *sb__kafka_waker_new(rd_kafka_t *consumer)
{
    sb__kafka_waker_t *w = sb_calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->consumer = consumer;
    atomic_init(&w->sent, 0);
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto err_free;
    if (pthread_cond_init(&w->cv, NULL) != 0)
        goto err_mu;
    if (pthread_create(&w->thread, NULL, waker_main, w) != 0)
        goto err_cv;
    return w;
err_cv:
    pthread_cond_destroy(&w->cv);
err_mu:
    pthread_mutex_destroy(&w->mu);
err_free:
    sb_free(w);
    return NULL;
}

void sb__kafka_waker_poke(sb__kafka_waker_t *w, const rd_kafka_topic_partition_list_t *parts)
{
    if (!w || !parts || parts->cnt == 0)
        return;
    pthread_mutex_lock(&w->mu);
    /* Pokes not sent yet add up: one request wakes them all. */
    rd_kafka_topic_partition_list_t *old = w->pending;
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(parts->cnt + (old ? old->cnt : 0));
    if (!l) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    for (int i = 0; old && i < old->cnt; i++)
        rd_kafka_topic_partition_list_add(l, old->elems[i].topic, old->elems[i].partition);
    for (int i = 0; i < parts->cnt; i++)
        if (!rd_kafka_topic_partition_list_find(l, parts->elems[i].topic,
                                                parts->elems[i].partition))
            rd_kafka_topic_partition_list_add(l, parts->elems[i].topic, parts->elems[i].partition);
    w->pending = l;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (old)
        rd_kafka_topic_partition_list_destroy(old);
}

uint64_t sb__kafka_waker_count(const sb__kafka_waker_t *w)
{
    return w ? (uint64_t)atomic_load(&((sb__kafka_waker_t *)w)->sent) : 0;
}

void sb__kafka_waker_destroy(sb__kafka_waker_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    if (w->pending)
        rd_kafka_topic_partition_list_destroy(w->pending);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    sb_free(w);
}
