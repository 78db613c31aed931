/* Graceful shutdown under real signals, in a child process:
 *   1. SIGTERM (and SIGINT): intake stops, in-flight work drains over ~300 ms, finish runs
 *      after it reached zero, exit 0;
 *   2. two SIGTERMs: the second exits at once, non-zero, without finish;
 *   3. in-flight never drains, shutdown_timeout 500 ms: exit 1 after ~0.5 s.
 * The child reports through a pipe, one byte per step ('R' loop ready, 'S' stop_intake,
 * 'Z' in-flight hit zero, 'F' finish with nothing in flight, 'X' finish with work left) and
 * through its exit status. The parent only acts on what it read, and waits with deadlines. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "runtime.h"
#include "sbtest.h"

/* ---- child ------------------------------------------------------------------------------ */

struct child {
    sb__runtime_t *rt;
    int fd;
    size_t inflight;
    int drains;
    sb__timer_t *ready, *drain;
};

static void say(struct child *c, char what)
{
    ssize_t n;
    do
        n = write(c->fd, &what, 1);
    while (n < 0 && errno == EINTR);
}

static void on_ready(sb__timer_t *t, void *arg)
{
    say(arg, 'R');
}

static void on_drain(sb__timer_t *t, void *arg)
{
    struct child *c = arg;
    if (c->inflight > 0 && --c->inflight == 0) {
        say(c, 'Z');
        sb__runtime_poke(c->rt); /* re-check now rather than at the next periodic check */
    }
}

static void c_stop_intake(void *arg)
{
    struct child *c = arg;
    say(c, 'S');
    if (c->drains)
        sb__timer_start(c->drain, 30, true); /* 10 messages, one per 30 ms: ~300 ms */
}

static size_t c_inflight(void *arg)
{
    return ((struct child *)arg)->inflight;
}

static void c_finish(void *arg)
{
    struct child *c = arg;
    say(c, c->inflight == 0 ? 'F' : 'X');
    sb__timer_stop(c->drain);
}

static _Noreturn void child_main(int fd, int drains, uint64_t timeout_ms)
{
    static const sb__runtime_participant_t part = {
        .name = "child", .stop_intake = c_stop_intake, .inflight = c_inflight, .finish = c_finish};
    struct child c = {.fd = fd, .inflight = 10, .drains = drains};
    sb__runtime_t *rt;
    char err[256];
    if (sb__runtime_new(&rt, timeout_ms, err, sizeof err) != 0) {
        fprintf(stderr, "child: %s\n", err);
        _exit(100);
    }
    c.rt = rt;
    c.ready = sb__runtime_timer_new(rt, on_ready, &c);
    c.drain = sb__runtime_timer_new(rt, on_drain, &c);
    if (!c.ready || !c.drain || sb__runtime_add_participant(rt, &part, &c) != 0)
        _exit(101);
    sb__timer_start(c.ready, 0, false); /* 'R' once the loop runs */
    int status = sb__runtime_run(rt);
    sb__timer_destroy(c.ready);
    sb__timer_destroy(c.drain);
    sb__runtime_destroy(rt);
    close(fd);
    _exit(status);
}

/* ---- parent ----------------------------------------------------------------------------- */

struct run {
    pid_t pid;
    int fd;
    char seen[64];
    size_t nseen;
    int eof;
};

static void start(struct run *r, int drains, uint64_t timeout_ms)
{
    int p[2];
    SBT_CHECK(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    SBT_CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        child_main(p[1], drains, timeout_ms);
    }
    close(p[1]);
    memset(r, 0, sizeof *r);
    r->pid = pid;
    r->fd = p[0];
}

/* Reads the child's reports until `want` arrives (or EOF when want is 0). False on
 * deadline, or on EOF before `want`. */
static int read_until(struct run *r, char want, int timeout_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (want && memchr(r->seen, want, r->nseen))
            return 1;
        if (r->eof)
            return want == 0;
        uint64_t now = sbt_now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)(deadline - now));
        if (n < 0 && errno == EINTR)
            continue;
        SBT_CHECK(n >= 0);
        if (n == 0)
            continue;
        char buf[16];
        ssize_t got = read(r->fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        SBT_CHECK(got >= 0);
        if (got == 0) {
            r->eof = 1;
            continue;
        }
        for (ssize_t i = 0; i < got && r->nseen < sizeof r->seen - 1; i++)
            r->seen[r->nseen++] = buf[i];
    }
}

/* Waits for the child to exit (its pipe reached EOF first) and returns its wait status. */
static int reap(struct run *r, int timeout_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    int st;
    for (;;) {
        pid_t w = waitpid(r->pid, &st, WNOHANG);
        if (w == r->pid)
            break;
        SBT_CHECK(w == 0 || errno == EINTR);
        if (sbt_now_ms() >= deadline) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &st, 0);
            sbt_fail(__FILE__, __LINE__, "child %d did not exit in time", (int)r->pid);
        }
        struct timespec ts = {0, 2 * 1000 * 1000}; /* polling waitpid, not synchronising */
        nanosleep(&ts, NULL);
    }
    close(r->fd);
    return st;
}

static size_t pos(const struct run *r, char c)
{
    const char *p = memchr(r->seen, c, r->nseen);
    return p ? (size_t)(p - r->seen) : SIZE_MAX;
}

static void graceful(int signo)
{
    struct run r;
    start(&r, 1, 10000);
    SBT_CHECK_MSG(read_until(&r, 'R', 10000), "child never became ready");
    uint64_t t0 = sbt_now_ms();
    SBT_CHECK(kill(r.pid, signo) == 0);
    SBT_CHECK_MSG(read_until(&r, 0, 10000), "child did not finish: saw \"%s\"", r.seen);
    uint64_t elapsed = sbt_now_ms() - t0;
    int st = reap(&r, 5000);
    SBT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x, saw \"%s\"", st, r.seen);
    SBT_CHECK_MSG(pos(&r, 'S') < pos(&r, 'Z') && pos(&r, 'Z') < pos(&r, 'F') &&
                      pos(&r, 'X') == SIZE_MAX,
                  "wrong order: \"%s\"", r.seen);
    SBT_CHECK_MSG(elapsed >= 250 && elapsed < 5000, "drain took %llu ms",
                  (unsigned long long)elapsed);
    printf("ok: %s drains in-flight work (%llu ms) then exits 0\n",
           signo == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)elapsed);
}

static void second_signal(void)
{
    struct run r;
    start(&r, 0, 10000); /* never drains: only the second signal can end it soon */
    SBT_CHECK_MSG(read_until(&r, 'R', 10000), "child never became ready");
    SBT_CHECK(kill(r.pid, SIGTERM) == 0);
    /* Wait until the first one was handled, so the kernel cannot merge the two. */
    SBT_CHECK_MSG(read_until(&r, 'S', 5000), "stop_intake never ran: saw \"%s\"", r.seen);
    uint64_t t0 = sbt_now_ms();
    SBT_CHECK(kill(r.pid, SIGTERM) == 0);
    SBT_CHECK_MSG(read_until(&r, 0, 5000), "child did not exit: saw \"%s\"", r.seen);
    uint64_t elapsed = sbt_now_ms() - t0;
    int st = reap(&r, 5000);
    SBT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGTERM, "status 0x%x", st);
    SBT_CHECK_MSG(pos(&r, 'F') == SIZE_MAX && pos(&r, 'X') == SIZE_MAX,
                  "finish ran after a second signal: \"%s\"", r.seen);
    SBT_CHECK_MSG(elapsed < 1000, "second signal took %llu ms", (unsigned long long)elapsed);
    printf("ok: a second SIGTERM exits at once with %d, without finish (%llu ms)\n",
           WEXITSTATUS(st), (unsigned long long)elapsed);
}

static void timeout_expires(void)
{
    struct run r;
    start(&r, 0, 500);
    SBT_CHECK_MSG(read_until(&r, 'R', 10000), "child never became ready");
    uint64_t t0 = sbt_now_ms();
    SBT_CHECK(kill(r.pid, SIGTERM) == 0);
    SBT_CHECK_MSG(read_until(&r, 0, 10000), "child did not exit: saw \"%s\"", r.seen);
    uint64_t elapsed = sbt_now_ms() - t0;
    int st = reap(&r, 5000);
    SBT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status 0x%x", st);
    SBT_CHECK_MSG(pos(&r, 'X') != SIZE_MAX, "finish did not run on timeout: \"%s\"", r.seen);
    SBT_CHECK_MSG(elapsed >= 450 && elapsed < 3000, "timeout took %llu ms",
                  (unsigned long long)elapsed);
    printf("ok: in-flight work that never settles: exit 1 after %llu ms\n",
           (unsigned long long)elapsed);
}

int main(void)
{
    sb__log_configure(SB_LOG_INFO, SB__LOG_TEXT, NULL); /* the children's lines, readable */
    graceful(SIGTERM);
    graceful(SIGINT);
    second_signal();
    timeout_expires();
    return 0;
}
