// jb_torch.c: see jb_torch.h. The state-dict assembly over two readers: the pickle machine
// (jb_pickle.c) with this file's hooks for storages and tensors, and the zip reader
// (jb_zip.c). Layout: string map, storage table, pickle hooks, tensor assembly, legacy
// format, zip format, API.
#include "jb_torch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jb_pickle.h"
#include "jb_zip.h"

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


// ---- pickle hooks ------------------------------------------------------------

// The storage a persistent id names: ('storage', torch.XStorage, key, location, numel
// [, view_metadata]); legacy view_metadata is None or (view_key, offset, size).
static jb_pv_t *persistent_storage(jb_pickle_t *u, void *ctx, jb_pv_t *pid) {
    if (pid->kind != JB_PV_TUPLE || pid->n < 5 || !jb_pv_is_str(pid->a[0], "storage")) {
        jb_pickle_fail(u, JB_EFORMAT, "persistent id is not ('storage', type, key, location, numel)");
        return NULL;
    }
    jb_pv_t *ty = pid->a[1], *key = pid->a[2], *numel = pid->a[4];
    jb_dtype_t dt;
    if (ty->kind != JB_PV_GLOBAL || storage_dtype(ty->s, &dt) != 0) {
        jb_pickle_fail(u, JB_EUNSUP, "storage type %s not supported",
                ty->kind == JB_PV_GLOBAL ? ty->s : jb_pv_kind_name(ty->kind));
        return NULL;
    }
    if (key->kind != JB_PV_STR || numel->kind != JB_PV_INT || numel->i < 0 ||
        numel->i > ((int64_t)1 << 40)) {
        jb_pickle_fail(u, JB_EFORMAT, "storage persistent id: bad key or element count");
        return NULL;
    }
    stors_t *t = ctx;
    int idx = smap_get(&t->by_key, key->s);
    if (idx < 0) {
        if (t->n == t->cap) {
            int nc = t->cap ? t->cap * 2 : 64;
            stor_t *ns = realloc(t->s, (size_t)nc * sizeof *ns);
            if (!ns) {
                jb_pickle_fail(u, JB_ENOMEM, "out of memory");
                return NULL;
            }
            t->s = ns, t->cap = nc;
        }
        stor_t *s = &t->s[t->n];
        memset(s, 0, sizeof *s);
        s->key = strdup(key->s);
        if (!s->key || smap_put(&t->by_key, s->key, t->n) != 0) {
            free(s->key);
            jb_pickle_fail(u, JB_ENOMEM, "out of memory");
            return NULL;
        }
        s->dtype = dt;
        s->numel = numel->i;
        idx = t->n++;
    } else if (t->s[idx].dtype != dt || t->s[idx].numel != numel->i) {
        jb_pickle_fail(u, JB_EFORMAT, "storage '%s' named twice with different type or size", key->s);
        return NULL;
    }
    jb_pv_t *v = jb_pickle_new(u, JB_PV_STORAGE);
    if (!v) return NULL;
    v->i = idx;
    v->off = 0;
    v->vnumel = numel->i;
    if (pid->n >= 6 && pid->a[5]->kind != JB_PV_NONE) {
        jb_pv_t *vm = pid->a[5];
        if (vm->kind != JB_PV_TUPLE || vm->n != 3 || vm->a[1]->kind != JB_PV_INT ||
            vm->a[2]->kind != JB_PV_INT || vm->a[1]->i < 0 || vm->a[2]->i < 0 ||
            vm->a[1]->i > numel->i || vm->a[2]->i > numel->i - vm->a[1]->i) {
            jb_pickle_fail(u, JB_EFORMAT, "storage '%s': bad view (offset, size) for %lld elements",
                    key->s, (long long)numel->i);
            return NULL;
        }
        v->off = vm->a[1]->i;
        v->vnumel = vm->a[2]->i;
    }
    return v;
}

static int int_tuple(const jb_pv_t *t, int64_t *out, int *n) {
    if (t->kind != JB_PV_TUPLE && t->kind != JB_PV_LIST) return -1;
    if (t->n > JB_MAX_DIMS) return -1;
    for (size_t k = 0; k < t->n; k++) {
        if (t->a[k]->kind != JB_PV_INT || t->a[k]->i < 0) return -1;
        out[k] = t->a[k]->i;
    }
    *n = (int)t->n;
    return 0;
}


// torch._utils._rebuild_tensor(_v2)(storage, offset, size, stride, ...) -> a tensor;
// torch._utils._rebuild_parameter(_with_state)(tensor, ...) -> that tensor. Other callables
// are declined (opaque objects).
static jb_pv_t *torch_call(jb_pickle_t *u, void *ctx, const char *name, jb_pv_t *args) {
    if (!strcmp(name, "torch._utils._rebuild_tensor_v2") ||
        !strcmp(name, "torch._utils._rebuild_tensor")) {
        jb_pv_t *t = jb_pickle_new(u, JB_PV_TENSOR);
        if (!t) {
            jb_pickle_fail(u, JB_ENOMEM, "out of memory");
            return NULL;
        }
        int nd_size = 0, nd_stride = 0;
        if (args->n < 4 || args->a[0]->kind != JB_PV_STORAGE || args->a[1]->kind != JB_PV_INT ||
            args->a[1]->i < 0 || int_tuple(args->a[2], t->shape, &nd_size) != 0 ||
            int_tuple(args->a[3], t->stride, &nd_stride) != 0 || nd_size != nd_stride) {
            jb_pickle_fail(u, JB_EFORMAT,
                           "%s: arguments are not (storage, offset, size, stride) with at most "
                           "%d non-negative dimensions",
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
        if (args->n < 1 || args->a[0]->kind != JB_PV_TENSOR) {
            jb_pickle_fail(u, JB_EFORMAT, "%s: first argument is not a tensor", name);
            return NULL;
        }
        return args->a[0];
    }
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
static int assemble_tensor(jb_torch_t *ck, int k, const char *key, const jb_pv_t *v,
                           const stors_t *st, jb_err_t *err) {
    if (v->kind != JB_PV_TENSOR)
        return jb_err_set(err, JB_EFORMAT, "%s: state dict entry '%s' is a %s, not a tensor",
                          ck->name, key, jb_pv_kind_name(v->kind));
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
static int take_object(jb_torch_t *ck, const jb_pv_t *obj, const stors_t *st, jb_err_t *err) {
    if (obj->kind != JB_PV_DICT)
        return jb_err_set(err, JB_EFORMAT, "%s: the saved object is a %s, not a dict", ck->name,
                          jb_pv_kind_name(obj->kind));
    const jb_pv_t *sd = jb_pv_dict_get(obj, "model");
    if (!sd) {
        sd = obj;   // a bare state dict
        if (sd->n == 0 || sd->a[1]->kind != JB_PV_TENSOR)
            return jb_err_set(err, JB_EFORMAT, "%s: no 'model' entry and not a state dict",
                              ck->name);
    }
    if (sd->kind != JB_PV_DICT)
        return jb_err_set(err, JB_EFORMAT, "%s: 'model' is a %s, not a dict", ck->name,
                          jb_pv_kind_name(sd->kind));
    if (sd->n > (1u << 24))
        return jb_err_set(err, JB_EFORMAT, "%s: state dict too large", ck->name);
    ck->t = calloc(sd->n ? sd->n : 1, sizeof *ck->t);
    ck->copies = calloc(sd->n ? sd->n : 1, sizeof *ck->copies);
    if (!ck->t || !ck->copies) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", ck->name);
    for (size_t k = 0; k < sd->n; k++) {
        const jb_pv_t *key = sd->a[2 * k];
        if (key->kind != JB_PV_STR || strlen(key->s) != key->slen || key->slen == 0)
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
    const jb_pv_t *hps = sd != obj ? jb_pv_dict_get(obj, "hps") : NULL;
    if (hps && hps->kind != JB_PV_NONE) {
        if (hps->kind != JB_PV_DICT && hps->kind != JB_PV_OBJ)
            return jb_err_set(err, JB_EFORMAT, "%s: 'hps' is a %s, not a dict", ck->name,
                              jb_pv_kind_name(hps->kind));
        if (!(ck->hps = jb_pv_to_json(hps, ck->name, err))) return -1;
        if (!json_is_object(ck->hps)) {
            json_decref(ck->hps);
            ck->hps = json_object();
        }
    }
    const jb_pv_t *step = sd != obj ? jb_pv_dict_get(obj, "step") : NULL;
    ck->step = step && step->kind == JB_PV_INT ? step->i : -1;
    ck->n_storages = st->n;
    return 0;
}

// ---- legacy format -----------------------------------------------------------

static int read_legacy(jb_torch_t *ck, const uint8_t *d, size_t size, jb_err_t *err) {
    static const uint8_t magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    jb_pk_arena_t ar = {0};
    stors_t st = {0};
    size_t pos = 0;
    int rc = -1;
    jb_pv_t *v = jb_pickle_run(d, size, &pos, ck->name, "magic number", &ar, NULL, err);
    if (!v) goto out;
    if (v->kind != JB_PV_BIGINT || v->slen != 10 || memcmp(v->s, magic, 10)) {
        jb_err_set(err, JB_EFORMAT, "%s: not a PyTorch checkpoint (bad magic number)", ck->name);
        goto out;
    }
    if (!(v = jb_pickle_run(d, size, &pos, ck->name, "protocol version", &ar, NULL, err))) goto out;
    if (v->kind != JB_PV_INT || v->i != 1001) {
        jb_err_set(err, JB_EUNSUP, "%s: legacy protocol version %lld, expected 1001", ck->name,
                   v->kind == JB_PV_INT ? (long long)v->i : -1LL);
        goto out;
    }
    if (!(v = jb_pickle_run(d, size, &pos, ck->name, "sys info", &ar, NULL, err))) goto out;
    const jb_pv_t *le = jb_pv_dict_get(v, "little_endian");
    if (le && le->kind == JB_PV_BOOL && !le->i) {
        jb_err_set(err, JB_EUNSUP, "%s: saved on a big-endian machine", ck->name);
        goto out;
    }
    jb_pickle_hooks_t hooks = {persistent_storage, torch_call, &st};
    jb_pv_t *obj = jb_pickle_run(d, size, &pos, ck->name, "object", &ar, &hooks, err);
    if (!obj) goto out;
    if (!(v = jb_pickle_run(d, size, &pos, ck->name, "storage keys", &ar, NULL, err))) goto out;
    if (v->kind != JB_PV_LIST) {
        jb_err_set(err, JB_EFORMAT, "%s: storage key list is a %s", ck->name,
                   jb_pv_kind_name(v->kind));
        goto out;
    }
    for (size_t k = 0; k < v->n; k++) {
        if (v->a[k]->kind != JB_PV_STR) {
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
        int64_t cnt = (int64_t)jb_pk_le(d + pos, 8);
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
    jb_pk_arena_free(&ar);
    stors_free(&st);
    return rc;
}


// ---- zip format --------------------------------------------------------------

// The storages the object named: <dir>/data/<key>, of the size its tensors say, CRC checked.
static int zip_storages(const jb_zip_t *z, const char *prefix, stors_t *st, jb_err_t *err) {
    const char *f = z->file;
    char rec[1024];
    for (int k = 0; k < st->n; k++) {
        stor_t *s = &st->s[k];
        if (snprintf(rec, sizeof rec, "%sdata/%s", prefix, s->key) >= (int)sizeof rec)
            return jb_err_set(err, JB_EFORMAT, "%s: zip: storage key too long", f);
        const jb_zip_entry_t *e = jb_zip_find(z, rec);
        if (!e) return jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s' missing", f, rec);
        uint64_t want = (uint64_t)s->numel * jb_dtype_size(s->dtype);
        if (e->size != want)
            return jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s' holds %llu bytes, its "
                              "tensors say %llu", f, rec, (unsigned long long)e->size,
                              (unsigned long long)want);
        if (jb_zip_crc_ok(z, e, err)) return -1;
        s->data = z->data + e->off;
    }
    return 0;
}

static int read_zip(jb_torch_t *ck, const uint8_t *d, size_t size, jb_err_t *err) {
    jb_zip_t z;
    jb_pk_arena_t ar = {0};
    stors_t st = {0};
    char *prefix = NULL;
    int rc = -1;
    const char *f = ck->name;
    if (jb_zip_open(&z, d, size, f, err)) return -1;
    // The object: <dir>/data.pkl, whatever <dir> is.
    const jb_zip_entry_t *pk = NULL;
    for (size_t k = 0; k < z.n && !pk; k++) {
        const char *s = strchr(z.e[k].name, '/');
        if (s && !strcmp(s, "/data.pkl")) pk = &z.e[k];
    }
    if (!pk) {
        jb_err_set(err, JB_EFORMAT, "%s: zip: no <dir>/data.pkl record (not a torch.save file?)",
                   f);
        goto out;
    }
    size_t plen = strlen(pk->name) - strlen("data.pkl");   // "<dir>/"
    if (!(prefix = strndup(pk->name, plen))) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", f);
        goto out;
    }
    char rec[1024];
    snprintf(rec, sizeof rec, "%sbyteorder", prefix);
    const jb_zip_entry_t *bo = jb_zip_find(&z, rec);
    if (bo && !(bo->size == 6 && !memcmp(d + bo->off, "little", 6))) {
        jb_err_set(err, JB_EUNSUP, "%s: zip: saved with big-endian byte order", f);
        goto out;
    }
    if (jb_zip_all_stored(&z, err) || jb_zip_crc_ok(&z, pk, err)) goto out;
    // The pickle runs on the record alone; offsets in messages are within data.pkl.
    size_t ppos = 0;
    char what[64];
    snprintf(what, sizeof what, "data.pkl (file offset %llu)", (unsigned long long)pk->off);
    jb_pickle_hooks_t hooks = {persistent_storage, torch_call, &st};
    jb_pv_t *obj = jb_pickle_run(d + pk->off, pk->size, &ppos, f, what, &ar, &hooks, err);
    if (!obj || zip_storages(&z, prefix, &st, err)) goto out;
    rc = take_object(ck, obj, &st, err);
out:
    free(prefix);
    jb_zip_close(&z);
    jb_pk_arena_free(&ar);
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
