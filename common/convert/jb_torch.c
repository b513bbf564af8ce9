// jb_torch.c: see jb_torch.h. Layout: values and arena, string map, pickle
// interpreter, storage table, legacy reader, zip reader, tensor assembly, API.
#include "jb_torch.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

// Limits on what a pickle may ask for. Real checkpoints stay far below them
// (a 5B prior's state dict has ~2000 entries, its hps a few hundred keys).
#define PK_MAX_STACK (1u << 20)     // values on the pickle stack
#define PK_MAX_MARKS (1u << 16)     // open MARKs
#define PK_MAX_GLOBAL 512           // bytes of "module\nname\n"
#define PK_MAX_JSON_DEPTH 64        // nesting of hps when turned into JSON
#define PK_MAX_JSON_NODES (1 << 20) // values of hps turned into JSON: the memo lets a
                                    // small pickle share a list 2^64 ways

// ---- values ------------------------------------------------------------------

enum {
    PV_NONE, PV_BOOL, PV_INT, PV_BIGINT, PV_FLOAT, PV_STR, PV_BYTES, PV_TUPLE, PV_LIST,
    PV_DICT, PV_GLOBAL, PV_STORAGE, PV_TENSOR, PV_OBJ, PV_MARK
};

static const char *pv_kind_name(int k) {
    static const char *names[] = {"None",   "bool",   "int",    "long int", "float",
                                  "str",    "bytes",  "tuple",  "list",     "dict",
                                  "global", "storage", "tensor", "object",  "mark"};
    return k >= 0 && k <= PV_MARK ? names[k] : "?";
}

typedef struct pv pv_t;
struct pv {
    int kind;
    int64_t i;        // INT, BOOL; STORAGE and TENSOR: storage index
    double f;         // FLOAT
    char *s;          // STR, BYTES, BIGINT (raw little-endian), GLOBAL "module.name", OBJ class
    size_t slen;
    pv_t **a;         // TUPLE, LIST: items; DICT, OBJ: key/value pairs (2 * n slots)
    size_t n, cap;    // items or pairs
    int64_t off;      // STORAGE: element offset in the root storage; TENSOR: storage offset
    int64_t vnumel;   // STORAGE: elements visible through it
    int64_t root_off; // TENSOR: its storage's own offset in the root (legacy views)
    pv_t *args;       // OBJ: the arguments it was called with
    int ndim;         // TENSOR
    int64_t shape[JB_MAX_DIMS], stride[JB_MAX_DIMS];
};

// Every value of a load lives in one arena and dies with it: the memo shares
// values freely (and may build cycles), so nothing is freed one by one.
typedef struct {
    pv_t **all;
    size_t n, cap;
} arena_t;

static void arena_free(arena_t *ar) {
    for (size_t k = 0; k < ar->n; k++) {
        free(ar->all[k]->s);
        free(ar->all[k]->a);
        free(ar->all[k]);
    }
    free(ar->all);
    memset(ar, 0, sizeof *ar);
}

static pv_t *pv_new(arena_t *ar, int kind) {
    if (ar->n == ar->cap) {
        size_t nc = ar->cap ? ar->cap * 2 : 1024;
        pv_t **na = realloc(ar->all, nc * sizeof *na);
        if (!na) return NULL;
        ar->all = na, ar->cap = nc;
    }
    pv_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    ar->all[ar->n++] = v;
    return v;
}

// Append k slots to v->a (items, or 2 per pair). 0 / -1 (out of memory).
static int pv_grow(pv_t *v, size_t slots_used, size_t k) {
    if (slots_used + k <= v->cap) return 0;
    size_t nc = v->cap ? v->cap : 8;
    while (nc < slots_used + k) nc *= 2;
    pv_t **na = realloc(v->a, nc * sizeof *na);
    if (!na) return -1;
    v->a = na, v->cap = nc;
    return 0;
}

static int pv_append(pv_t *v, pv_t *x) {
    if (pv_grow(v, v->n, 1)) return -1;
    v->a[v->n++] = x;
    return 0;
}

static int pv_setitem(pv_t *d, pv_t *k, pv_t *x) {
    // A repeated str key replaces the old value, as in a Python dict (checked on
    // dicts of up to 4096 entries: the search is O(n) per item).
    if (k->kind == PV_STR && d->n < 4096)
        for (size_t j = 0; j < d->n; j++) {
            pv_t *o = d->a[2 * j];
            if (o->kind == PV_STR && o->slen == k->slen && !memcmp(o->s, k->s, k->slen)) {
                d->a[2 * j + 1] = x;
                return 0;
            }
        }
    if (pv_grow(d, 2 * d->n, 2)) return -1;
    d->a[2 * d->n] = k;
    d->a[2 * d->n + 1] = x;
    d->n++;
    return 0;
}

static pv_t *pv_dict_get(const pv_t *d, const char *key) {
    if (!d || (d->kind != PV_DICT && d->kind != PV_OBJ)) return NULL;
    size_t kl = strlen(key);
    for (size_t j = 0; j < d->n; j++) {
        pv_t *k = d->a[2 * j];
        if (k->kind == PV_STR && k->slen == kl && !memcmp(k->s, key, kl)) return d->a[2 * j + 1];
    }
    return NULL;
}

static int pv_is_str(const pv_t *v, const char *s) {
    return v && v->kind == PV_STR && v->slen == strlen(s) && !memcmp(v->s, s, v->slen);
}

// ---- string -> index map (open addressing) -----------------------------------

typedef struct {
    const char **keys;   // borrowed
    int *vals;
    size_t cap, n;
} smap_t;

static uint64_t smap_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void smap_free(smap_t *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static int smap_get(const smap_t *m, const char *key) {
    if (!m->cap) return -1;
    for (size_t h = smap_hash(key) & (m->cap - 1);; h = (h + 1) & (m->cap - 1)) {
        if (!m->keys[h]) return -1;
        if (!strcmp(m->keys[h], key)) return m->vals[h];
    }
}

// Insert (key must be absent). 0 / -1 out of memory.
static int smap_put(smap_t *m, const char *key, int val) {
    if (2 * (m->n + 1) > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        smap_t nm = {calloc(nc, sizeof(char *)), calloc(nc, sizeof(int)), nc, 0};
        if (!nm.keys || !nm.vals) {
            smap_free(&nm);
            return -1;
        }
        for (size_t j = 0; j < m->cap; j++)
            if (m->keys[j]) smap_put(&nm, m->keys[j], m->vals[j]);
        smap_free(m);
        *m = nm;
    }
    size_t h = smap_hash(key) & (m->cap - 1);
    while (m->keys[h]) h = (h + 1) & (m->cap - 1);
    m->keys[h] = key;
    m->vals[h] = val;
    m->n++;
    return 0;
}

// ---- storages ----------------------------------------------------------------

typedef struct {
    char *key;
    jb_dtype_t dtype;
    int64_t numel;
    const uint8_t *data;   // numel * esize bytes once resolved; NULL until then
} stor_t;

typedef struct {
    stor_t *s;
    int n, cap;
    smap_t by_key;
} stors_t;

static void stors_free(stors_t *t) {
    for (int k = 0; k < t->n; k++) free(t->s[k].key);
    free(t->s);
    smap_free(&t->by_key);
    memset(t, 0, sizeof *t);
}

static int storage_dtype(const char *global, jb_dtype_t *dt) {
    char buf[96];
    // torch.cuda.XStorage: torch normalises these when saving, but accept them anyway.
    if (!strncmp(global, "torch.cuda.", 11) && strlen(global) < sizeof buf) {
        snprintf(buf, sizeof buf, "torch.%s", global + 11);
        global = buf;
    }
    static const struct { const char *name; jb_dtype_t dt; } map[] = {
        {"torch.FloatStorage", JB_F32},  {"torch.HalfStorage", JB_F16},
        {"torch.BFloat16Storage", JB_BF16}, {"torch.DoubleStorage", JB_F64},
        {"torch.LongStorage", JB_I64},   {"torch.IntStorage", JB_I32},
        {"torch.ShortStorage", JB_I16},  {"torch.CharStorage", JB_I8},
        {"torch.ByteStorage", JB_U8},    {"torch.BoolStorage", JB_BOOL},
    };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (!strcmp(global, map[k].name)) {
            *dt = map[k].dt;
            return 0;
        }
    return -1;
}

// ---- pickle interpreter ------------------------------------------------------

typedef struct {
    const uint8_t *p;     // the pickle's bytes
    size_t len, pos;
    size_t base;          // file offset of p[0], for messages
    const char *file;     // for messages
    const char *what;     // which pickle ("object", "data.pkl", ...)
    arena_t *ar;
    stors_t *st;          // storages named by persistent ids (NULL: none allowed)
    pv_t **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    pv_t **memo;
    size_t memo_cap, memo_used;
    size_t op_at;         // offset of the opcode being run
    uint8_t op;
    jb_err_t *err;
} up_t;

#define UP_FAIL(u, code, ...)                                                           \
    (jb_err_set((u)->err, (code), __VA_ARGS__),                                         \
     jb_err_prefix((u)->err, "%s: %s pickle: byte %zu: opcode 0x%02x", (u)->file,       \
                   (u)->what, (u)->base + (u)->op_at, (u)->op))

static void up_free(up_t *u) {
    free(u->stack);
    free(u->marks);
    free(u->memo);
}

static int up_need(up_t *u, size_t n) {
    if (u->len - u->pos < n)
        return UP_FAIL(u, JB_EFORMAT, "unexpected end of data (needs %zu more bytes, %zu left)",
                       n, u->len - u->pos);
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static int up_push(up_t *u, pv_t *v) {
    if (!v) return UP_FAIL(u, JB_ENOMEM, "out of memory");
    if (u->sp == u->scap) {
        if (u->scap >= PK_MAX_STACK)
            return UP_FAIL(u, JB_EFORMAT, "stack deeper than %u values", PK_MAX_STACK);
        size_t nc = u->scap ? u->scap * 2 : 256;
        pv_t **ns = realloc(u->stack, nc * sizeof *ns);
        if (!ns) return UP_FAIL(u, JB_ENOMEM, "out of memory");
        u->stack = ns, u->scap = nc;
    }
    u->stack[u->sp++] = v;
    return 0;
}

static pv_t *up_pop(up_t *u) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (u->sp <= floor) {
        UP_FAIL(u, JB_EFORMAT, "pops an empty stack");
        return NULL;
    }
    return u->stack[--u->sp];
}

static pv_t *up_top(up_t *u) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (u->sp <= floor) {
        UP_FAIL(u, JB_EFORMAT, "reads an empty stack");
        return NULL;
    }
    return u->stack[u->sp - 1];
}

// The value just below a popped MARK at stack index first (APPENDS, SETITEMS target).
static pv_t *up_below(up_t *u, size_t first) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (first <= floor) {
        UP_FAIL(u, JB_EFORMAT, "no container below the MARK");
        return NULL;
    }
    return u->stack[first - 1];
}

// Pop to the last MARK; *first is the index of the first value above it.
static int up_pop_mark(up_t *u, size_t *first) {
    if (!u->nmarks) return UP_FAIL(u, JB_EFORMAT, "no MARK on the stack");
    *first = u->marks[--u->nmarks];
    return 0;
}

static pv_t *mk_str(up_t *u, int kind, const uint8_t *s, size_t n) {
    pv_t *v = pv_new(u->ar, kind);
    if (!v) return NULL;
    v->s = malloc(n + 1);
    if (!v->s) return NULL;
    memcpy(v->s, s, n);
    v->s[n] = 0;
    v->slen = n;
    return v;
}

static pv_t *mk_int(up_t *u, int64_t x) {
    pv_t *v = pv_new(u->ar, PV_INT);
    if (v) v->i = x;
    return v;
}

// LONG1/LONG4: little-endian two's complement; kept as int when it fits 8 bytes.
static pv_t *mk_long(up_t *u, const uint8_t *b, size_t n) {
    if (n == 0) return mk_int(u, 0);
    if (n <= 8) {
        uint64_t x = rd_le(b, (int)n);
        if (n < 8 && (b[n - 1] & 0x80)) x |= ~0ull << (8 * n);   // sign-extend
        return mk_int(u, (int64_t)x);
    }
    return mk_str(u, PV_BIGINT, b, n);
}

static int up_memo_put(up_t *u, uint64_t idx) {
    pv_t *v = up_top(u);
    if (!v) return -1;
    // Memo slots are numbered in order of use, so none can exceed the opcode count.
    if (idx > u->len) return UP_FAIL(u, JB_EFORMAT, "memo index %llu out of range",
                                     (unsigned long long)idx);
    if (idx >= u->memo_cap) {
        size_t nc = u->memo_cap ? u->memo_cap : 64;
        while (nc <= idx) nc *= 2;
        pv_t **nm = realloc(u->memo, nc * sizeof *nm);
        if (!nm) return UP_FAIL(u, JB_ENOMEM, "out of memory");
        memset(nm + u->memo_cap, 0, (nc - u->memo_cap) * sizeof *nm);
        u->memo = nm, u->memo_cap = nc;
    }
    u->memo_used += u->memo[idx] == NULL;
    u->memo[idx] = v;
    return 0;
}

static int up_memo_get(up_t *u, uint64_t idx) {
    if (idx >= u->memo_cap || !u->memo[idx])
        return UP_FAIL(u, JB_EFORMAT, "memo slot %llu read before it was written",
                       (unsigned long long)idx);
    return up_push(u, u->memo[idx]);
}

// The storage a persistent id names: ('storage', torch.XStorage, key, location, numel
// [, view_metadata]); legacy view_metadata is None or (view_key, offset, size).
static pv_t *up_persistent(up_t *u, pv_t *pid) {
    if (!u->st) {
        UP_FAIL(u, JB_EFORMAT, "persistent id where none is allowed");
        return NULL;
    }
    if (pid->kind != PV_TUPLE || pid->n < 5 || !pv_is_str(pid->a[0], "storage")) {
        UP_FAIL(u, JB_EFORMAT, "persistent id is not ('storage', type, key, location, numel)");
        return NULL;
    }
    pv_t *ty = pid->a[1], *key = pid->a[2], *numel = pid->a[4];
    jb_dtype_t dt;
    if (ty->kind != PV_GLOBAL || storage_dtype(ty->s, &dt) != 0) {
        UP_FAIL(u, JB_EUNSUP, "storage type %s not supported",
                ty->kind == PV_GLOBAL ? ty->s : pv_kind_name(ty->kind));
        return NULL;
    }
    if (key->kind != PV_STR || numel->kind != PV_INT || numel->i < 0 ||
        numel->i > ((int64_t)1 << 40)) {
        UP_FAIL(u, JB_EFORMAT, "storage persistent id: bad key or element count");
        return NULL;
    }
    stors_t *t = u->st;
    int idx = smap_get(&t->by_key, key->s);
    if (idx < 0) {
        if (t->n == t->cap) {
            int nc = t->cap ? t->cap * 2 : 64;
            stor_t *ns = realloc(t->s, (size_t)nc * sizeof *ns);
            if (!ns) {
                UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            t->s = ns, t->cap = nc;
        }
        stor_t *s = &t->s[t->n];
        memset(s, 0, sizeof *s);
        s->key = strdup(key->s);
        if (!s->key || smap_put(&t->by_key, s->key, t->n) != 0) {
            free(s->key);
            UP_FAIL(u, JB_ENOMEM, "out of memory");
            return NULL;
        }
        s->dtype = dt;
        s->numel = numel->i;
        idx = t->n++;
    } else if (t->s[idx].dtype != dt || t->s[idx].numel != numel->i) {
        UP_FAIL(u, JB_EFORMAT, "storage '%s' named twice with different type or size", key->s);
        return NULL;
    }
    pv_t *v = pv_new(u->ar, PV_STORAGE);
    if (!v) return NULL;
    v->i = idx;
    v->off = 0;
    v->vnumel = numel->i;
    if (pid->n >= 6 && pid->a[5]->kind != PV_NONE) {
        pv_t *vm = pid->a[5];
        if (vm->kind != PV_TUPLE || vm->n != 3 || vm->a[1]->kind != PV_INT ||
            vm->a[2]->kind != PV_INT || vm->a[1]->i < 0 || vm->a[2]->i < 0 ||
            vm->a[1]->i > numel->i || vm->a[2]->i > numel->i - vm->a[1]->i) {
            UP_FAIL(u, JB_EFORMAT, "storage '%s': bad view (offset, size) for %lld elements",
                    key->s, (long long)numel->i);
            return NULL;
        }
        v->off = vm->a[1]->i;
        v->vnumel = vm->a[2]->i;
    }
    return v;
}

static int int_tuple(const pv_t *t, int64_t *out, int *n) {
    if (t->kind != PV_TUPLE && t->kind != PV_LIST) return -1;
    if (t->n > JB_MAX_DIMS) return -1;
    for (size_t k = 0; k < t->n; k++) {
        if (t->a[k]->kind != PV_INT || t->a[k]->i < 0) return -1;
        out[k] = t->a[k]->i;
    }
    *n = (int)t->n;
    return 0;
}

// _codecs.encode(s, 'latin1'): code points below 256 back to bytes. NULL if not that.
static pv_t *latin1_bytes(up_t *u, const pv_t *args) {
    if (args->n != 2 || args->a[0]->kind != PV_STR || args->a[1]->kind != PV_STR ||
        (strcmp(args->a[1]->s, "latin1") && strcmp(args->a[1]->s, "latin-1")))
        return NULL;
    const uint8_t *p = (const uint8_t *)args->a[0]->s;
    size_t n = args->a[0]->slen, o = 0;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return NULL;
    for (size_t i = 0; i < n; o++) {
        if (p[i] < 0x80) buf[o] = p[i], i += 1;
        else if ((p[i] == 0xc2 || p[i] == 0xc3) && i + 1 < n && (p[i + 1] & 0xc0) == 0x80)
            buf[o] = (uint8_t)(((p[i] & 0x03) << 6) | (p[i + 1] & 0x3f)), i += 2;
        else {
            free(buf);
            return NULL;
        }
    }
    pv_t *v = mk_str(u, PV_BYTES, buf, o);
    free(buf);
    return v;
}

// numpy.core.multiarray.scalar(numpy.dtype(code, ...), raw bytes) -> int, float or bool,
// for the numpy numbers a training script leaves in hps. NULL if not one of those.
static pv_t *numpy_scalar(up_t *u, const pv_t *args) {
    if (args->n != 2 || args->a[0]->kind != PV_OBJ || strcmp(args->a[0]->s, "numpy.dtype") ||
        !args->a[0]->args || args->a[0]->args->n < 1 || args->a[0]->args->a[0]->kind != PV_STR ||
        (args->a[1]->kind != PV_BYTES && args->a[1]->kind != PV_STR))
        return NULL;
    const char *code = args->a[0]->args->a[0]->s;
    const uint8_t *b = (const uint8_t *)args->a[1]->s;
    size_t n = args->a[1]->slen;
    if (strlen(code) != 2 || (size_t)(code[1] - '0') != n) return NULL;
    pv_t *v = NULL;
    if (code[0] == 'i' || code[0] == 'u') {
        if (n != 1 && n != 2 && n != 4 && n != 8) return NULL;
        uint64_t x = rd_le(b, (int)n);
        if (code[0] == 'i' && n < 8 && (b[n - 1] & 0x80)) x |= ~0ull << (8 * n);
        if ((v = pv_new(u->ar, PV_INT))) v->i = (int64_t)x;
    } else if (code[0] == 'f' && (n == 4 || n == 8)) {
        if ((v = pv_new(u->ar, PV_FLOAT))) {
            if (n == 8) {
                uint64_t x = rd_le(b, 8);
                memcpy(&v->f, &x, 8);
            } else {
                uint32_t x = (uint32_t)rd_le(b, 4);
                float f;
                memcpy(&f, &x, 4);
                v->f = f;
            }
        }
    } else if (code[0] == 'b' && n == 1) {
        if ((v = pv_new(u->ar, PV_BOOL))) v->i = b[0] != 0;
    }
    return v;
}

// callable(*args) for the callables a state dict uses; others become opaque objects.
static pv_t *up_call(up_t *u, pv_t *fn, pv_t *args) {
    if (fn->kind != PV_GLOBAL) {
        UP_FAIL(u, JB_EFORMAT, "calls a %s, not a global", pv_kind_name(fn->kind));
        return NULL;
    }
    if (args->kind != PV_TUPLE) {
        UP_FAIL(u, JB_EFORMAT, "%s: arguments are a %s, not a tuple", fn->s,
                pv_kind_name(args->kind));
        return NULL;
    }
    const char *name = fn->s;
    if (!strcmp(name, "collections.OrderedDict")) {
        pv_t *d = pv_new(u->ar, PV_DICT);
        if (!d) return NULL;
        if (args->n >= 1 && args->a[0]->kind == PV_LIST) {
            pv_t *l = args->a[0];
            for (size_t k = 0; k < l->n; k++) {
                pv_t *p = l->a[k];
                if ((p->kind != PV_TUPLE && p->kind != PV_LIST) || p->n != 2) {
                    UP_FAIL(u, JB_EFORMAT, "OrderedDict: item %zu is not a pair", k);
                    return NULL;
                }
                if (pv_setitem(d, p->a[0], p->a[1])) return NULL;
            }
        }
        return d;
    }
    if (!strcmp(name, "torch._utils._rebuild_tensor_v2") ||
        !strcmp(name, "torch._utils._rebuild_tensor")) {
        pv_t *t = pv_new(u->ar, PV_TENSOR);
        if (!t) return NULL;
        int nd_size = 0, nd_stride = 0;
        if (args->n < 4 || args->a[0]->kind != PV_STORAGE || args->a[1]->kind != PV_INT ||
            args->a[1]->i < 0 || int_tuple(args->a[2], t->shape, &nd_size) != 0 ||
            int_tuple(args->a[3], t->stride, &nd_stride) != 0 || nd_size != nd_stride) {
            UP_FAIL(u, JB_EFORMAT,
                    "%s: arguments are not (storage, offset, size, stride) with at most %d "
                    "non-negative dimensions",
                    name, JB_MAX_DIMS);
            return NULL;
        }
        t->i = args->a[0]->i;
        // A legacy storage view shifts and narrows what the tensor may address.
        t->off = args->a[1]->i;
        t->vnumel = args->a[0]->vnumel;
        t->root_off = args->a[0]->off;
        t->ndim = nd_size;
        return t;
    }
    if (!strcmp(name, "torch._utils._rebuild_parameter") ||
        !strcmp(name, "torch._utils._rebuild_parameter_with_state")) {
        if (args->n < 1 || args->a[0]->kind != PV_TENSOR) {
            UP_FAIL(u, JB_EFORMAT, "%s: first argument is not a tensor", name);
            return NULL;
        }
        return args->a[0];
    }
    if (!strcmp(name, "_codecs.encode")) {   // protocol 2 bytes: encode(str, 'latin1')
        pv_t *b = latin1_bytes(u, args);
        if (b) return b;
    }
    if (!strcmp(name, "numpy.core.multiarray.scalar") ||
        !strcmp(name, "numpy._core.multiarray.scalar")) {   // a numpy number in hps
        pv_t *x = numpy_scalar(u, args);
        if (x) return x;
    }
    pv_t *o = mk_str(u, PV_OBJ, (const uint8_t *)name, strlen(name));
    if (o) o->args = args;
    return o;
}

// Run one pickle to STOP. Returns the top value, or NULL + err.
static pv_t *unpickle(up_t *u) {
    for (;;) {
        u->op_at = u->pos;
        if (u->pos >= u->len) {
            u->op = 0;
            UP_FAIL(u, JB_EFORMAT, "unexpected end of data before STOP");
            return NULL;
        }
        uint8_t op = u->op = u->p[u->pos++];
        const uint8_t *q;
        uint64_t n;
        pv_t *v, *w, *x;
        size_t first;
        switch (op) {
        case 0x80:   // PROTO
            if (up_need(u, 1)) return NULL;
            if (u->p[u->pos] > 5) {
                UP_FAIL(u, JB_EUNSUP, "protocol %d", u->p[u->pos]);
                return NULL;
            }
            u->pos++;
            break;
        case 0x95:   // FRAME: a length hint only
            if (up_need(u, 8)) return NULL;
            u->pos += 8;
            break;
        case '.':    // STOP
            if (!(v = up_pop(u))) return NULL;
            return v;
        case '(':    // MARK
            if (u->nmarks == u->mcap) {
                if (u->mcap >= PK_MAX_MARKS) {
                    UP_FAIL(u, JB_EFORMAT, "more than %u open MARKs", PK_MAX_MARKS);
                    return NULL;
                }
                size_t nc = u->mcap ? u->mcap * 2 : 32;
                size_t *nm = realloc(u->marks, nc * sizeof *nm);
                if (!nm) {
                    UP_FAIL(u, JB_ENOMEM, "out of memory");
                    return NULL;
                }
                u->marks = nm, u->mcap = nc;
            }
            u->marks[u->nmarks++] = u->sp;
            break;
        case '0':    // POP
            if (!up_pop(u)) return NULL;
            break;
        case '1':    // POP_MARK
            if (up_pop_mark(u, &first)) return NULL;
            u->sp = first;
            break;
        case '2':    // DUP
            if (!(v = up_top(u)) || up_push(u, v)) return NULL;
            break;
        case 'N':
            if (up_push(u, pv_new(u->ar, PV_NONE))) return NULL;
            break;
        case 0x88:   // NEWTRUE
        case 0x89:   // NEWFALSE
            if (!(v = pv_new(u->ar, PV_BOOL))) {
                UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            v->i = op == 0x88;
            if (up_push(u, v)) return NULL;
            break;
        case 'J':    // BININT
            if (up_need(u, 4)) return NULL;
            v = mk_int(u, (int32_t)(uint32_t)rd_le(u->p + u->pos, 4));
            u->pos += 4;
            if (up_push(u, v)) return NULL;
            break;
        case 'K':    // BININT1
            if (up_need(u, 1)) return NULL;
            if (up_push(u, mk_int(u, u->p[u->pos++]))) return NULL;
            break;
        case 'M':    // BININT2
            if (up_need(u, 2)) return NULL;
            v = mk_int(u, (int64_t)rd_le(u->p + u->pos, 2));
            u->pos += 2;
            if (up_push(u, v)) return NULL;
            break;
        case 0x8a:   // LONG1
        case 0x8b:   // LONG4
            if (up_need(u, op == 0x8a ? 1 : 4)) return NULL;
            n = op == 0x8a ? u->p[u->pos] : rd_le(u->p + u->pos, 4);
            u->pos += op == 0x8a ? 1 : 4;
            if (up_need(u, n)) return NULL;
            v = mk_long(u, u->p + u->pos, n);
            u->pos += n;
            if (up_push(u, v)) return NULL;
            break;
        case 'G': {  // BINFLOAT: big-endian double
            if (up_need(u, 8)) return NULL;
            uint64_t b = 0;
            for (int k = 0; k < 8; k++) b = (b << 8) | u->p[u->pos + k];
            u->pos += 8;
            if (!(v = pv_new(u->ar, PV_FLOAT))) {
                UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            memcpy(&v->f, &b, 8);
            if (up_push(u, v)) return NULL;
            break;
        }
        case 'X':    // BINUNICODE
        case 0x8c:   // SHORT_BINUNICODE
        case 0x8d:   // BINUNICODE8
        case 'T':    // BINSTRING (protocol 1 byte string, read as str)
        case 'U':    // SHORT_BINSTRING
        case 'B':    // BINBYTES
        case 'C':    // SHORT_BINBYTES
        case 0x8e: { // BINBYTES8
            int w_len = (op == 0x8c || op == 'U' || op == 'C') ? 1
                        : (op == 0x8d || op == 0x8e)             ? 8
                                                                 : 4;
            if (up_need(u, (size_t)w_len)) return NULL;
            n = rd_le(u->p + u->pos, w_len);
            u->pos += (size_t)w_len;
            if (up_need(u, n)) return NULL;
            q = u->p + u->pos;
            u->pos += n;
            int kind = (op == 'B' || op == 'C' || op == 0x8e) ? PV_BYTES : PV_STR;
            if (up_push(u, mk_str(u, kind, q, n))) return NULL;
            break;
        }
        case '}':    // EMPTY_DICT
            if (up_push(u, pv_new(u->ar, PV_DICT))) return NULL;
            break;
        case ']':    // EMPTY_LIST
            if (up_push(u, pv_new(u->ar, PV_LIST))) return NULL;
            break;
        case ')':    // EMPTY_TUPLE
            if (up_push(u, pv_new(u->ar, PV_TUPLE))) return NULL;
            break;
        case 0x85: case 0x86: case 0x87: {   // TUPLE1..3
            int k = op - 0x84;
            if (!(v = pv_new(u->ar, PV_TUPLE)) || pv_grow(v, 0, (size_t)k)) {
                UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            for (int j = k - 1; j >= 0; j--)
                if (!(v->a[j] = up_pop(u))) return NULL;
            v->n = (size_t)k;
            if (up_push(u, v)) return NULL;
            break;
        }
        case 't':    // TUPLE
        case 'l':    // LIST
        case 'd': {  // DICT
            if (up_pop_mark(u, &first)) return NULL;
            size_t cnt = u->sp - first;
            if (!(v = pv_new(u->ar, op == 'd' ? PV_DICT : op == 't' ? PV_TUPLE : PV_LIST))) {
                UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            if (op == 'd') {
                if (cnt % 2) {
                    UP_FAIL(u, JB_EFORMAT, "DICT with an odd number of values");
                    return NULL;
                }
                for (size_t j = first; j < u->sp; j += 2)
                    if (pv_setitem(v, u->stack[j], u->stack[j + 1])) {
                        UP_FAIL(u, JB_ENOMEM, "out of memory");
                        return NULL;
                    }
            } else {
                if (pv_grow(v, 0, cnt)) {
                    UP_FAIL(u, JB_ENOMEM, "out of memory");
                    return NULL;
                }
                if (cnt) memcpy(v->a, u->stack + first, cnt * sizeof *v->a);
                v->n = cnt;
            }
            u->sp = first;
            if (up_push(u, v)) return NULL;
            break;
        }
        case 'a':    // APPEND
            if (!(x = up_pop(u)) || !(v = up_top(u))) return NULL;
            if (v->kind != PV_LIST && v->kind != PV_OBJ) {
                UP_FAIL(u, JB_EFORMAT, "APPEND to a %s", pv_kind_name(v->kind));
                return NULL;
            }
            if (v->kind == PV_LIST && pv_append(v, x)) {
                UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            break;
        case 'e':    // APPENDS
            if (up_pop_mark(u, &first) || !(v = up_below(u, first))) return NULL;
            if (v->kind != PV_LIST && v->kind != PV_OBJ) {
                UP_FAIL(u, JB_EFORMAT, "APPENDS to a %s", pv_kind_name(v->kind));
                return NULL;
            }
            for (size_t j = first; v->kind == PV_LIST && j < u->sp; j++)
                if (pv_append(v, u->stack[j])) {
                    UP_FAIL(u, JB_ENOMEM, "out of memory");
                    return NULL;
                }
            u->sp = first;
            break;
        case 's':    // SETITEM
            if (!(x = up_pop(u)) || !(w = up_pop(u)) || !(v = up_top(u))) return NULL;
            if (v->kind != PV_DICT && v->kind != PV_OBJ) {
                UP_FAIL(u, JB_EFORMAT, "SETITEM on a %s", pv_kind_name(v->kind));
                return NULL;
            }
            if (pv_setitem(v, w, x)) {
                UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            break;
        case 'u':    // SETITEMS
            if (up_pop_mark(u, &first)) return NULL;
            if ((u->sp - first) % 2) {
                UP_FAIL(u, JB_EFORMAT, "SETITEMS with an odd number of values");
                return NULL;
            }
            if (!(v = up_below(u, first))) return NULL;
            if (v->kind != PV_DICT && v->kind != PV_OBJ) {
                UP_FAIL(u, JB_EFORMAT, "SETITEMS on a %s", pv_kind_name(v->kind));
                return NULL;
            }
            for (size_t j = first; j < u->sp; j += 2)
                if (pv_setitem(v, u->stack[j], u->stack[j + 1])) {
                    UP_FAIL(u, JB_ENOMEM, "out of memory");
                    return NULL;
                }
            u->sp = first;
            break;
        case 'q':    // BINPUT
            if (up_need(u, 1) || up_memo_put(u, u->p[u->pos++])) return NULL;
            break;
        case 'r':    // LONG_BINPUT
            if (up_need(u, 4)) return NULL;
            n = rd_le(u->p + u->pos, 4);
            u->pos += 4;
            if (up_memo_put(u, n)) return NULL;
            break;
        case 0x94:   // MEMOIZE: slot len(memo)
            if (up_memo_put(u, u->memo_used)) return NULL;
            break;
        case 'h':    // BINGET
            if (up_need(u, 1) || up_memo_get(u, u->p[u->pos++])) return NULL;
            break;
        case 'j':    // LONG_BINGET
            if (up_need(u, 4)) return NULL;
            n = rd_le(u->p + u->pos, 4);
            u->pos += 4;
            if (up_memo_get(u, n)) return NULL;
            break;
        case 'c': {  // GLOBAL "module\nname\n"
            size_t start = u->pos, nl[2], k = 0;
            for (size_t j = start; j < u->len && j - start < PK_MAX_GLOBAL && k < 2; j++)
                if (u->p[j] == '\n') nl[k++] = j;
            if (k < 2) {
                UP_FAIL(u, JB_EFORMAT, "GLOBAL name not terminated within %d bytes",
                        PK_MAX_GLOBAL);
                return NULL;
            }
            char buf[PK_MAX_GLOBAL + 1];
            size_t ml = nl[0] - start, nlen = nl[1] - nl[0] - 1;
            memcpy(buf, u->p + start, ml);
            buf[ml] = '.';
            memcpy(buf + ml + 1, u->p + nl[0] + 1, nlen);
            u->pos = nl[1] + 1;
            if (up_push(u, mk_str(u, PV_GLOBAL, (const uint8_t *)buf, ml + 1 + nlen)))
                return NULL;
            break;
        }
        case 0x93: { // STACK_GLOBAL
            if (!(w = up_pop(u)) || !(v = up_pop(u))) return NULL;
            if (v->kind != PV_STR || w->kind != PV_STR || v->slen + w->slen > PK_MAX_GLOBAL) {
                UP_FAIL(u, JB_EFORMAT, "STACK_GLOBAL needs two short strings");
                return NULL;
            }
            char buf[PK_MAX_GLOBAL + 2];
            snprintf(buf, sizeof buf, "%s.%s", v->s, w->s);
            if (up_push(u, mk_str(u, PV_GLOBAL, (const uint8_t *)buf, strlen(buf)))) return NULL;
            break;
        }
        case 'R':    // REDUCE
            if (!(w = up_pop(u)) || !(v = up_pop(u))) return NULL;
            if (!(x = up_call(u, v, w))) {
                if (u->err && u->err->code == JB_OK) UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            if (up_push(u, x)) return NULL;
            break;
        case 0x81: { // NEWOBJ: cls.__new__(cls, *args)
            if (!(w = up_pop(u)) || !(v = up_pop(u))) return NULL;
            if (v->kind != PV_GLOBAL || w->kind != PV_TUPLE) {
                UP_FAIL(u, JB_EFORMAT, "NEWOBJ needs a class and a tuple");
                return NULL;
            }
            if (!strcmp(v->s, "collections.OrderedDict")) x = pv_new(u->ar, PV_DICT);
            else x = mk_str(u, PV_OBJ, (const uint8_t *)v->s, v->slen);
            if (up_push(u, x)) return NULL;
            break;
        }
        case 'b':    // BUILD: object state; nothing we read depends on it
            if (!up_pop(u) || !up_top(u)) return NULL;
            break;
        case 'Q':    // BINPERSID
            if (!(v = up_pop(u))) return NULL;
            if (!(x = up_persistent(u, v))) {
                if (u->err && u->err->code == JB_OK) UP_FAIL(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            if (up_push(u, x)) return NULL;
            break;
        default:
            UP_FAIL(u, JB_EFORMAT, "unknown or unsupported pickle opcode");
            return NULL;
        }
    }
}

// Run one pickle starting at file offset *pos of [data, size); advances *pos.
static pv_t *run_pickle(const uint8_t *data, size_t size, size_t *pos, const char *file,
                        const char *what, arena_t *ar, stors_t *st, jb_err_t *err) {
    up_t u = {0};
    u.p = data + *pos;
    u.len = size - *pos;
    u.base = *pos;
    u.file = file;
    u.what = what;
    u.ar = ar;
    u.st = st;
    u.err = err;
    jb_err_clear(err);
    pv_t *v = unpickle(&u);
    *pos += u.pos;
    up_free(&u);
    return v;
}

// ---- JSON from values (hps) --------------------------------------------------

// Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF)?
static int utf8_valid(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || n - i < len) return 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

static json_t *pv_to_json(const pv_t *v, int depth, long *budget, const char *file,
                          jb_err_t *err) {
    if (depth > PK_MAX_JSON_DEPTH) {
        jb_err_set(err, JB_EFORMAT, "%s: hps nested deeper than %d levels", file,
                   PK_MAX_JSON_DEPTH);
        return NULL;
    }
    if (--*budget < 0) {
        jb_err_set(err, JB_EFORMAT, "%s: hps has more than %d values", file, PK_MAX_JSON_NODES);
        return NULL;
    }
    json_t *j = NULL;
    switch (v->kind) {
    case PV_BOOL: return json_boolean(v->i);   // static values: cannot fail
    case PV_INT:
        if ((j = json_integer((json_int_t)v->i))) return j;
        break;
    case PV_FLOAT:
        // JSON has no inf/nan: those read as null.
        if (!isfinite(v->f)) return json_null();
        if ((j = json_real(v->f))) return j;
        break;
    case PV_STR:
        if (!utf8_valid((const uint8_t *)v->s, v->slen)) return json_null();
        if ((j = json_stringn_nocheck(v->s, v->slen))) return j;
        break;
    case PV_TUPLE:
    case PV_LIST:
        if (!(j = json_array())) break;
        for (size_t k = 0; k < v->n; k++) {
            json_t *e = pv_to_json(v->a[k], depth + 1, budget, file, err);
            if (!e || json_array_append_new(j, e)) {
                json_decref(j);
                if (err && err->code == JB_OK) jb_err_set(err, JB_ENOMEM, "%s: out of memory", file);
                return NULL;
            }
        }
        return j;
    case PV_DICT:
    case PV_OBJ:
        if (v->kind == PV_OBJ && v->n == 0) return json_null();
        if (!(j = json_object())) break;
        for (size_t k = 0; k < v->n; k++) {
            const pv_t *key = v->a[2 * k];
            char buf[32];
            const char *ks = NULL;
            if (key->kind == PV_STR) ks = key->s;
            else if (key->kind == PV_INT) snprintf(buf, sizeof buf, "%lld", (long long)key->i), ks = buf;
            if (!ks) continue;   // keys JSON cannot spell are dropped
            json_t *e = pv_to_json(v->a[2 * k + 1], depth + 1, budget, file, err);
            if (!e) {
                json_decref(j);
                if (err && err->code == JB_OK) jb_err_set(err, JB_ENOMEM, "%s: out of memory", file);
                return NULL;
            }
            if (json_object_set_new(j, ks, e) != 0) {   // out of memory, or a key not UTF-8
                if (!utf8_valid((const uint8_t *)ks, strlen(ks))) continue;
                json_decref(j);
                jb_err_set(err, JB_ENOMEM, "%s: out of memory", file);
                return NULL;
            }
        }
        return j;
    default: return json_null();   // None, tensors, storages, big ints, bytes, globals
    }
    jb_err_set(err, JB_ENOMEM, "%s: out of memory", file);
    return NULL;
}

// ---- the checkpoint ----------------------------------------------------------

struct jb_torch {
    char *name;
    jb_torch_format_t format;
    uint8_t *map;            // owned mmap (open by path), or NULL
    size_t map_size;
    jb_torch_tensor_t *t;
    int n;
    void **copies;           // per tensor: owned C-order copy, or NULL
    json_t *hps;
    int64_t step;
    int n_storages, n_copied;
    smap_t by_name;
};

void jb_torch_destroy(jb_torch_t **ck_p) {
    if (!ck_p || !*ck_p) return;
    jb_torch_t *ck = *ck_p;
    for (int k = 0; k < ck->n; k++) {
        free((char *)ck->t[k].name);
        if (ck->copies) jb_free(ck->copies[k]);
    }
    free(ck->t);
    free(ck->copies);
    json_decref(ck->hps);
    smap_free(&ck->by_name);
    if (ck->map) munmap(ck->map, ck->map_size);
    free(ck->name);
    free(ck);
    *ck_p = NULL;
}

jb_torch_format_t jb_torch_format(const jb_torch_t *ck) { return ck->format; }
int jb_torch_count(const jb_torch_t *ck) { return ck->n; }
const jb_torch_tensor_t *jb_torch_tensor(const jb_torch_t *ck, int i) {
    return i >= 0 && i < ck->n ? &ck->t[i] : NULL;
}
const jb_torch_tensor_t *jb_torch_find(const jb_torch_t *ck, const char *name) {
    int i = smap_get(&ck->by_name, name);
    return i >= 0 ? &ck->t[i] : NULL;
}
const json_t *jb_torch_hps(const jb_torch_t *ck) { return ck->hps; }
int64_t jb_torch_step(const jb_torch_t *ck) { return ck->step; }
int jb_torch_n_storages(const jb_torch_t *ck) { return ck->n_storages; }
int jb_torch_n_copied(const jb_torch_t *ck) { return ck->n_copied; }

// One state-dict entry -> ck->t[k]: bounds against its storage, view or copy.
static int assemble_tensor(jb_torch_t *ck, int k, const char *key, const pv_t *v,
                           const stors_t *st, jb_err_t *err) {
    if (v->kind != PV_TENSOR)
        return jb_err_set(err, JB_EFORMAT, "%s: state dict entry '%s' is a %s, not a tensor",
                          ck->name, key, pv_kind_name(v->kind));
    const stor_t *s = &st->s[v->i];
    if (!s->data)
        return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': storage '%s' has no data",
                          ck->name, key, s->key);
    jb_torch_tensor_t *t = &ck->t[k];
    t->dtype = s->dtype;
    t->ndim = v->ndim;
    size_t es = jb_dtype_size(s->dtype);
    int64_t numel = 1, last = 0;   // last: largest element index addressed
    for (int d = 0; d < v->ndim; d++) {
        t->shape[d] = v->shape[d];
        if (v->shape[d] != 0 && numel > (((int64_t)1 << 50) / v->shape[d]))
            return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': shape too large", ck->name, key);
        numel *= v->shape[d];
    }
    if (numel > 0) {
        for (int d = 0; d < v->ndim; d++) {
            if (v->stride[d] > ((int64_t)1 << 50) / (v->shape[d] ? v->shape[d] : 1))
                return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': stride too large",
                                  ck->name, key);
            last += (v->shape[d] - 1) * v->stride[d];
        }
        // More elements than the storage holds: a broadcast (stride 0) view, which a
        // state dict does not contain; refusing it also bounds the copy below.
        if (numel > v->vnumel)
            return jb_err_set(err, JB_EUNSUP,
                              "%s: tensor '%s': %lld elements over a storage of %lld "
                              "(broadcast view)", ck->name, key, (long long)numel,
                              (long long)v->vnumel);
        if (v->off > ((int64_t)1 << 50) || v->off + last >= v->vnumel)
            return jb_err_set(err, JB_EFORMAT,
                              "%s: tensor '%s': offset %lld + extent %lld outside its storage "
                              "'%s' of %lld elements",
                              ck->name, key, (long long)v->off, (long long)last + 1, s->key,
                              (long long)v->vnumel);
    }
    t->nbytes = (size_t)numel * es;
    const uint8_t *base = s->data + ((size_t)v->root_off + (size_t)v->off) * es;
    if (numel == 0) {
        t->data = s->data;
        return 0;
    }
    int contiguous = 1;
    int64_t want = 1;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape[d] != 1 && v->stride[d] != want) contiguous = 0;
        want *= v->shape[d];
    }
    if (contiguous) {
        t->data = base;
        return 0;
    }
    // Strided view (a transposed weight, a permuted conv kernel): gather into C order.
    uint8_t *dst = jb_alloc(t->nbytes);
    if (!dst) return jb_err_set(err, JB_ENOMEM, "%s: tensor '%s': out of memory", ck->name, key);
    int64_t idx[JB_MAX_DIMS] = {0};
    for (int64_t e = 0; e < numel; e++) {
        int64_t src = 0;
        for (int d = 0; d < v->ndim; d++) src += idx[d] * v->stride[d];
        memcpy(dst + (size_t)e * es, base + (size_t)src * es, es);
        for (int d = v->ndim - 1; d >= 0; d--) {
            if (++idx[d] < v->shape[d]) break;
            idx[d] = 0;
        }
    }
    ck->copies[k] = dst;
    ck->n_copied++;
    t->data = dst;
    return 0;
}

// The object -> tensors, hps, step.
static int take_object(jb_torch_t *ck, const pv_t *obj, const stors_t *st, jb_err_t *err) {
    if (obj->kind != PV_DICT)
        return jb_err_set(err, JB_EFORMAT, "%s: the saved object is a %s, not a dict", ck->name,
                          pv_kind_name(obj->kind));
    const pv_t *sd = pv_dict_get(obj, "model");
    if (!sd) {
        sd = obj;   // a bare state dict
        if (sd->n == 0 || sd->a[1]->kind != PV_TENSOR)
            return jb_err_set(err, JB_EFORMAT, "%s: no 'model' entry and not a state dict",
                              ck->name);
    }
    if (sd->kind != PV_DICT)
        return jb_err_set(err, JB_EFORMAT, "%s: 'model' is a %s, not a dict", ck->name,
                          pv_kind_name(sd->kind));
    if (sd->n > (1u << 24))
        return jb_err_set(err, JB_EFORMAT, "%s: state dict too large", ck->name);
    ck->t = calloc(sd->n ? sd->n : 1, sizeof *ck->t);
    ck->copies = calloc(sd->n ? sd->n : 1, sizeof *ck->copies);
    if (!ck->t || !ck->copies) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", ck->name);
    for (size_t k = 0; k < sd->n; k++) {
        const pv_t *key = sd->a[2 * k];
        if (key->kind != PV_STR || strlen(key->s) != key->slen || key->slen == 0)
            return jb_err_set(err, JB_EFORMAT, "%s: state dict entry %zu: key is not a name",
                              ck->name, k);
        const char *name = key->s;
        if (!strncmp(name, "module.", 7) && name[7]) name += 7;
        if (!(ck->t[k].name = strdup(name)))
            return jb_err_set(err, JB_ENOMEM, "%s: out of memory", ck->name);
        ck->n = (int)k + 1;
        if (smap_get(&ck->by_name, name) >= 0)
            return jb_err_set(err, JB_EFORMAT, "%s: state dict names '%s' twice", ck->name, name);
        if (smap_put(&ck->by_name, ck->t[k].name, (int)k))
            return jb_err_set(err, JB_ENOMEM, "%s: out of memory", ck->name);
        if (assemble_tensor(ck, (int)k, name, sd->a[2 * k + 1], st, err)) return -1;
    }
    const pv_t *hps = sd != obj ? pv_dict_get(obj, "hps") : NULL;
    if (hps && hps->kind != PV_NONE) {
        if (hps->kind != PV_DICT && hps->kind != PV_OBJ)
            return jb_err_set(err, JB_EFORMAT, "%s: 'hps' is a %s, not a dict", ck->name,
                              pv_kind_name(hps->kind));
        long budget = PK_MAX_JSON_NODES;
        if (!(ck->hps = pv_to_json(hps, 0, &budget, ck->name, err))) return -1;
        if (!json_is_object(ck->hps)) {
            json_decref(ck->hps);
            ck->hps = json_object();
        }
    }
    const pv_t *step = sd != obj ? pv_dict_get(obj, "step") : NULL;
    ck->step = step && step->kind == PV_INT ? step->i : -1;
    ck->n_storages = st->n;
    return 0;
}

// ---- legacy format -----------------------------------------------------------

static int read_legacy(jb_torch_t *ck, const uint8_t *d, size_t size, jb_err_t *err) {
    static const uint8_t magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    arena_t ar = {0};
    stors_t st = {0};
    size_t pos = 0;
    int rc = -1;
    pv_t *v = run_pickle(d, size, &pos, ck->name, "magic number", &ar, NULL, err);
    if (!v) goto out;
    if (v->kind != PV_BIGINT || v->slen != 10 || memcmp(v->s, magic, 10)) {
        jb_err_set(err, JB_EFORMAT, "%s: not a PyTorch checkpoint (bad magic number)", ck->name);
        goto out;
    }
    if (!(v = run_pickle(d, size, &pos, ck->name, "protocol version", &ar, NULL, err))) goto out;
    if (v->kind != PV_INT || v->i != 1001) {
        jb_err_set(err, JB_EUNSUP, "%s: legacy protocol version %lld, expected 1001", ck->name,
                   v->kind == PV_INT ? (long long)v->i : -1LL);
        goto out;
    }
    if (!(v = run_pickle(d, size, &pos, ck->name, "sys info", &ar, NULL, err))) goto out;
    const pv_t *le = pv_dict_get(v, "little_endian");
    if (le && le->kind == PV_BOOL && !le->i) {
        jb_err_set(err, JB_EUNSUP, "%s: saved on a big-endian machine", ck->name);
        goto out;
    }
    pv_t *obj = run_pickle(d, size, &pos, ck->name, "object", &ar, &st, err);
    if (!obj) goto out;
    if (!(v = run_pickle(d, size, &pos, ck->name, "storage keys", &ar, NULL, err))) goto out;
    if (v->kind != PV_LIST) {
        jb_err_set(err, JB_EFORMAT, "%s: storage key list is a %s", ck->name,
                   pv_kind_name(v->kind));
        goto out;
    }
    for (size_t k = 0; k < v->n; k++) {
        if (v->a[k]->kind != PV_STR) {
            jb_err_set(err, JB_EFORMAT, "%s: storage key %zu is not a string", ck->name, k);
            goto out;
        }
        int si = smap_get(&st.by_key, v->a[k]->s);
        if (si < 0) {
            jb_err_set(err, JB_EFORMAT, "%s: storage '%s' listed but never used", ck->name,
                       v->a[k]->s);
            goto out;
        }
        stor_t *s = &st.s[si];
        size_t es = jb_dtype_size(s->dtype);
        if (size - pos < 8) {
            jb_err_set(err, JB_EFORMAT,
                       "%s: byte %zu: file ends before storage '%s' (%zu of %zu storages read)",
                       ck->name, pos, s->key, k, v->n);
            goto out;
        }
        int64_t cnt = (int64_t)rd_le(d + pos, 8);
        if (cnt != s->numel) {
            jb_err_set(err, JB_EFORMAT, "%s: byte %zu: storage '%s' holds %lld elements, "
                       "its tensors say %lld", ck->name, pos, s->key, (long long)cnt,
                       (long long)s->numel);
            goto out;
        }
        pos += 8;
        size_t nb = (size_t)cnt * es;
        if (size - pos < nb) {
            jb_err_set(err, JB_EFORMAT,
                       "%s: byte %zu: storage '%s' needs %zu bytes, only %zu left (truncated?)",
                       ck->name, pos, s->key, nb, size - pos);
            goto out;
        }
        if (s->data) {
            jb_err_set(err, JB_EFORMAT, "%s: storage '%s' listed twice", ck->name, s->key);
            goto out;
        }
        s->data = d + pos;
        pos += nb;
    }
    rc = take_object(ck, obj, &st, err);
out:
    arena_free(&ar);
    stors_free(&st);
    return rc;
}

// ---- zip format --------------------------------------------------------------

typedef struct {
    char *name;
    uint64_t off, size;   // record data
    uint32_t crc;
    int method, flags;
} zent_t;

static int zip_crc_ok(const uint8_t *p, uint64_t n, uint32_t want) {
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk, n -= chunk;
    }
    return (uint32_t)c == want;
}

static int read_zip(jb_torch_t *ck, const uint8_t *d, size_t size, jb_err_t *err) {
    zent_t *ents = NULL;
    size_t nent = 0, nalloc = 0;
    smap_t by_name = {0};
    arena_t ar = {0};
    stors_t st = {0};
    int rc = -1;
    const char *f = ck->name;
    // End of central directory: the last 22 bytes, or before a comment of up to 64 KiB.
    size_t e = (size_t)-1;
    if (size >= 22)
        for (size_t k = size - 22;; k--) {
            if (rd_le(d + k, 4) == 0x06054b50 && k + 22 + rd_le(d + k + 20, 2) == size) {
                e = k;
                break;
            }
            if (k == 0 || size - k > 22 + 65535) break;
        }
    if (e == (size_t)-1) {
        jb_err_set(err, JB_EFORMAT, "%s: zip: no end of central directory (truncated?)", f);
        goto out;
    }
    uint64_t n_total = rd_le(d + e + 10, 2), cd_size = rd_le(d + e + 12, 4),
             cd_off = rd_le(d + e + 16, 4);
    if (n_total == 0xffff || cd_size == 0xffffffff || cd_off == 0xffffffff) {
        // Zip64: locator just before, pointing at the 64-bit record.
        if (e < 20 || rd_le(d + e - 20, 4) != 0x07064b50) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: zip64 locator missing", f);
            goto out;
        }
        uint64_t z = rd_le(d + e - 20 + 8, 8);
        if (z > size || size - z < 56 || rd_le(d + z, 4) != 0x06064b50) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: bad zip64 end of central directory", f);
            goto out;
        }
        n_total = rd_le(d + z + 32, 8);
        cd_size = rd_le(d + z + 40, 8);
        cd_off = rd_le(d + z + 48, 8);
    }
    if (cd_off > size || cd_size > size - cd_off || n_total > cd_size / 46) {
        jb_err_set(err, JB_EFORMAT, "%s: zip: central directory outside the file", f);
        goto out;
    }
    ents = calloc(n_total ? n_total : 1, sizeof *ents);
    if (!ents) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", f);
        goto out;
    }
    nalloc = n_total;
    const uint8_t *c = d + cd_off, *cend = d + cd_off + cd_size;
    for (; nent < n_total; nent++) {
        if (cend - c < 46 || rd_le(c, 4) != 0x02014b50) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: central directory entry %zu is damaged", f,
                       nent);
            goto out;
        }
        zent_t *z = &ents[nent];
        z->flags = (int)rd_le(c + 8, 2);
        z->method = (int)rd_le(c + 10, 2);
        z->crc = (uint32_t)rd_le(c + 16, 4);
        uint64_t csize = rd_le(c + 20, 4), usize = rd_le(c + 24, 4), lho = rd_le(c + 42, 4);
        size_t nl = rd_le(c + 28, 2), xl = rd_le(c + 30, 2), cl = rd_le(c + 32, 2);
        if ((size_t)(cend - c) < 46 + nl + xl + cl) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: central directory entry %zu is damaged", f,
                       nent);
            goto out;
        }
        if (!(z->name = malloc(nl + 1))) {
            jb_err_set(err, JB_ENOMEM, "%s: out of memory", f);
            goto out;
        }
        memcpy(z->name, c + 46, nl);
        z->name[nl] = 0;
        // Zip64 extra field: the 64-bit values of the fields that read 0xffffffff.
        const uint8_t *x = c + 46 + nl, *xend = x + xl;
        while (xend - x >= 4) {
            size_t id = rd_le(x, 2), len = rd_le(x + 2, 2);
            if ((size_t)(xend - x - 4) < len) break;
            if (id == 1) {
                const uint8_t *y = x + 4, *yend = y + len;
                if (usize == 0xffffffff && yend - y >= 8) usize = rd_le(y, 8), y += 8;
                if (csize == 0xffffffff && yend - y >= 8) csize = rd_le(y, 8), y += 8;
                if (lho == 0xffffffff && yend - y >= 8) lho = rd_le(y, 8), y += 8;
            }
            x += 4 + len;
        }
        c += 46 + nl + xl + cl;
        if (lho > size || size - lho < 30 || rd_le(d + lho, 4) != 0x04034b50) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s': local header damaged", f, z->name);
            goto out;
        }
        uint64_t data = lho + 30 + rd_le(d + lho + 26, 2) + rd_le(d + lho + 28, 2);
        if (data > size || csize > size - data) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s' runs past the end of the file", f,
                       z->name);
            goto out;
        }
        z->off = data;
        z->size = usize;
        if (z->method == 0 && csize != usize) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s': stored sizes disagree", f, z->name);
            goto out;
        }
        if (smap_get(&by_name, z->name) < 0 && smap_put(&by_name, z->name, (int)nent)) {
            jb_err_set(err, JB_ENOMEM, "%s: out of memory", f);
            goto out;
        }
    }
    // The object: <dir>/data.pkl, whatever <dir> is.
    const zent_t *pk = NULL;
    for (size_t k = 0; k < nent && !pk; k++) {
        const char *s = strchr(ents[k].name, '/');
        if (s && !strcmp(s, "/data.pkl")) pk = &ents[k];
    }
    if (!pk) {
        jb_err_set(err, JB_EFORMAT, "%s: zip: no <dir>/data.pkl record (not a torch.save file?)",
                   f);
        goto out;
    }
    size_t plen = strlen(pk->name) - strlen("data.pkl");   // "<dir>/"
    char *prefix = strndup(pk->name, plen);
    if (!prefix) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", f);
        goto out;
    }
    char rec[1024];
    snprintf(rec, sizeof rec, "%sbyteorder", prefix);
    int bo = smap_get(&by_name, rec);
    if (bo >= 0 && !(ents[bo].size == 6 && !memcmp(d + ents[bo].off, "little", 6))) {
        jb_err_set(err, JB_EUNSUP, "%s: zip: saved with big-endian byte order", f);
        free(prefix);
        goto out;
    }
    for (size_t k = 0; k < nent; k++) {
        if (ents[k].method != 0 || (ents[k].flags & 1)) {
            jb_err_set(err, JB_EUNSUP, "%s: zip: record '%s' is compressed or encrypted "
                       "(method %d); torch.save writes stored records", f, ents[k].name,
                       ents[k].method);
            free(prefix);
            goto out;
        }
    }
    if (!zip_crc_ok(d + pk->off, pk->size, pk->crc)) {
        jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s': CRC-32 mismatch (corrupt file)", f,
                   pk->name);
        free(prefix);
        goto out;
    }
    // The pickle runs on the record alone; offsets in messages are within data.pkl.
    size_t ppos = 0;
    char what[64];
    snprintf(what, sizeof what, "data.pkl (file offset %llu)", (unsigned long long)pk->off);
    pv_t *obj = run_pickle(d + pk->off, pk->size, &ppos, f, what, &ar, &st, err);
    if (!obj) {
        free(prefix);
        goto out;
    }
    for (int k = 0; k < st.n; k++) {
        stor_t *s = &st.s[k];
        if (snprintf(rec, sizeof rec, "%sdata/%s", prefix, s->key) >= (int)sizeof rec) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: storage key too long", f);
            free(prefix);
            goto out;
        }
        int ri = smap_get(&by_name, rec);
        if (ri < 0) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s' missing", f, rec);
            free(prefix);
            goto out;
        }
        uint64_t want = (uint64_t)s->numel * jb_dtype_size(s->dtype);
        if (ents[ri].size != want) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s' holds %llu bytes, its tensors "
                       "say %llu", f, rec, (unsigned long long)ents[ri].size,
                       (unsigned long long)want);
            free(prefix);
            goto out;
        }
        if (!zip_crc_ok(d + ents[ri].off, ents[ri].size, ents[ri].crc)) {
            jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s': CRC-32 mismatch (corrupt file)",
                       f, rec);
            free(prefix);
            goto out;
        }
        s->data = d + ents[ri].off;
    }
    free(prefix);
    rc = take_object(ck, obj, &st, err);
out:
    for (size_t k = 0; k < nalloc; k++) free(ents[k].name);
    free(ents);
    smap_free(&by_name);
    arena_free(&ar);
    stors_free(&st);
    return rc;
}

// ---- entry points ------------------------------------------------------------

static jb_torch_t *open_common(jb_torch_t *ck, const uint8_t *d, size_t size, jb_err_t *err) {
    int rc;
    if (size >= 4 && !memcmp(d, "PK\x03\x04", 4)) {
        ck->format = JB_TORCH_ZIP;
        rc = read_zip(ck, d, size, err);
    } else if (size >= 2 && d[0] == 0x80) {
        ck->format = JB_TORCH_LEGACY;
        rc = read_legacy(ck, d, size, err);
    } else {
        rc = jb_err_set(err, JB_EFORMAT, "%s: neither a zip nor a legacy PyTorch checkpoint "
                        "(starts with %s)", ck->name, size ? "other bytes" : "nothing");
    }
    if (rc) jb_torch_destroy(&ck);
    return ck;
}

jb_torch_t *jb_torch_open_mem(const void *data, size_t size, const char *name, jb_err_t *err) {
    jb_torch_t *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->name = strdup(name ? name : "(memory)"))) {
        free(ck);
        jb_err_set(err, JB_ENOMEM, "out of memory");
        return NULL;
    }
    return open_common(ck, data, size, err);
}

jb_torch_t *jb_torch_open(const char *path, jb_err_t *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        jb_err_set(err, JB_EFORMAT, "%s: not a regular file", path);
        return NULL;
    }
    jb_torch_t *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->name = strdup(path))) {
        free(ck);
        close(fd);
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    size_t size = (size_t)sb.st_size;
    if (size > 0) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            jb_err_set(err, JB_EIO, "%s: mmap: %s", path, strerror(errno));
            jb_torch_destroy(&ck);
            return NULL;
        }
        ck->map = m;
        ck->map_size = size;
    }
    close(fd);
    return open_common(ck, ck->map, size, err);
}
