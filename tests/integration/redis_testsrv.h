/* redis_testsrv.h: a private redis-server for tests that must kill, restart or configure
 * one (password, unix socket), so the shared instance is never touched. Header-only
 * (static functions) for test_redis_store.c and fault/test_redis_outage.c.
 *
 * The server runs in the foreground as our child (fork/exec), without persistence, in a
 * temporary directory, and is stopped by PID. */
#ifndef REDIS_TESTSRV_H
#define REDIS_TESTSRV_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

typedef struct testsrv {
    pid_t pid;
    int port;
    char dir[64];
    char sock[128]; /* unix socket path ("" without) */
    char pass[64];  /* requirepass ("" without) */
} testsrv_t;

static int testsrv_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool testsrv_available(void)
{
    return access("/usr/bin/redis-server", X_OK) == 0 ||
           access("/usr/local/bin/redis-server", X_OK) == 0;
}

/* PING answers (PONG, or NOAUTH when a password is required). */
static bool testsrv_ping(const testsrv_t *t)
{
    struct timeval tv = {0, 200 * 1000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", t->port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && (r->type == REDIS_REPLY_STATUS ||
                   (r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOAUTH")));
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Starts the server (on t->port if set, else a free port; in t->dir if set, else a new temp
 * dir). t->pass and want_sock are applied. true once it answers PING. */
static bool testsrv_start(testsrv_t *t, bool want_sock)
{
    if (!t->dir[0]) {
        snprintf(t->dir, sizeof t->dir, "/tmp/sb-redis-XXXXXX");
        if (!mkdtemp(t->dir))
            return false;
    }
    if (!t->port && (t->port = testsrv_free_port()) <= 0)
        return false;
    if (want_sock)
        snprintf(t->sock, sizeof t->sock, "%s/redis.sock", t->dir);
    char port[16];
    snprintf(port, sizeof port, "%d", t->port);
    const char *argv[24];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = t->dir;
    if (t->pass[0]) {
        argv[n++] = "--requirepass";
        argv[n++] = t->pass;
    }
    if (t->sock[0]) {
        argv[n++] = "--unixsocket";
        argv[n++] = t->sock;
        argv[n++] = "--unixsocketperm";
        argv[n++] = "700";
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        char log[128];
        snprintf(log, sizeof log, "%s/redis.log", t->dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    t->pid = pid;
    for (int i = 0; i < 100; i++) {
        if (testsrv_ping(t))
            return true;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            t->pid = 0;
            return false;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Sends sig (SIGKILL: a crash) and reaps the server. */
static void testsrv_stop(testsrv_t *t, int sig)
{
    if (t->pid <= 0)
        return;
    kill(t->pid, sig);
    int st;
    waitpid(t->pid, &st, 0);
    t->pid = 0;
}

/* Stops the server and removes its directory. */
static void testsrv_cleanup(testsrv_t *t)
{
    testsrv_stop(t, SIGKILL);
    if (!t->dir[0])
        return;
    char p[192];
    const char *files[] = {"redis.log", "redis.sock", "dump.rdb", NULL};
    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", t->dir, files[i]);
        unlink(p);
    }
    rmdir(t->dir);
}

#endif
