// jb_pickle.h: a small pickle machine (the converter's reader of torch.save objects).
//
//   jb_pk_arena_t ar = {0};
//   jb_pickle_hooks_t hooks = {my_persistent, my_call, ctx};   // or NULL: none allowed
//   size_t pos = 0;
//   jb_pv_t *obj = jb_pickle_run(data, size, &pos, "x.pth", "object", &ar, &hooks, &err);
//   ... obj's values live until jb_pk_arena_free(&ar)
//
// Protocols 0-5 as torch writes them: PROTO, FRAME, STOP, MARK, POP, POP_MARK, DUP, None,
// bools, BININT*, LONG1/4, BINFLOAT, the string and bytes opcodes, empty and MARKed tuples,
// lists and dicts, TUPLE1-3, APPEND(S), SETITEM(S), the memo (BINPUT, LONG_BINPUT,
// MEMOIZE, BINGET, LONG_BINGET), GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ, BUILD (state
// ignored) and BINPERSID (through the persistent hook). REDUCE knows
// collections.OrderedDict, _codecs.encode(str, 'latin1') and numpy scalars; any other
// callable goes to the call hook, and what it declines becomes an opaque object (JB_PV_OBJ:
// class name, arguments, and the items SETITEM(S) gave it), so that entries a reader does
// not need are read without failing.
//
// Bad input never crashes: every length, memo slot, stack depth and MARK is checked and an
// error (JB_EFORMAT, JB_EUNSUP for a protocol above 5, JB_ENOMEM) names the file, the
// pickle, the byte offset and the opcode.
//
// Thread rules: a run and its arena belong to one thread. Values are shared freely (the memo
// may even build cycles) and are only freed all at once with their arena.
#ifndef JB_PICKLE_H
#define JB_PICKLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_tensor.h"

enum {
    JB_PV_NONE, JB_PV_BOOL, JB_PV_INT, JB_PV_BIGINT, JB_PV_FLOAT, JB_PV_STR, JB_PV_BYTES,
    JB_PV_TUPLE, JB_PV_LIST, JB_PV_DICT, JB_PV_GLOBAL, JB_PV_STORAGE, JB_PV_TENSOR, JB_PV_OBJ,
    JB_PV_MARK
};

// One value. The STORAGE and TENSOR fields are set by a reader's hooks (jb_torch.c).
typedef struct jb_pv jb_pv_t;
struct jb_pv {
    int kind;
    int64_t i;        // INT, BOOL; STORAGE and TENSOR: storage index
    double f;         // FLOAT
    char *s;          // STR, BYTES, BIGINT (raw little-endian), GLOBAL "module.name", OBJ class
    size_t slen;
    jb_pv_t **a;      // TUPLE, LIST: items; DICT, OBJ: key/value pairs (2 * n slots)
    size_t n, cap;    // items or pairs
    int64_t off;      // STORAGE: element offset in the root storage; TENSOR: storage offset
    int64_t vnumel;   // STORAGE: elements visible through it
    int64_t root_off; // TENSOR: its storage's own offset in the root (legacy views)
    jb_pv_t *args;    // OBJ: the arguments it was called with
    int ndim;         // TENSOR
    int64_t shape[JB_MAX_DIMS], stride[JB_MAX_DIMS];
};

// Every value of a load lives in one arena and dies with it.
typedef struct {
    jb_pv_t **all;
    size_t n, cap;
} jb_pk_arena_t;

typedef struct jb_pickle jb_pickle_t;   // one run (opaque)

typedef struct {
    // BINPERSID: the value the persistent id pid stands for; NULL + jb_pickle_fail to refuse.
    // A NULL hook refuses every persistent id.
    jb_pv_t *(*persistent)(jb_pickle_t *u, void *ctx, jb_pv_t *pid);
    // REDUCE of a global the machine does not know (name "module.name", args a tuple): the
    // value; NULL without an error declines (the call becomes an opaque object); NULL after
    // jb_pickle_fail fails the run. May be NULL.
    jb_pv_t *(*call)(jb_pickle_t *u, void *ctx, const char *name, jb_pv_t *args);
    void *ctx;
} jb_pickle_hooks_t;

// Runs one pickle starting at offset *pos of [data, size) to its STOP; advances *pos. Returns
// the top value, or NULL + err. file and what (which pickle) label errors; hooks may be NULL.
jb_pv_t *jb_pickle_run(const uint8_t *data, size_t size, size_t *pos, const char *file,
                       const char *what, jb_pk_arena_t *ar, const jb_pickle_hooks_t *hooks,
                       jb_err_t *err);
// For hooks: a new value in the run's arena (NULL: out of memory), and an error set with the
// run's place (file, pickle, byte, opcode) prefixed; returns -1.
jb_pv_t *jb_pickle_new(jb_pickle_t *u, int kind);
int jb_pickle_fail(jb_pickle_t *u, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Frees every value of the arena; the arena can be used again.
void jb_pk_arena_free(jb_pk_arena_t *ar);

// "None", "int", "dict", ... for messages.
const char *jb_pv_kind_name(int kind);
// d[key] for a DICT (or an OBJ's items) with a str key; NULL when absent or d is not one.
jb_pv_t *jb_pv_dict_get(const jb_pv_t *d, const char *key);
// v is a STR equal to s.
int jb_pv_is_str(const jb_pv_t *v, const char *s);
// Little-endian unsigned integer of n (1..8) bytes.
uint64_t jb_pk_le(const uint8_t *p, int n);

// Plain data as JSON: dicts (and objects with items) -> objects with str or int keys (others
// dropped), lists and tuples -> arrays, None/tensors/storages/bytes/big ints -> null, inf
// and nan -> null, str that is not UTF-8 -> null. At most 64 levels and 2^20 values (the
// memo lets a small pickle share a list 2^64 ways): JB_EFORMAT beyond, naming file.
json_t *jb_pv_to_json(const jb_pv_t *v, const char *file, jb_err_t *err);

#endif
