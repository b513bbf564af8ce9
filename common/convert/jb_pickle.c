// jb_pickle.c: see jb_pickle.h. Layout: values and arena, the machine's stack, memo and
// MARKs, the callables it knows, one function per group of opcodes, the run, JSON.
#include "jb_pickle.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Limits on what a pickle may ask for. Real checkpoints stay far below them
// (a 5B prior's state dict has ~2000 entries, its hps a few hundred keys).
#define PK_MAX_STACK (1u << 20)     // values on the pickle stack
#define PK_MAX_MARKS (1u << 16)     // open MARKs
#define PK_MAX_GLOBAL 512           // bytes of "module\nname\n"
#define PK_MAX_JSON_DEPTH 64        // nesting of values turned into JSON
#define PK_MAX_JSON_NODES (1 << 20) // values turned into JSON: the memo lets a
                                    // small pickle share a list 2^64 ways

// ---- values ------------------------------------------------------------------

const char *jb_pv_kind_name(int k) {
    static const char *names[] = {"None",   "bool",   "int",    "long int", "float",
                                  "str",    "bytes",  "tuple",  "list",     "dict",
                                  "global", "storage", "tensor", "object",  "mark"};
    return k >= 0 && k <= JB_PV_MARK ? names[k] : "?";
}

void jb_pk_arena_free(jb_pk_arena_t *ar) {
    for (size_t k = 0; k < ar->n; k++) {
        free(ar->all[k]->s);
        free(ar->all[k]->a);
        free(ar->all[k]);
    }
    free(ar->all);
    memset(ar, 0, sizeof *ar);
}

static jb_pv_t *pv_new(jb_pk_arena_t *ar, int kind) {
    if (ar->n == ar->cap) {
        size_t nc = ar->cap ? ar->cap * 2 : 1024;
        jb_pv_t **na = realloc(ar->all, nc * sizeof *na);
        if (!na) return NULL;
        ar->all = na, ar->cap = nc;
    }
    jb_pv_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    ar->all[ar->n++] = v;
    return v;
}

// Append k slots to v->a (items, or 2 per pair). 0 / -1 (out of memory).
static int pv_grow(jb_pv_t *v, size_t slots_used, size_t k) {
    if (slots_used + k <= v->cap) return 0;
    size_t nc = v->cap ? v->cap : 8;
    while (nc < slots_used + k) nc *= 2;
    jb_pv_t **na = realloc(v->a, nc * sizeof *na);
    if (!na) return -1;
    v->a = na, v->cap = nc;
    return 0;
}

static int pv_append(jb_pv_t *v, jb_pv_t *x) {
    if (pv_grow(v, v->n, 1)) return -1;
    v->a[v->n++] = x;
    return 0;
}

static int pv_setitem(jb_pv_t *d, jb_pv_t *k, jb_pv_t *x) {
    // A repeated str key replaces the old value, as in a Python dict (checked on
    // dicts of up to 4096 entries: the search is O(n) per item).
    if (k->kind == JB_PV_STR && d->n < 4096)
        for (size_t j = 0; j < d->n; j++) {
            jb_pv_t *o = d->a[2 * j];
            if (o->kind == JB_PV_STR && o->slen == k->slen && !memcmp(o->s, k->s, k->slen)) {
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

jb_pv_t *jb_pv_dict_get(const jb_pv_t *d, const char *key) {
    if (!d || (d->kind != JB_PV_DICT && d->kind != JB_PV_OBJ)) return NULL;
    size_t kl = strlen(key);
    for (size_t j = 0; j < d->n; j++) {
        jb_pv_t *k = d->a[2 * j];
        if (k->kind == JB_PV_STR && k->slen == kl && !memcmp(k->s, key, kl)) return d->a[2 * j + 1];
    }
    return NULL;
}

int jb_pv_is_str(const jb_pv_t *v, const char *s) {
    return v && v->kind == JB_PV_STR && v->slen == strlen(s) && !memcmp(v->s, s, v->slen);
}

// ---- the machine -------------------------------------------------------------

struct jb_pickle {
    const uint8_t *p;     // the pickle's bytes
    size_t len, pos;
    size_t base;          // file offset of p[0], for messages
    const char *file;     // for messages
    const char *what;     // which pickle ("object", "data.pkl", ...)
    jb_pk_arena_t *ar;
    const jb_pickle_hooks_t *hooks;   // may be NULL
    jb_pv_t **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    jb_pv_t **memo;
    size_t memo_cap, memo_used;
    size_t op_at;         // offset of the opcode being run
    uint8_t op;
    jb_err_t *err;
};
typedef struct jb_pickle up_t;

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

uint64_t jb_pk_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static int up_push(up_t *u, jb_pv_t *v) {
    if (!v) return UP_FAIL(u, JB_ENOMEM, "out of memory");
    if (u->sp == u->scap) {
        if (u->scap >= PK_MAX_STACK)
            return UP_FAIL(u, JB_EFORMAT, "stack deeper than %u values", PK_MAX_STACK);
        size_t nc = u->scap ? u->scap * 2 : 256;
        jb_pv_t **ns = realloc(u->stack, nc * sizeof *ns);
        if (!ns) return UP_FAIL(u, JB_ENOMEM, "out of memory");
        u->stack = ns, u->scap = nc;
    }
    u->stack[u->sp++] = v;
    return 0;
}

static jb_pv_t *up_pop(up_t *u) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (u->sp <= floor) {
        UP_FAIL(u, JB_EFORMAT, "pops an empty stack");
        return NULL;
    }
    return u->stack[--u->sp];
}

static jb_pv_t *up_top(up_t *u) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (u->sp <= floor) {
        UP_FAIL(u, JB_EFORMAT, "reads an empty stack");
        return NULL;
    }
    return u->stack[u->sp - 1];
}

// The value just below a popped MARK at stack index first (APPENDS, SETITEMS target).
static jb_pv_t *up_below(up_t *u, size_t first) {
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

static jb_pv_t *mk_str(up_t *u, int kind, const uint8_t *s, size_t n) {
    jb_pv_t *v = pv_new(u->ar, kind);
    if (!v) return NULL;
    v->s = malloc(n + 1);
    if (!v->s) return NULL;
    memcpy(v->s, s, n);
    v->s[n] = 0;
    v->slen = n;
    return v;
}

static jb_pv_t *mk_int(up_t *u, int64_t x) {
    jb_pv_t *v = pv_new(u->ar, JB_PV_INT);
    if (v) v->i = x;
    return v;
}

// LONG1/LONG4: little-endian two's complement; kept as int when it fits 8 bytes.
static jb_pv_t *mk_long(up_t *u, const uint8_t *b, size_t n) {
    if (n == 0) return mk_int(u, 0);
    if (n <= 8) {
        uint64_t x = jb_pk_le(b, (int)n);
        if (n < 8 && (b[n - 1] & 0x80)) x |= ~0ull << (8 * n);   // sign-extend
        return mk_int(u, (int64_t)x);
    }
    return mk_str(u, JB_PV_BIGINT, b, n);
}

static int up_memo_put(up_t *u, uint64_t idx) {
    jb_pv_t *v = up_top(u);
    if (!v) return -1;
    // Memo slots are numbered in order of use, so none can exceed the opcode count.
    if (idx > u->len) return UP_FAIL(u, JB_EFORMAT, "memo index %llu out of range",
                                     (unsigned long long)idx);
    if (idx >= u->memo_cap) {
        size_t nc = u->memo_cap ? u->memo_cap : 64;
        while (nc <= idx) nc *= 2;
        jb_pv_t **nm = realloc(u->memo, nc * sizeof *nm);
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

jb_pv_t *jb_pickle_new(jb_pickle_t *u, int kind) { return pv_new(u->ar, kind); }

int jb_pickle_fail(jb_pickle_t *u, int code, const char *fmt, ...) {
    char msg[sizeof u->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return UP_FAIL(u, code, "%s", msg);
}

// _codecs.encode(s, 'latin1'): code points below 256 back to bytes. NULL if not that.
static jb_pv_t *latin1_bytes(up_t *u, const jb_pv_t *args) {
    if (args->n != 2 || args->a[0]->kind != JB_PV_STR || args->a[1]->kind != JB_PV_STR ||
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
    jb_pv_t *v = mk_str(u, JB_PV_BYTES, buf, o);
    free(buf);
    return v;
}

// numpy.core.multiarray.scalar(numpy.dtype(code, ...), raw bytes) -> int, float or bool,
// for the numpy numbers a training script leaves in hps. NULL if not one of those.
static jb_pv_t *numpy_scalar(up_t *u, const jb_pv_t *args) {
    if (args->n != 2 || args->a[0]->kind != JB_PV_OBJ || strcmp(args->a[0]->s, "numpy.dtype") ||
        !args->a[0]->args || args->a[0]->args->n < 1 || args->a[0]->args->a[0]->kind != JB_PV_STR ||
        (args->a[1]->kind != JB_PV_BYTES && args->a[1]->kind != JB_PV_STR))
        return NULL;
    const char *code = args->a[0]->args->a[0]->s;
    const uint8_t *b = (const uint8_t *)args->a[1]->s;
    size_t n = args->a[1]->slen;
    if (strlen(code) != 2 || (size_t)(code[1] - '0') != n) return NULL;
    jb_pv_t *v = NULL;
    if (code[0] == 'i' || code[0] == 'u') {
        if (n != 1 && n != 2 && n != 4 && n != 8) return NULL;
        uint64_t x = jb_pk_le(b, (int)n);
        if (code[0] == 'i' && n < 8 && (b[n - 1] & 0x80)) x |= ~0ull << (8 * n);
        if ((v = pv_new(u->ar, JB_PV_INT))) v->i = (int64_t)x;
    } else if (code[0] == 'f' && (n == 4 || n == 8)) {
        if ((v = pv_new(u->ar, JB_PV_FLOAT))) {
            if (n == 8) {
                uint64_t x = jb_pk_le(b, 8);
                memcpy(&v->f, &x, 8);
            } else {
                uint32_t x = (uint32_t)jb_pk_le(b, 4);
                float f;
                memcpy(&f, &x, 4);
                v->f = f;
            }
        }
    } else if (code[0] == 'b' && n == 1) {
        if ((v = pv_new(u->ar, JB_PV_BOOL))) v->i = b[0] != 0;
    }
    return v;
}


// ---- callables ---------------------------------------------------------------

// collections.OrderedDict([(k, v), ...]) -> a dict.
static jb_pv_t *ordered_dict(up_t *u, const jb_pv_t *args) {
    jb_pv_t *d = pv_new(u->ar, JB_PV_DICT);
    if (!d) return NULL;
    if (args->n >= 1 && args->a[0]->kind == JB_PV_LIST) {
        jb_pv_t *l = args->a[0];
        for (size_t k = 0; k < l->n; k++) {
            jb_pv_t *p = l->a[k];
            if ((p->kind != JB_PV_TUPLE && p->kind != JB_PV_LIST) || p->n != 2) {
                UP_FAIL(u, JB_EFORMAT, "OrderedDict: item %zu is not a pair", k);
                return NULL;
            }
            if (pv_setitem(d, p->a[0], p->a[1])) return NULL;
        }
    }
    return d;
}

// callable(*args): the callables the machine knows, then the reader's hook; what neither
// takes becomes an opaque object.
static jb_pv_t *up_call(up_t *u, jb_pv_t *fn, jb_pv_t *args) {
    if (fn->kind != JB_PV_GLOBAL) {
        UP_FAIL(u, JB_EFORMAT, "calls a %s, not a global", jb_pv_kind_name(fn->kind));
        return NULL;
    }
    if (args->kind != JB_PV_TUPLE) {
        UP_FAIL(u, JB_EFORMAT, "%s: arguments are a %s, not a tuple", fn->s,
                jb_pv_kind_name(args->kind));
        return NULL;
    }
    const char *name = fn->s;
    if (!strcmp(name, "collections.OrderedDict")) return ordered_dict(u, args);
    if (!strcmp(name, "_codecs.encode")) {   // protocol 2 bytes: encode(str, 'latin1')
        jb_pv_t *b = latin1_bytes(u, args);
        if (b) return b;
    }
    if (!strcmp(name, "numpy.core.multiarray.scalar") ||
        !strcmp(name, "numpy._core.multiarray.scalar")) {   // a numpy number in hps
        jb_pv_t *x = numpy_scalar(u, args);
        if (x) return x;
    }
    if (u->hooks && u->hooks->call) {
        jb_pv_t *x = u->hooks->call(u, u->hooks->ctx, name, args);
        if (x || u->err->code != JB_OK) return x;
    }
    jb_pv_t *o = mk_str(u, JB_PV_OBJ, (const uint8_t *)name, strlen(name));
    if (o) o->args = args;
    return o;
}

// ---- opcodes -----------------------------------------------------------------
// Each group: 1 when it ran op, 0 when op is not one of its own, -1 on error.

// PROTO, FRAME, MARK, POP, POP_MARK, DUP.
static int op_stack(up_t *u, uint8_t op) {
    jb_pv_t *v;
    size_t first;
    switch (op) {
    case 0x80:   // PROTO
        if (up_need(u, 1)) return -1;
        if (u->p[u->pos] > 5) return UP_FAIL(u, JB_EUNSUP, "protocol %d", u->p[u->pos]);
        u->pos++;
        return 1;
    case 0x95:   // FRAME: a length hint only
        if (up_need(u, 8)) return -1;
        u->pos += 8;
        return 1;
    case '(':    // MARK
        if (u->nmarks == u->mcap) {
            if (u->mcap >= PK_MAX_MARKS)
                return UP_FAIL(u, JB_EFORMAT, "more than %u open MARKs", PK_MAX_MARKS);
            size_t nc = u->mcap ? u->mcap * 2 : 32;
            size_t *nm = realloc(u->marks, nc * sizeof *nm);
            if (!nm) return UP_FAIL(u, JB_ENOMEM, "out of memory");
            u->marks = nm, u->mcap = nc;
        }
        u->marks[u->nmarks++] = u->sp;
        return 1;
    case '0':    // POP
        return up_pop(u) ? 1 : -1;
    case '1':    // POP_MARK
        if (up_pop_mark(u, &first)) return -1;
        u->sp = first;
        return 1;
    case '2':    // DUP
        return (v = up_top(u)) && !up_push(u, v) ? 1 : -1;
    default:
        return 0;
    }
}

// None, bools, ints, floats, strings and bytes.
static int op_scalar(up_t *u, uint8_t op) {
    jb_pv_t *v;
    uint64_t n;
    switch (op) {
    case 'N':
        return up_push(u, pv_new(u->ar, JB_PV_NONE)) ? -1 : 1;
    case 0x88:   // NEWTRUE
    case 0x89:   // NEWFALSE
        if (!(v = pv_new(u->ar, JB_PV_BOOL))) return UP_FAIL(u, JB_ENOMEM, "out of memory");
        v->i = op == 0x88;
        return up_push(u, v) ? -1 : 1;
    case 'J':    // BININT
        if (up_need(u, 4)) return -1;
        v = mk_int(u, (int32_t)(uint32_t)jb_pk_le(u->p + u->pos, 4));
        u->pos += 4;
        return up_push(u, v) ? -1 : 1;
    case 'K':    // BININT1
        if (up_need(u, 1)) return -1;
        return up_push(u, mk_int(u, u->p[u->pos++])) ? -1 : 1;
    case 'M':    // BININT2
        if (up_need(u, 2)) return -1;
        v = mk_int(u, (int64_t)jb_pk_le(u->p + u->pos, 2));
        u->pos += 2;
        return up_push(u, v) ? -1 : 1;
    case 0x8a:   // LONG1
    case 0x8b:   // LONG4
        if (up_need(u, op == 0x8a ? 1 : 4)) return -1;
        n = op == 0x8a ? u->p[u->pos] : jb_pk_le(u->p + u->pos, 4);
        u->pos += op == 0x8a ? 1 : 4;
        if (up_need(u, n)) return -1;
        v = mk_long(u, u->p + u->pos, n);
        u->pos += n;
        return up_push(u, v) ? -1 : 1;
    case 'G': {  // BINFLOAT: big-endian double
        if (up_need(u, 8)) return -1;
        uint64_t b = 0;
        for (int k = 0; k < 8; k++) b = (b << 8) | u->p[u->pos + k];
        u->pos += 8;
        if (!(v = pv_new(u->ar, JB_PV_FLOAT))) return UP_FAIL(u, JB_ENOMEM, "out of memory");
        memcpy(&v->f, &b, 8);
        return up_push(u, v) ? -1 : 1;
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
        if (up_need(u, (size_t)w_len)) return -1;
        n = jb_pk_le(u->p + u->pos, w_len);
        u->pos += (size_t)w_len;
        if (up_need(u, n)) return -1;
        const uint8_t *q = u->p + u->pos;
        u->pos += n;
        int kind = (op == 'B' || op == 'C' || op == 0x8e) ? JB_PV_BYTES : JB_PV_STR;
        return up_push(u, mk_str(u, kind, q, n)) ? -1 : 1;
    }
    default:
        return 0;
    }
}

// TUPLE, LIST, DICT (from the values above the last MARK).
static int op_collect(up_t *u, uint8_t op) {
    size_t first;
    if (up_pop_mark(u, &first)) return -1;
    size_t cnt = u->sp - first;
    jb_pv_t *v = pv_new(u->ar, op == 'd' ? JB_PV_DICT : op == 't' ? JB_PV_TUPLE : JB_PV_LIST);
    if (!v) return UP_FAIL(u, JB_ENOMEM, "out of memory");
    if (op == 'd') {
        if (cnt % 2) return UP_FAIL(u, JB_EFORMAT, "DICT with an odd number of values");
        for (size_t j = first; j < u->sp; j += 2)
            if (pv_setitem(v, u->stack[j], u->stack[j + 1]))
                return UP_FAIL(u, JB_ENOMEM, "out of memory");
    } else {
        if (pv_grow(v, 0, cnt)) return UP_FAIL(u, JB_ENOMEM, "out of memory");
        if (cnt) memcpy(v->a, u->stack + first, cnt * sizeof *v->a);
        v->n = cnt;
    }
    u->sp = first;
    return up_push(u, v) ? -1 : 1;
}

// SETITEM and SETITEMS: into a dict (or an opaque object's items).
static int op_setitems(up_t *u, uint8_t op) {
    jb_pv_t *v, *w, *x;
    size_t first;
    if (op == 's') {
        if (!(x = up_pop(u)) || !(w = up_pop(u)) || !(v = up_top(u))) return -1;
        if (v->kind != JB_PV_DICT && v->kind != JB_PV_OBJ)
            return UP_FAIL(u, JB_EFORMAT, "SETITEM on a %s", jb_pv_kind_name(v->kind));
        return pv_setitem(v, w, x) ? UP_FAIL(u, JB_ENOMEM, "out of memory") : 1;
    }
    if (up_pop_mark(u, &first)) return -1;
    if ((u->sp - first) % 2)
        return UP_FAIL(u, JB_EFORMAT, "SETITEMS with an odd number of values");
    if (!(v = up_below(u, first))) return -1;
    if (v->kind != JB_PV_DICT && v->kind != JB_PV_OBJ)
        return UP_FAIL(u, JB_EFORMAT, "SETITEMS on a %s", jb_pv_kind_name(v->kind));
    for (size_t j = first; j < u->sp; j += 2)
        if (pv_setitem(v, u->stack[j], u->stack[j + 1]))
            return UP_FAIL(u, JB_ENOMEM, "out of memory");
    u->sp = first;
    return 1;
}

// Empty and small tuples, lists and dicts; TUPLE, LIST, DICT; APPEND(S), SETITEM(S).
static int op_container(up_t *u, uint8_t op) {
    jb_pv_t *v, *x;
    size_t first;
    switch (op) {
    case '}':    // EMPTY_DICT
        return up_push(u, pv_new(u->ar, JB_PV_DICT)) ? -1 : 1;
    case ']':    // EMPTY_LIST
        return up_push(u, pv_new(u->ar, JB_PV_LIST)) ? -1 : 1;
    case ')':    // EMPTY_TUPLE
        return up_push(u, pv_new(u->ar, JB_PV_TUPLE)) ? -1 : 1;
    case 0x85: case 0x86: case 0x87: {   // TUPLE1..3
        int k = op - 0x84;
        if (!(v = pv_new(u->ar, JB_PV_TUPLE)) || pv_grow(v, 0, (size_t)k))
            return UP_FAIL(u, JB_ENOMEM, "out of memory");
        for (int j = k - 1; j >= 0; j--)
            if (!(v->a[j] = up_pop(u))) return -1;
        v->n = (size_t)k;
        return up_push(u, v) ? -1 : 1;
    }
    case 't':    // TUPLE
    case 'l':    // LIST
    case 'd':    // DICT
        return op_collect(u, op);
    case 'a':    // APPEND
        if (!(x = up_pop(u)) || !(v = up_top(u))) return -1;
        if (v->kind != JB_PV_LIST && v->kind != JB_PV_OBJ)
            return UP_FAIL(u, JB_EFORMAT, "APPEND to a %s", jb_pv_kind_name(v->kind));
        if (v->kind == JB_PV_LIST && pv_append(v, x))
            return UP_FAIL(u, JB_ENOMEM, "out of memory");
        return 1;
    case 'e':    // APPENDS
        if (up_pop_mark(u, &first) || !(v = up_below(u, first))) return -1;
        if (v->kind != JB_PV_LIST && v->kind != JB_PV_OBJ)
            return UP_FAIL(u, JB_EFORMAT, "APPENDS to a %s", jb_pv_kind_name(v->kind));
        for (size_t j = first; v->kind == JB_PV_LIST && j < u->sp; j++)
            if (pv_append(v, u->stack[j])) return UP_FAIL(u, JB_ENOMEM, "out of memory");
        u->sp = first;
        return 1;
    case 's':    // SETITEM
    case 'u':    // SETITEMS
        return op_setitems(u, op);
    default:
        return 0;
    }
}

// BINPUT, LONG_BINPUT, MEMOIZE, BINGET, LONG_BINGET.
static int op_memo(up_t *u, uint8_t op) {
    uint64_t n;
    switch (op) {
    case 'q':    // BINPUT
        return up_need(u, 1) || up_memo_put(u, u->p[u->pos++]) ? -1 : 1;
    case 'r':    // LONG_BINPUT
        if (up_need(u, 4)) return -1;
        n = jb_pk_le(u->p + u->pos, 4);
        u->pos += 4;
        return up_memo_put(u, n) ? -1 : 1;
    case 0x94:   // MEMOIZE: slot len(memo)
        return up_memo_put(u, u->memo_used) ? -1 : 1;
    case 'h':    // BINGET
        return up_need(u, 1) || up_memo_get(u, u->p[u->pos++]) ? -1 : 1;
    case 'j':    // LONG_BINGET
        if (up_need(u, 4)) return -1;
        n = jb_pk_le(u->p + u->pos, 4);
        u->pos += 4;
        return up_memo_get(u, n) ? -1 : 1;
    default:
        return 0;
    }
}

// GLOBAL "module\nname\n" and STACK_GLOBAL: a JB_PV_GLOBAL "module.name".
static int op_global(up_t *u, uint8_t op) {
    char buf[PK_MAX_GLOBAL + 2];
    size_t len;
    if (op == 'c') {
        size_t start = u->pos, nl[2], k = 0;
        for (size_t j = start; j < u->len && j - start < PK_MAX_GLOBAL && k < 2; j++)
            if (u->p[j] == '\n') nl[k++] = j;
        if (k < 2)
            return UP_FAIL(u, JB_EFORMAT, "GLOBAL name not terminated within %d bytes",
                           PK_MAX_GLOBAL);
        size_t ml = nl[0] - start, nlen = nl[1] - nl[0] - 1;
        memcpy(buf, u->p + start, ml);
        buf[ml] = '.';
        memcpy(buf + ml + 1, u->p + nl[0] + 1, nlen);
        u->pos = nl[1] + 1;
        len = ml + 1 + nlen;
    } else {
        jb_pv_t *v, *w;
        if (!(w = up_pop(u)) || !(v = up_pop(u))) return -1;
        if (v->kind != JB_PV_STR || w->kind != JB_PV_STR || v->slen + w->slen > PK_MAX_GLOBAL)
            return UP_FAIL(u, JB_EFORMAT, "STACK_GLOBAL needs two short strings");
        snprintf(buf, sizeof buf, "%s.%s", v->s, w->s);
        len = strlen(buf);
    }
    return up_push(u, mk_str(u, JB_PV_GLOBAL, (const uint8_t *)buf, len)) ? -1 : 1;
}

// GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ, BUILD, BINPERSID.
static int op_object(up_t *u, uint8_t op) {
    jb_pv_t *v, *w, *x;
    switch (op) {
    case 'c':    // GLOBAL
    case 0x93:   // STACK_GLOBAL
        return op_global(u, op);
    case 'R':    // REDUCE
        if (!(w = up_pop(u)) || !(v = up_pop(u))) return -1;
        if (!(x = up_call(u, v, w)))
            return u->err->code == JB_OK ? UP_FAIL(u, JB_ENOMEM, "out of memory") : -1;
        return up_push(u, x) ? -1 : 1;
    case 0x81:   // NEWOBJ: cls.__new__(cls, *args)
        if (!(w = up_pop(u)) || !(v = up_pop(u))) return -1;
        if (v->kind != JB_PV_GLOBAL || w->kind != JB_PV_TUPLE)
            return UP_FAIL(u, JB_EFORMAT, "NEWOBJ needs a class and a tuple");
        if (!strcmp(v->s, "collections.OrderedDict")) x = pv_new(u->ar, JB_PV_DICT);
        else x = mk_str(u, JB_PV_OBJ, (const uint8_t *)v->s, v->slen);
        return up_push(u, x) ? -1 : 1;
    case 'b':    // BUILD: object state; nothing we read depends on it
        return up_pop(u) && up_top(u) ? 1 : -1;
    case 'Q':    // BINPERSID
        if (!(v = up_pop(u))) return -1;
        if (!u->hooks || !u->hooks->persistent)
            return UP_FAIL(u, JB_EFORMAT, "persistent id where none is allowed");
        if (!(x = u->hooks->persistent(u, u->hooks->ctx, v)))
            return u->err->code == JB_OK ? UP_FAIL(u, JB_ENOMEM, "out of memory") : -1;
        return up_push(u, x) ? -1 : 1;
    default:
        return 0;
    }
}

// Run to STOP. Returns the top value, or NULL + err.
static jb_pv_t *unpickle(up_t *u) {
    for (;;) {
        u->op_at = u->pos;
        if (u->pos >= u->len) {
            u->op = 0;
            UP_FAIL(u, JB_EFORMAT, "unexpected end of data before STOP");
            return NULL;
        }
        uint8_t op = u->op = u->p[u->pos++];
        if (op == '.') return up_pop(u);   // STOP
        int rc = op_stack(u, op);
        if (!rc) rc = op_scalar(u, op);
        if (!rc) rc = op_container(u, op);
        if (!rc) rc = op_memo(u, op);
        if (!rc) rc = op_object(u, op);
        if (!rc) UP_FAIL(u, JB_EFORMAT, "unknown or unsupported pickle opcode");
        if (rc <= 0) return NULL;
    }
}

jb_pv_t *jb_pickle_run(const uint8_t *data, size_t size, size_t *pos, const char *file,
                       const char *what, jb_pk_arena_t *ar, const jb_pickle_hooks_t *hooks,
                       jb_err_t *err) {
    up_t u = {0};
    u.p = data + *pos;
    u.len = size - *pos;
    u.base = *pos;
    u.file = file;
    u.what = what;
    u.ar = ar;
    u.hooks = hooks;
    u.err = err;
    jb_err_clear(err);
    jb_pv_t *v = unpickle(&u);
    *pos += u.pos;
    up_free(&u);
    return v;
}

// ---- JSON from values --------------------------------------------------------

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

static json_t *to_json(const jb_pv_t *v, int depth, long *budget, const char *file,
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
    case JB_PV_BOOL: return json_boolean(v->i);   // static values: cannot fail
    case JB_PV_INT:
        if ((j = json_integer((json_int_t)v->i))) return j;
        break;
    case JB_PV_FLOAT:
        // JSON has no inf/nan: those read as null.
        if (!isfinite(v->f)) return json_null();
        if ((j = json_real(v->f))) return j;
        break;
    case JB_PV_STR:
        if (!utf8_valid((const uint8_t *)v->s, v->slen)) return json_null();
        if ((j = json_stringn_nocheck(v->s, v->slen))) return j;
        break;
    case JB_PV_TUPLE:
    case JB_PV_LIST:
        if (!(j = json_array())) break;
        for (size_t k = 0; k < v->n; k++) {
            json_t *e = to_json(v->a[k], depth + 1, budget, file, err);
            if (!e || json_array_append_new(j, e)) {
                json_decref(j);
                if (err && err->code == JB_OK) jb_err_set(err, JB_ENOMEM, "%s: out of memory", file);
                return NULL;
            }
        }
        return j;
    case JB_PV_DICT:
    case JB_PV_OBJ:
        if (v->kind == JB_PV_OBJ && v->n == 0) return json_null();
        if (!(j = json_object())) break;
        for (size_t k = 0; k < v->n; k++) {
            const jb_pv_t *key = v->a[2 * k];
            char buf[32];
            const char *ks = NULL;
            if (key->kind == JB_PV_STR) ks = key->s;
            else if (key->kind == JB_PV_INT) snprintf(buf, sizeof buf, "%lld", (long long)key->i), ks = buf;
            if (!ks) continue;   // keys JSON cannot spell are dropped
            json_t *e = to_json(v->a[2 * k + 1], depth + 1, budget, file, err);
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

json_t *jb_pv_to_json(const jb_pv_t *v, const char *file, jb_err_t *err) {
    long budget = PK_MAX_JSON_NODES;
    return to_json(v, 0, &budget, file, err);
}
