/* kafka_waker.h: wakes librdkafka's fetcher after its local queue limit stopped it.
 *
 * librdkafka 2.0.2 stops fetching a partition whose local queue holds queued.min.messages
 * or queued.max.messages.kbytes, and decides again only when its broker thread next wakes:
 * on a socket event, an operation, or its 1 s tick. When every partition of a broker is
 * stopped nothing else wakes it, so a consumer slower than the fetcher idles up to ~1 s
 * each time it drains the queue (FACTS.md measured ~0.9 s). Any request enqueued on that
 * broker thread makes it re-run the fetch decision at once; a ListOffsets for the
 * partitions (rd_kafka_offsets_for_times, one request per leader) is such a request and
 * changes no consumer state.
 *
 * The request is synchronous, so it runs on a thread of its own: sb__kafka_waker_poke()
 * never blocks the caller, and pokes made while one is running coalesce into one more. It
 * does not decide when to poke (the transport does) and it wakes nothing on librdkafka
 * versions that need no waking (it is harmless there). */
#ifndef SB_KAFKA_WAKER_H
#define SB_KAFKA_WAKER_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

typedef struct sb__kafka_waker sb__kafka_waker_t;

/* A waker for `consumer` (borrowed: it must outlive the waker). NULL when out of memory or
 * when the thread cannot start (then nothing is woken; consuming still works). */
sb__kafka_waker_t *sb__kafka_waker_new(rd_kafka_t *consumer);

/* Asks for a wake-up of the brokers leading `parts` (copied; topic and partition are used).
 * Returns at once. */
void sb__kafka_waker_poke(sb__kafka_waker_t *w, const rd_kafka_topic_partition_list_t *parts);

/* Wake-up requests sent so far (for logs and tests). */
uint64_t sb__kafka_waker_count(const sb__kafka_waker_t *w);

/* Stops and joins the thread (waits for a request in progress, at most its timeout).
 * NULL is a no-op. */
void sb__kafka_waker_destroy(sb__kafka_waker_t *w);

#endif
