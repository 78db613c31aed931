/* Redis through hiredis's async API on a libevent loop: SET NX claims a key once, a second
 * SET NX is refused, GET reads the value back. Nothing blocks the loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "sbtest.h"

struct state {
    struct event_base *base;
    int step;
    char *key;
    int failed;
};

static void done(struct state *s, int ok, const char *why)
{
    if (!ok) {
        fprintf(stderr, "step %d: %s\n", s->step, why);
        s->failed = 1;
    }
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct state *s = priv;
    redisReply *reply = r;
    if (!reply) {
        done(s, 0, ac->errstr);
        event_base_loopbreak(s->base);
        return;
    }
    switch (s->step++) {
    case 0: /* first SET NX wins */
        done(s, reply->type == REDIS_REPLY_STATUS && !strcmp(reply->str, "OK"),
             "first SET NX did not return OK");
        break;
    case 1: /* second SET NX loses */
        done(s, reply->type == REDIS_REPLY_NIL, "second SET NX did not return nil");
        break;
    case 2:
        done(s, reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, "owner-1"),
             "GET did not return the first owner");
        break;
    case 3: /* PTTL shows the lease */
        done(s, reply->type == REDIS_REPLY_INTEGER && reply->integer > 0 && reply->integer <= 60000,
             "no lease on the key");
        break;
    case 4:
        done(s, reply->type == REDIS_REPLY_INTEGER && reply->integer == 1, "DEL failed");
        redisAsyncDisconnect(ac);
        break;
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        fprintf(stderr, "connect: %s\n", ac->errstr);
        exit(1);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct state *s = ac->data;
    event_base_loopbreak(s->base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    sbt_fail(__FILE__, __LINE__, "Redis exchange did not finish in time");
}

int main(void)
{
    const char *url = sbt_service("SB_TEST_REDIS_URL", "Redis");
    char host[128] = "127.0.0.1";
    int port = 6379;
    SBT_CHECK(sscanf(url, "redis://%127[^:]:%d", host, &port) >= 1);

    struct state s = {.base = event_base_new(), .key = sbt_unique_name("sbt:idem")};
    redisAsyncContext *ac = redisAsyncConnect(host, port);
    SBT_CHECK(ac != NULL && ac->err == 0);
    ac->data = &s;
    SBT_CHECK(redisLibeventAttach(ac, s.base) == REDIS_OK);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);

    /* Pipelined: all five commands go out before any reply is read. */
    redisAsyncCommand(ac, on_reply, &s, "SET %s %s NX PX %d", s.key, "owner-1", 60000);
    redisAsyncCommand(ac, on_reply, &s, "SET %s %s NX PX %d", s.key, "owner-2", 60000);
    redisAsyncCommand(ac, on_reply, &s, "GET %s", s.key);
    redisAsyncCommand(ac, on_reply, &s, "PTTL %s", s.key);
    redisAsyncCommand(ac, on_reply, &s, "DEL %s", s.key);

    struct event *t = evtimer_new(s.base, on_timeout, NULL);
    struct timeval tv = {10, 0};
    evtimer_add(t, &tv);
    event_base_dispatch(s.base);
    event_free(t);
    event_base_free(s.base);
    SBT_CHECK(!s.failed);
    SBT_CHECK_MSG(s.step == 5, "only %d of 5 replies arrived", s.step);
    printf("ok: SET NX / GET through hiredis async on libevent (%s:%d)\n", host, port);
    free(s.key);
    return 0;
}
