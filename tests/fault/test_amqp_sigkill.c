/* The consumer is SIGKILLed mid-stream and started again: none of 5,000 events is lost
 * (every id recorded at least once; unacked ones come back from the broker) and the queue
 * ends empty. */
#include "test_amqp_volume_common.h"

int main(void)
{
    volume_run_t r;
    volume_setup(&r, 5000, "kill", ", fsync: true");
    volume_spawn(&r);
    SBT_CHECK_MSG(sbt_wait_lines(r.ledger, 1000, 30000), "no progress (log: %s)", r.log);
    int st = sbt_stop(r.pid, SIGKILL, 5000);
    SBT_CHECK(st == 128 + SIGKILL);
    size_t at_kill = sbt_count_lines(r.ledger);
    printf("killed after %zu events\n", at_kill);
    SBT_CHECK_MSG(at_kill < r.n, "the consumer finished before the kill: not a mid-stream test");
    volume_spawn(&r);
    volume_finish(&r, 60000);
    printf("ok: SIGKILL mid-stream lost nothing\n");
    return 0;
}
