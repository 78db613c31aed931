/* kafka_produce.h: the producing side of the Kafka transport: retry copies to the retry
 * topic, dead letters to the DLQ topic, follow-up events to the publish topic, and the
 * pending operations that complete them (delivery reports, deferred callbacks).
 *
 * Everything goes through the transport's one idempotent producer (acks=all, kafka_client.c)
 * and completes on the loop thread: delivery reports are served when the transport polls
 * the producer's main queue and deferred callbacks run, both in sb__kafka_produce_poll().
 * See kafka_produce.c for the headers a copy carries.
 *
 * Not here: creating the producer (kafka_client.h), consuming and holding retry partitions
 * until due, in-place retries (transport_kafka.c).
 *
 * Loop affinity: the transport's loop thread; sb__kafka_produce_close() blocks. */
#ifndef SB_KAFKA_PRODUCE_H
#define SB_KAFKA_PRODUCE_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "kafka_tx.h"
#include "transport.h"

/* The producer's delivery-report callback (sb__kafka_client_opts_t.dr_cb). A successful
 * retry copy or dead letter settles its original (sb__kafka_settle_done); a failure leaves
 * it in flight. Then the operation's callback runs with SB_EOK or SB_EIO; none once the
 * transport is destroying. */
void sb__kafka_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);

/* Queues cb(arg, SB_EOK) for the next sb__kafka_produce_poll(), so a settlement never
 * calls back synchronously. SB_EOK, or SB_ENOMEM (cb is never called). */
int sb__kafka_complete_later(kafkatx_t *tx, sb__tx_done_cb cb, void *arg);

/* Serves the producer's main queue (delivery reports, logs; no wait), then runs and frees the
 * queued completions, in order. */
void sb__kafka_produce_poll(kafkatx_t *tx);

/* retry_later with retry "topic": produces m's copy to <base topic><retry suffix>, due in
 * delay_ms, as attempt next_attempt. m stays in flight until the delivery report. SB_EOK,
 * SB_ENOMEM, SB_EBUSY (producer queue full) or SB_EIO; on failure cb is never called. */
int sb__kafka_retry_copy(kafkatx_t *tx, kmsg_t *m, uint64_t delay_ms, unsigned next_attempt,
                         sb__tx_done_cb cb, void *arg);

/* The transport's dead_letter and publish ops (transport.h), for kafka_ops. */
int sb__kafka_dead_letter(sb__transport_t *t, sb__delivery_t *d, const sb__dl_meta_t *meta,
                          sb__tx_done_cb cb, void *arg);
int sb__kafka_publish(sb__transport_t *t, const sb__outmsg_t *o, sb__tx_done_cb cb, void *arg);

/* At destroy, once tx->destroying is set: flushes the producer (up to 10 s, then purges what
 * is left), destroys it and its queue, and frees the queued completions without calling
 * them. */
void sb__kafka_produce_close(kafkatx_t *tx);

#endif
