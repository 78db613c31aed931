/* router.c: AMQP topic matching over a trie of words, simulated as an NFA.
 *
 * Design: every pattern is a path in a trie whose edges are words. `*` and `#` edges are
 * direct pointers in the parent; literal edges live in one open-addressing hash table keyed
 * by (parent node, word), so a node with 10,000 literal children costs the same to step
 * through as one with two. A node reached through `#` loops on itself (it may swallow one
 * more word), and every `#` child is also entered without consuming a word (zero words).
 * Matching walks the key word by word carrying the set of active nodes; a per-node
 * generation mark keeps each node at most once per step, so the set never exceeds the node
 * count and many `#` cannot blow up exponentially. The cost is O(words x active nodes), not
 * O(bindings). The node sets, target marks and result scratch are sized when bindings are
 * added, so matching never allocates.
 *
 * Adding is all-or-nothing: every allocation a new binding needs is made before the trie is
 * touched, so SB_ENOMEM leaves the router exactly as it was.
 *
 * Does not: remove bindings (handlers are registered once at start-up), normalise patterns
 * ("#.#" and "#" are distinct bindings that match the same keys), or know what a target is. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "router.h"

struct rnode {
    uint64_t mark;      /* step generation in which the node last joined an active set */
    struct rnode *star; /* child through `*`, or NULL */
    struct rnode *hash; /* child through `#`, or NULL */
    uint32_t *binds;    /* target indices bound at this node, in insertion order */
    uint32_t n_binds;
    uint32_t cap_binds;
    uint32_t id;           /* creation index, mixed into the edge hash */
    uint32_t wlen;         /* length of word[] */
    unsigned char is_hash; /* reached through `#`: stays active on any further word */
    char word[];           /* the literal word of the edge into this node (not terminated) */
};

struct edge {
    uint64_t h; /* hash of (parent id, word) */
    struct rnode *parent;
    struct rnode *child; /* NULL: empty slot */
};

struct tslot {
    void *target; /* NULL: empty slot */
    uint32_t idx;
};

struct sb__router {
    struct rnode *root;

    struct rnode **nodes; /* every node but the root, for destroy */
    struct rnode **cur;   /* match scratch: active sets, capacity cap_nodes each */
    struct rnode **next;
    size_t n_nodes; /* including the root */
    size_t cap_nodes;

    struct edge *edges; /* literal edges; capacity a power of two, load <= 1/2 */
    size_t n_edges;
    size_t cap_edges;

    void **targets;  /* distinct targets in first-added order */
    uint64_t *tmark; /* per target: match generation that last reported it */
    uint32_t *found; /* match scratch: indices of matched targets */
    size_t n_targets;
    size_t cap_targets;

    struct tslot *tmap; /* target -> index; capacity a power of two, load <= 1/2 */
    size_t cap_tmap;

    size_t n_bindings;
    uint64_t step_gen;
    uint64_t match_gen;
};

static void set_err(char *errstr, size_t size, const char *fmt, ...) SB_PRINTF(3, 4);
static void set_err(char *errstr, size_t size, const char *fmt, ...)
{
    if (!errstr || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

/* ---- hashing ----------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Eight bytes at a time; the key is hashed once per word, whatever the number of states. */
static uint64_t hash_word(const char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0x100000001b3ULL);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0x9fb21c651e98df25ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)(unsigned char)p[i] << (8 * i);
    h = (h ^ v) * 0x9fb21c651e98df25ULL;
    return h;
}

static uint64_t edge_hash(const struct rnode *parent, uint64_t wh)
{
    return mix64(wh ^ ((uint64_t)parent->id + 1) * 0x9e3779b97f4a7c15ULL);
}

static uint64_t ptr_hash(const void *p)
{
    return mix64((uint64_t)(uintptr_t)p);
}

/* ---- literal edges ----------------------------------------------------------------------- */

static struct rnode *edge_find(const sb__router_t *r, const struct rnode *parent, uint64_t wh,
                               const char *w, size_t wlen)
{
    if (!r->n_edges)
        return NULL;
    uint64_t h = edge_hash(parent, wh);
    size_t mask = r->cap_edges - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const struct edge *e = &r->edges[i];
        if (!e->child)
            return NULL;
        if (e->h == h && e->parent == parent && e->child->wlen == wlen &&
            memcmp(e->child->word, w, wlen) == 0)
            return e->child;
    }
}

/* Inserts into a table known to have room and not to hold the edge. */
static void edge_put(struct edge *tab, size_t cap, uint64_t h, struct rnode *parent,
                     struct rnode *child)
{
    size_t mask = cap - 1;
    size_t i = (size_t)h & mask;
    while (tab[i].child)
        i = (i + 1) & mask;
    tab[i].h = h;
    tab[i].parent = parent;
    tab[i].child = child;
}

/* Makes room for `extra` more edges. On failure the table is unchanged. */
static int edges_reserve(sb__router_t *r, size_t extra)
{
    size_t need = r->n_edges + extra;
    if (need * 2 <= r->cap_edges)
        return SB_EOK;
    size_t cap = r->cap_edges ? r->cap_edges : 16;
    while (need * 2 > cap)
        cap *= 2;
    struct edge *tab = sb_calloc(cap, sizeof *tab);
    if (!tab)
        return SB_ENOMEM;
    for (size_t i = 0; i < r->cap_edges; i++)
        if (r->edges[i].child)
            edge_put(tab, cap, r->edges[i].h, r->edges[i].parent, r->edges[i].child);
    sb_free(r->edges);
    r->edges = tab;
    r->cap_edges = cap;
    return SB_EOK;
}

/* ---- targets ----------------------------------------------------------------------------- */

static int target_find(const sb__router_t *r, const void *target, uint32_t *idx)
{
    if (!r->n_targets)
        return 0;
    size_t mask = r->cap_tmap - 1;
    for (size_t i = (size_t)ptr_hash(target) & mask;; i = (i + 1) & mask) {
        if (!r->tmap[i].target)
            return 0;
        if (r->tmap[i].target == target) {
            *idx = r->tmap[i].idx;
            return 1;
        }
    }
}

static void tmap_put(struct tslot *tab, size_t cap, void *target, uint32_t idx)
{
    size_t mask = cap - 1;
    size_t i = (size_t)ptr_hash(target) & mask;
    while (tab[i].target)
        i = (i + 1) & mask;
    tab[i].target = target;
    tab[i].idx = idx;
}

/* realloc to `need` elements of `size` bytes: the new array, or NULL (old one untouched). */
static void *grow(void *old, size_t need, size_t size)
{
    if (need > SIZE_MAX / size)
        return NULL;
    return sb_realloc(old, need * size);
}

/* Makes room for one more target (arrays and map). On failure nothing observable changes:
 * arrays may have grown, but counts and capacities still describe the old contents. */
static int targets_reserve(sb__router_t *r)
{
    size_t need = r->n_targets + 1;
    if (need > UINT32_MAX)
        return SB_ETOOBIG;
    if (need > r->cap_targets) {
        size_t cap = r->cap_targets ? r->cap_targets * 2 : 8;
        void **t = grow(r->targets, cap, sizeof *t);
        if (!t)
            return SB_ENOMEM;
        r->targets = t;
        uint64_t *mk = grow(r->tmark, cap, sizeof *mk);
        if (!mk)
            return SB_ENOMEM;
        r->tmark = mk;
        uint32_t *fd = grow(r->found, cap, sizeof *fd);
        if (!fd)
            return SB_ENOMEM;
        r->found = fd;
        r->cap_targets = cap;
    }
    if (need * 2 > r->cap_tmap) {
        size_t cap = r->cap_tmap ? r->cap_tmap * 2 : 16;
        struct tslot *tab = sb_calloc(cap, sizeof *tab);
        if (!tab)
            return SB_ENOMEM;
        for (size_t i = 0; i < r->cap_tmap; i++)
            if (r->tmap[i].target)
                tmap_put(tab, cap, r->tmap[i].target, r->tmap[i].idx);
        sb_free(r->tmap);
        r->tmap = tab;
        r->cap_tmap = cap;
    }
    return SB_EOK;
}

/* ---- nodes ------------------------------------------------------------------------------- */

static struct rnode *node_new(const char *w, size_t wlen)
{
    struct rnode *n = sb_calloc(1, sizeof *n + wlen);
    if (n && wlen)
        memcpy(n->word, w, wlen);
    if (n)
        n->wlen = (uint32_t)wlen;
    return n;
}

static void node_free(struct rnode *n)
{
    if (n) {
        sb_free(n->binds);
        sb_free(n);
    }
}

/* Room for `extra` more nodes in the node list and both active-set arrays. */
static int nodes_reserve(sb__router_t *r, size_t extra)
{
    size_t need = r->n_nodes + extra;
    if (need <= r->cap_nodes)
        return SB_EOK;
    if (need > UINT32_MAX)
        return SB_ETOOBIG;
    size_t cap = r->cap_nodes * 2;
    if (cap < need)
        cap = need;
    /* Each array that grows is kept even if a later one fails: only cap_nodes, updated
     * last, promises room. */
    struct rnode **a = grow(r->nodes, cap, sizeof *a);
    if (!a)
        return SB_ENOMEM;
    r->nodes = a;
    if (!(a = grow(r->cur, cap, sizeof *a)))
        return SB_ENOMEM;
    r->cur = a;
    if (!(a = grow(r->next, cap, sizeof *a)))
        return SB_ENOMEM;
    r->next = a;
    r->cap_nodes = cap;
    return SB_EOK;
}

static int binds_reserve(struct rnode *n)
{
    if (n->n_binds < n->cap_binds)
        return SB_EOK;
    size_t cap = n->cap_binds ? (size_t)n->cap_binds * 2 : 1;
    uint32_t *b = cap > UINT32_MAX ? NULL : grow(n->binds, cap, sizeof *b);
    if (!b)
        return SB_ENOMEM;
    n->binds = b;
    n->cap_binds = (uint32_t)cap;
    return SB_EOK;
}

/* ---- public ------------------------------------------------------------------------------ */

int sb__router_new(sb__router_t **out)
{
    sb__router_t *r = sb_calloc(1, sizeof *r);
    if (!r)
        goto err;
    r->root = node_new("", 0);
    if (!r->root)
        goto err;
    r->n_nodes = 1;
    r->cap_nodes = 8;
    r->nodes = sb_calloc(r->cap_nodes, sizeof *r->nodes);
    r->cur = sb_calloc(r->cap_nodes, sizeof *r->cur);
    r->next = sb_calloc(r->cap_nodes, sizeof *r->next);
    if (!r->nodes || !r->cur || !r->next)
        goto err;
    *out = r;
    return SB_EOK;
err:
    sb__router_destroy(r);
    return SB_ENOMEM;
}

void sb__router_destroy(sb__router_t *r)
{
    if (!r)
        return;
    /* nodes[0] is unused: the root is not in the list. */
    for (size_t i = 1; i < r->n_nodes; i++)
        node_free(r->nodes[i]);
    node_free(r->root);
    sb_free(r->nodes);
    sb_free(r->cur);
    sb_free(r->next);
    sb_free(r->edges);
    sb_free(r->targets);
    sb_free(r->tmark);
    sb_free(r->found);
    sb_free(r->tmap);
    sb_free(r);
}

size_t sb__router_size(const sb__router_t *r)
{
    return r ? r->n_bindings : 0;
}

struct word {
    const char *p;
    size_t len;
};

/* Splits a pattern into words and checks each. Returns the word count or a negative error. */
static int split_pattern(const char *pattern, struct word *w, char *errstr, size_t errstr_size)
{
    size_t len = strlen(pattern);
    if (len > SB__ROUTER_MAX_PATTERN_LEN) {
        set_err(errstr, errstr_size, "pattern of %zu bytes is too long (at most %d)", len,
                SB__ROUTER_MAX_PATTERN_LEN);
        return SB_ETOOBIG;
    }
    if (len == 0)
        return 0; /* the empty pattern: zero words, matches only the empty key */
    int n = 0;
    const char *p = pattern;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t wl = dot ? (size_t)(dot - p) : strlen(p);
        if (n == SB__ROUTER_MAX_WORDS) {
            set_err(errstr, errstr_size, "pattern \"%.64s...\" has more than %d words", pattern,
                    SB__ROUTER_MAX_WORDS);
            return SB_ETOOBIG;
        }
        if (wl > 1 && (memchr(p, '*', wl) || memchr(p, '#', wl))) {
            set_err(errstr, errstr_size,
                    "pattern \"%.200s\": word %d \"%.*s\" mixes '*' or '#' with other "
                    "characters; wildcards must be whole words between dots (e.g. \"a.*\" or "
                    "\"a.#\")",
                    pattern, n + 1, (int)(wl > 64 ? 64 : wl), p);
            return SB_EPARSE;
        }
        w[n].p = p;
        w[n].len = wl;
        n++;
        if (!dot)
            return n;
        p = dot + 1;
    }
}

static int is_star(const struct word *w)
{
    return w->len == 1 && w->p[0] == '*';
}

static int is_hash(const struct word *w)
{
    return w->len == 1 && w->p[0] == '#';
}

/* The existing child of `n` along word `w`, or NULL. */
static struct rnode *child_of(const sb__router_t *r, const struct rnode *n, const struct word *w)
{
    if (is_star(w))
        return n->star;
    if (is_hash(w))
        return n->hash;
    return edge_find(r, n, hash_word(w->p, w->len), w->p, w->len);
}

int sb__router_add(sb__router_t *r, const char *pattern, void *target, char *errstr,
                   size_t errstr_size)
{
    if (!r || !pattern || !target) {
        set_err(errstr, errstr_size, "router_add: %s is NULL",
                !r         ? "router"
                : !pattern ? "pattern"
                           : "target");
        return SB_EINVAL;
    }
    struct word w[SB__ROUTER_MAX_WORDS];
    int nw = split_pattern(pattern, w, errstr, errstr_size);
    if (nw < 0)
        return nw;

    /* Follow the existing path as far as it goes. */
    struct rnode *n = r->root;
    int first_new = 0;
    while (first_new < nw) {
        struct rnode *c = child_of(r, n, &w[first_new]);
        if (!c)
            break;
        n = c;
        first_new++;
    }

    uint32_t tidx = 0;
    int known_target = target_find(r, target, &tidx);
    if (first_new == nw && known_target) {
        for (uint32_t i = 0; i < n->n_binds; i++)
            if (n->binds[i] == tidx)
                return SB_EOK; /* same (pattern, target): nothing to do */
    }

    /* Reserve everything, then commit without any possible failure. */
    size_t n_fresh = (size_t)(nw - first_new), n_lits = 0;
    for (int i = first_new; i < nw; i++)
        n_lits += !is_star(&w[i]) && !is_hash(&w[i]);
    int rc = nodes_reserve(r, n_fresh);
    if (rc == SB_EOK)
        rc = edges_reserve(r, n_lits);
    if (rc == SB_EOK && !known_target)
        rc = targets_reserve(r);
    if (rc == SB_EOK && first_new == nw)
        rc = binds_reserve(n);
    struct rnode *fresh[SB__ROUTER_MAX_WORDS];
    size_t made = 0;
    while (rc == SB_EOK && made < n_fresh) {
        const struct word *fw = &w[first_new + (int)made];
        int lit = !is_star(fw) && !is_hash(fw);
        struct rnode *c = node_new(fw->p, lit ? fw->len : 0);
        if (!c) {
            rc = SB_ENOMEM;
            break;
        }
        fresh[made++] = c;
        if (made == n_fresh)
            rc = binds_reserve(c); /* the binding's node */
    }
    if (rc != SB_EOK) {
        for (size_t i = 0; i < made; i++)
            node_free(fresh[i]);
        set_err(errstr, errstr_size, "pattern \"%.200s\": %s", pattern,
                rc == SB_ENOMEM ? "out of memory" : "router is full");
        return rc;
    }

    /* Commit. */
    for (size_t i = 0; i < n_fresh; i++) {
        const struct word *fw = &w[first_new + (int)i];
        struct rnode *c = fresh[i];
        c->id = (uint32_t)r->n_nodes;
        r->nodes[r->n_nodes++] = c;
        if (is_star(fw)) {
            n->star = c;
        } else if (is_hash(fw)) {
            c->is_hash = 1;
            n->hash = c;
        } else {
            edge_put(r->edges, r->cap_edges, edge_hash(n, hash_word(fw->p, fw->len)), n, c);
            r->n_edges++;
        }
        n = c;
    }
    if (!known_target) {
        tidx = (uint32_t)r->n_targets++;
        r->targets[tidx] = target;
        r->tmark[tidx] = 0;
        tmap_put(r->tmap, r->cap_tmap, target, tidx);
    }
    n->binds[n->n_binds++] = tidx;
    r->n_bindings++;
    return SB_EOK;
}

/* Appends `c` to the set being built for generation `g`, once. */
static inline void push(struct rnode **set, size_t *n, struct rnode *c, uint64_t g)
{
    if (c && c->mark != g) {
        c->mark = g;
        set[(*n)++] = c;
    }
}

/* Adds the `#` children reachable without consuming a word (`#` matching zero words),
 * transitively: the loop also visits what it appends. */
static size_t close_hash(struct rnode **set, size_t n, uint64_t g)
{
    for (size_t i = 0; i < n; i++)
        push(set, &n, set[i]->hash, g);
    return n;
}

static void sort_indices(uint32_t *a, size_t n)
{
    if (n <= 24) {
        for (size_t i = 1; i < n; i++) {
            uint32_t v = a[i];
            size_t j = i;
            for (; j > 0 && a[j - 1] > v; j--)
                a[j] = a[j - 1];
            a[j] = v;
        }
        return;
    }
    /* Heapsort: no allocation, O(n log n) even when thousands of targets match. */
    for (size_t start = n / 2; start-- > 0;) {
        size_t root = start;
        for (size_t child; (child = 2 * root + 1) < n; root = child) {
            if (child + 1 < n && a[child] < a[child + 1])
                child++;
            if (a[root] >= a[child])
                break;
            uint32_t t = a[root];
            a[root] = a[child];
            a[child] = t;
        }
    }
    for (size_t end = n - 1; end > 0; end--) {
        uint32_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        size_t root = 0;
        for (size_t child; (child = 2 * root + 1) < end; root = child) {
            if (child + 1 < end && a[child] < a[child + 1])
                child++;
            if (a[root] >= a[child])
                break;
            t = a[root];
            a[root] = a[child];
            a[child] = t;
        }
    }
}

int sb__router_match(sb__router_t *r, const char *key, size_t key_len, void **out, size_t out_cap,
                     size_t *n_out)
{
    *n_out = 0;
    if (!key && key_len)
        return SB_EINVAL;
    struct rnode **cur = r->cur, **next = r->next;
    uint64_t g = ++r->step_gen;
    size_t nc = 0;
    push(cur, &nc, r->root, g);
    nc = close_hash(cur, nc, g);

    if (key_len) { /* the empty key is zero words */
        const char *p = key, *end = key + key_len;
        size_t nwords = 0;
        for (;;) {
            const char *dot = memchr(p, '.', (size_t)(end - p));
            size_t wl = (size_t)((dot ? dot : end) - p);
            if (++nwords > SB__ROUTER_MAX_WORDS)
                return SB_ETOOBIG;
            uint64_t wh = hash_word(p, wl);
            size_t nn = 0;
            g = ++r->step_gen;
            for (size_t i = 0; i < nc; i++) {
                struct rnode *s = cur[i];
                if (s->is_hash)
                    push(next, &nn, s, g);
                push(next, &nn, s->star, g);
                push(next, &nn, edge_find(r, s, wh, p, wl), g);
            }
            nc = close_hash(next, nn, g);
            struct rnode **t = cur;
            cur = next;
            next = t;
            if (!dot)
                break;
            p = dot + 1;
            if (!nc) {
                /* Nothing can match any more; only the word limit is left to check. */
                if (++nwords > SB__ROUTER_MAX_WORDS)
                    return SB_ETOOBIG;
                while ((dot = memchr(p, '.', (size_t)(end - p)))) {
                    if (++nwords > SB__ROUTER_MAX_WORDS)
                        return SB_ETOOBIG;
                    p = dot + 1;
                }
                break;
            }
        }
    }

    uint64_t mg = ++r->match_gen;
    size_t m = 0;
    for (size_t i = 0; i < nc; i++) {
        const struct rnode *s = cur[i];
        for (uint32_t j = 0; j < s->n_binds; j++) {
            uint32_t t = s->binds[j];
            if (r->tmark[t] != mg) {
                r->tmark[t] = mg;
                r->found[m++] = t;
            }
        }
    }
    if (m > 1)
        sort_indices(r->found, m);
    size_t k = m < out_cap ? m : out_cap;
    for (size_t i = 0; i < k; i++)
        out[i] = r->targets[r->found[i]];
    *n_out = m;
    return m > out_cap ? SB_ERANGE : SB_EOK;
}
