/* bench_router: ns per match of the trie router against a naive linear scan, with 10 to
 * 10,000 bindings and keys of 1, 3 and 6 words.
 *
 * Bindings are what a deployment registers: "Svc<N>.Entity<M>.*", "Svc<N>.#",
 * "Svc<N>.Entity<M>.Created", event type names "DataSyncCompletedEvent<N>", and a few
 * catch-alls ("#", "#.Failed", "*.Entity0.#"). Keys mostly hit existing bindings. The naive
 * matcher gets every advantage (patterns split once, ahead of time) and scans every binding.
 * Both must agree on every key before anything is timed. Not a ctest test: run it by hand,
 * from a Release build without sanitizers, for figures worth quoting. Usage:
 * bench_router [min_ms_per_cell] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchboard/error.h"
#include "router.h"

#define MAX_BINDINGS 10000
#define N_KEYS       64
#define MAX_W        16

struct naive_binding {
    int nw;
    const char *w[MAX_W];
    size_t wl[MAX_W];
    int target;
};

static char pattern_buf[MAX_BINDINGS][64];
static struct naive_binding naive[MAX_BINDINGS];
static int target_cell[MAX_BINDINGS]; /* the targets: &target_cell[i] */
static unsigned naive_mark[MAX_BINDINGS];
static unsigned naive_gen;
static volatile size_t sink;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int split_words(const char *s, size_t len, const char **w, size_t *wl, int max)
{
    if (len == 0)
        return 0;
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++)
        if (i == len || s[i] == '.') {
            if (n == max)
                return -1;
            w[n] = s + start;
            wl[n] = i - start;
            n++;
            start = i + 1;
        }
    return n;
}

static int naive_words(const struct naive_binding *b, int pi, const char **kw, const size_t *kl,
                       int nk, int ki)
{
    if (pi == b->nw)
        return ki == nk;
    if (b->wl[pi] == 1 && b->w[pi][0] == '#') {
        for (int j = ki; j <= nk; j++)
            if (naive_words(b, pi + 1, kw, kl, nk, j))
                return 1;
        return 0;
    }
    if (ki == nk)
        return 0;
    if ((b->wl[pi] == 1 && b->w[pi][0] == '*') ||
        (b->wl[pi] == kl[ki] && memcmp(b->w[pi], kw[ki], kl[ki]) == 0))
        return naive_words(b, pi + 1, kw, kl, nk, ki + 1);
    return 0;
}

/* Linear scan: every binding, in order; targets deduplicated with a generation mark. */
static size_t naive_match(int nb, const char *key, size_t len, void **out, size_t cap)
{
    const char *kw[MAX_W];
    size_t kl[MAX_W];
    int nk = split_words(key, len, kw, kl, MAX_W);
    size_t n = 0;
    naive_gen++;
    for (int i = 0; i < nb; i++) {
        const struct naive_binding *b = &naive[i];
        if (naive_mark[b->target] == naive_gen || !naive_words(b, 0, kw, kl, nk, 0))
            continue;
        naive_mark[b->target] = naive_gen;
        if (n < cap)
            out[n] = &target_cell[b->target];
        n++;
    }
    return n;
}

static int make_bindings(int n)
{
    int k = 0;
    snprintf(pattern_buf[k++], 64, "#");
    snprintf(pattern_buf[k++], 64, "#.Failed");
    snprintf(pattern_buf[k++], 64, "*.Entity0.#");
    for (int i = 0; k < n; i++, k++) {
        int svc = i / 8, ent = i % 7;
        switch (i % 4) {
        case 0:
            snprintf(pattern_buf[k], 64, "Svc%d.Entity%d.*", svc, ent);
            break;
        case 1:
            snprintf(pattern_buf[k], 64, "Svc%d.#", svc);
            break;
        case 2:
            snprintf(pattern_buf[k], 64, "DataSyncCompletedEvent%d", i);
            break;
        default:
            snprintf(pattern_buf[k], 64, "Svc%d.Entity%d.Created", svc, ent);
            break;
        }
    }
    return k;
}

static void make_keys(int n, int words, char keys[N_KEYS][96])
{
    int svcs = n / 8 > 0 ? n / 8 : 1;
    for (int k = 0; k < N_KEYS; k++) {
        int i = (int)(((unsigned)k * 2654435761u) % (unsigned)(n > 3 ? n - 3 : 1));
        int svc = (k * 7919) % svcs, ent = k % 7;
        if (k % 8 == 7)
            svc += 100000; /* some keys match only the catch-alls */
        switch (words) {
        case 1:
            /* Hits an event-type binding when i % 4 == 2; the rest reach "#" only. */
            snprintf(keys[k], 96, "DataSyncCompletedEvent%d", i - i % 4 + 2);
            break;
        case 3:
            snprintf(keys[k], 96, "Svc%d.Entity%d.%s", svc, ent, k % 2 ? "Created" : "Updated");
            break;
        default:
            snprintf(keys[k], 96, "Svc%d.Entity%d.Updated.v2.eu.%s", svc, ent,
                     k % 3 ? "west" : "Failed");
            break;
        }
    }
}

int main(int argc, char **argv)
{
    double min_ns = (argc > 1 ? atof(argv[1]) : 200.0) * 1e6;
    static const int sizes[] = {10, 100, 1000, 10000};
    static const int word_counts[] = {1, 3, 6};
    double trie_ns[4][3];
    void *out[256], *out2[256];

    printf("%-9s %-6s %14s %15s %10s %13s\n", "bindings", "words", "trie ns/match",
           "naive ns/match", "naive/trie", "avg targets");
    for (int si = 0; si < 4; si++) {
        int nb = make_bindings(sizes[si]);
        sb__router_t *r = NULL;
        if (sb__router_new(&r) != SB_EOK)
            return 1;
        for (int i = 0; i < nb; i++) {
            char err[256];
            if (sb__router_add(r, pattern_buf[i], &target_cell[i], err, sizeof err) != SB_EOK) {
                fprintf(stderr, "add %s: %s\n", pattern_buf[i], err);
                return 1;
            }
            naive[i].nw =
                split_words(pattern_buf[i], strlen(pattern_buf[i]), naive[i].w, naive[i].wl, MAX_W);
            naive[i].target = i;
        }
        for (int wi = 0; wi < 3; wi++) {
            static char keys[N_KEYS][96];
            size_t klen[N_KEYS];
            make_keys(nb, word_counts[wi], keys);
            size_t total_targets = 0;
            for (int k = 0; k < N_KEYS; k++) {
                klen[k] = strlen(keys[k]);
                size_t n1, n2 = naive_match(nb, keys[k], klen[k], out2, 256);
                if (sb__router_match(r, keys[k], klen[k], out, 256, &n1) != SB_EOK || n1 != n2 ||
                    memcmp(out, out2, n1 * sizeof *out) != 0) {
                    fprintf(stderr, "mismatch on %s: trie %zu, naive %zu\n", keys[k], n1, n2);
                    return 1;
                }
                total_targets += n1;
            }

            double t0 = now_ns(), t = 0;
            long iters = 0;
            do {
                for (int k = 0; k < N_KEYS; k++) {
                    size_t n;
                    sb__router_match(r, keys[k], klen[k], out, 256, &n);
                    sink += n;
                }
                iters += N_KEYS;
                t = now_ns() - t0;
            } while (t < min_ns);
            double trie = t / (double)iters;

            t0 = now_ns();
            iters = 0;
            do {
                for (int k = 0; k < N_KEYS; k++)
                    sink += naive_match(nb, keys[k], klen[k], out, 256);
                iters += N_KEYS;
                t = now_ns() - t0;
            } while (t < min_ns / 4);
            double nv = t / (double)iters;

            trie_ns[si][wi] = trie;
            printf("%-9d %-6d %14.1f %15.1f %9.1fx %13.2f\n", nb, word_counts[wi], trie, nv,
                   nv / trie, (double)total_targets / N_KEYS);
        }
        sb__router_destroy(r);
    }
    printf("\ntrie cost at 10,000 bindings / at 10 bindings (1000x more bindings):");
    for (int wi = 0; wi < 3; wi++)
        printf("  %d-word %.2fx", word_counts[wi], trie_ns[3][wi] / trie_ns[0][wi]);
    printf("\n");
    return 0;
}
