// jb_safetensors.c: see jb_safetensors.h.
#include "jb_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// Header lengths beyond this are refused before any allocation: the real
// models' headers are a few hundred KB (thousands of tensors, vocabularies).
#define JB_ST_MAX_HEADER (256u << 20)

struct jb_st {
    char *path;
    int fd;
    uint8_t *map;
    size_t size;
    const uint8_t *data;   // first byte after the header
    size_t data_size;
    jb_st_entry_t *entries;
    int n_entries;
    char **meta_keys, **meta_values;
    int n_meta;
};

static int cmp_entry_offset(const void *a, const void *b) {
    const jb_st_entry_t *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : strcmp(x->name, y->name);
}

void jb_st_close(jb_st_t **st_p) {
    if (!st_p || !*st_p) return;
    jb_st_t *st = *st_p;
    for (int i = 0; i < st->n_entries; i++) free((char *)st->entries[i].name);
    free(st->entries);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    if (st->map && st->map != MAP_FAILED) munmap(st->map, st->size);
    if (st->fd >= 0) close(st->fd);
    free(st->path);
    free(st);
    *st_p = NULL;
}

static int parse_entry(jb_st_t *st, const char *name, json_t *v, jb_st_entry_t *e,
                       jb_err_t *err) {
    const char *p = st->path;
    if (!json_is_object(v))
        return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': entry is not an object", p, name);
    const char *dt = json_string_value(json_object_get(v, "dtype"));
    if (!dt) return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': no dtype", p, name);
    if (jb_dtype_from_name(dt, &e->dtype) != 0)
        return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", p, name, dt);
    json_t *shape = json_object_get(v, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > JB_MAX_DIMS)
        return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': shape missing or has more than %d dims",
                          p, name, JB_MAX_DIMS);
    e->ndim = (int)json_array_size(shape);
    uint64_t numel = 1;
    for (int i = 0; i < e->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 ||
            json_integer_value(d) > ((int64_t)1 << 40))
            return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': bad dimension %d", p, name, i);
        e->shape[i] = json_integer_value(d);
        numel *= (uint64_t)e->shape[i];
        if (numel > ((uint64_t)1 << 42))
            return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': shape too large", p, name);
    }
    json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)))
        return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': bad data_offsets", p, name);
    json_int_t b = json_integer_value(json_array_get(off, 0));
    json_int_t en = json_integer_value(json_array_get(off, 1));
    if (b < 0 || en < b || (uint64_t)en > st->data_size)
        return jb_err_set(err, JB_EFORMAT,
                          "%s: tensor '%s': data [%lld, %lld) outside the %zu data bytes "
                          "(truncated file?)",
                          p, name, (long long)b, (long long)en, st->data_size);
    uint64_t want = numel * jb_dtype_size(e->dtype);
    if ((uint64_t)(en - b) != want)
        return jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': %lld data bytes, shape and dtype need %llu",
                          p, name, (long long)(en - b), (unsigned long long)want);
    e->data = st->data + b;
    e->nbytes = (size_t)(en - b);
    e->name = strdup(name);
    if (!e->name) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", p);
    return 0;
}

jb_st_t *jb_st_open(const char *path, jb_err_t *err) {
    jb_st_t *st = calloc(1, sizeof *st);
    json_t *root = NULL;
    if (!st) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    st->fd = -1;
    st->path = strdup(path);
    if (!st->path) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    st->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (st->fd < 0) {
        jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: cannot open: %s", path,
                   strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(st->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        jb_err_set(err, JB_EFORMAT, "%s: not a regular file", path);
        goto fail;
    }
    st->size = (size_t)sb.st_size;
    if (st->size < 8) {
        jb_err_set(err, JB_EFORMAT, "%s: %zu bytes: too short for a safetensors header (truncated?)",
                   path, st->size);
        goto fail;
    }
    st->map = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, st->fd, 0);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        jb_err_set(err, JB_EIO, "%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->map[i];
    if (hlen > JB_ST_MAX_HEADER || hlen > st->size - 8) {
        jb_err_set(err, JB_EFORMAT,
                   "%s: header length %llu does not fit the %zu-byte file (truncated or not "
                   "safetensors)",
                   path, (unsigned long long)hlen, st->size);
        goto fail;
    }
    st->data = st->map + 8 + hlen;
    st->data_size = st->size - 8 - (size_t)hlen;
    json_error_t jerr;
    root = json_loadb((const char *)st->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        jb_err_set(err, JB_EFORMAT, "%s: bad header JSON: %s (at byte %d)", path,
                   root ? "not an object" : jerr.text, root ? 0 : jerr.position + 8);
        goto fail;
    }
    size_t n = json_object_size(root);
    st->entries = calloc(n ? n : 1, sizeof *st->entries);
    if (!st->entries) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                jb_err_set(err, JB_EFORMAT, "%s: __metadata__ is not an object", path);
                goto fail;
            }
            size_t m = json_object_size(val);
            st->meta_keys = calloc(m ? m : 1, sizeof(char *));
            st->meta_values = calloc(m ? m : 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_values) {
                jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    jb_err_set(err, JB_EFORMAT, "%s: __metadata__['%s'] is not a string", path, mk);
                    goto fail;
                }
                st->meta_keys[st->n_meta] = strdup(mk);
                st->meta_values[st->n_meta] = strdup(json_string_value(mv));
                st->n_meta++;
                if (!st->meta_keys[st->n_meta - 1] || !st->meta_values[st->n_meta - 1]) {
                    jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
                    goto fail;
                }
            }
            continue;
        }
        if (parse_entry(st, key, val, &st->entries[st->n_entries], err) != 0) goto fail;
        st->n_entries++;
    }
    qsort(st->entries, (size_t)st->n_entries, sizeof *st->entries, cmp_entry_offset);
    // Overlapping byte ranges mean a corrupt (or hostile) header.
    for (int i = 1; i < st->n_entries; i++) {
        const jb_st_entry_t *a = &st->entries[i - 1], *b = &st->entries[i];
        if ((const uint8_t *)a->data + a->nbytes > (const uint8_t *)b->data) {
            jb_err_set(err, JB_EFORMAT, "%s: tensors '%s' and '%s' overlap", path, a->name, b->name);
            goto fail;
        }
    }
    json_decref(root);
    return st;
fail:
    json_decref(root);
    jb_st_close(&st);
    return NULL;
}

const char *jb_st_path(const jb_st_t *st) { return st->path; }
int jb_st_count(const jb_st_t *st) { return st->n_entries; }

const jb_st_entry_t *jb_st_entry(const jb_st_t *st, int i) {
    return i >= 0 && i < st->n_entries ? &st->entries[i] : NULL;
}

const jb_st_entry_t *jb_st_find(const jb_st_t *st, const char *name) {
    // Linear: models have at most a few thousand tensors and lookups happen at load time.
    for (int i = 0; i < st->n_entries; i++)
        if (strcmp(st->entries[i].name, name) == 0) return &st->entries[i];
    return NULL;
}

const char *jb_st_meta(const jb_st_t *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

int jb_st_meta_count(const jb_st_t *st) { return st->n_meta; }

int jb_st_meta_at(const jb_st_t *st, int i, const char **key, const char **value) {
    if (i < 0 || i >= st->n_meta) return -1;
    *key = st->meta_keys[i];
    *value = st->meta_values[i];
    return 0;
}

const jb_st_entry_t *jb_st_get(const jb_st_t *st, const char *name, int ndim,
                               const int64_t *shape, jb_err_t *err) {
    const jb_st_entry_t *e = jb_st_find(st, name);
    if (!e) {
        jb_err_set(err, JB_EFORMAT, "%s: tensor '%s' missing", st->path, name);
        return NULL;
    }
    if (ndim >= 0) {
        int same = e->ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = e->shape[i] == shape[i];
        if (!same) {
            char have[128], want[128];
            jb_err_set(err, JB_EFORMAT, "%s: tensor '%s': shape %s, expected %s", st->path, name,
                       jb_shape_str(e->shape, e->ndim, have, sizeof have),
                       jb_shape_str(shape, ndim, want, sizeof want));
            return NULL;
        }
    }
    return e;
}

static int64_t entry_numel(const jb_st_entry_t *e) {
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
    return n;
}

float *jb_st_get_f32(const jb_st_t *st, const char *name, int ndim, const int64_t *shape,
                     jb_err_t *err) {
    const jb_st_entry_t *e = jb_st_get(st, name, ndim, shape, err);
    if (!e) return NULL;
    int64_t n = entry_numel(e);
    float *out = jb_alloc((size_t)(n ? n : 1) * sizeof(float));
    if (!out) {
        jb_err_set(err, JB_ENOMEM, "%s: tensor '%s': out of memory", st->path, name);
        return NULL;
    }
    jb_tensor_t t = {.dtype = e->dtype, .ndim = e->ndim, .data = (void *)e->data};
    memcpy(t.shape, e->shape, sizeof t.shape);
    if (jb_tensor_to_f32(&t, out, err) != 0) {
        jb_free(out);
        jb_err_prefix(err, "%s: tensor '%s'", st->path, name);
        return NULL;
    }
    return out;
}

int32_t *jb_st_get_i32(const jb_st_t *st, const char *name, int ndim, const int64_t *shape,
                       jb_err_t *err) {
    const jb_st_entry_t *e = jb_st_get(st, name, ndim, shape, err);
    if (!e) return NULL;
    int64_t n = entry_numel(e);
    int32_t *out = jb_alloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!out) {
        jb_err_set(err, JB_ENOMEM, "%s: tensor '%s': out of memory", st->path, name);
        return NULL;
    }
    jb_tensor_t t = {.dtype = e->dtype, .ndim = e->ndim, .data = (void *)e->data};
    memcpy(t.shape, e->shape, sizeof t.shape);
    if (jb_tensor_to_i32(&t, out, err) != 0) {
        jb_free(out);
        jb_err_prefix(err, "%s: tensor '%s'", st->path, name);
        return NULL;
    }
    return out;
}

// ---- writer -------------------------------------------------------------------

typedef struct {
    char *name;
    jb_dtype_t dtype;
    int ndim;
    int64_t shape[JB_MAX_DIMS];
    const void *data;
    size_t nbytes;
} writer_entry_t;

struct jb_st_writer {
    writer_entry_t *entries;
    int n, cap;
    json_t *meta;
};

jb_st_writer_t *jb_st_writer_new(jb_err_t *err) {
    jb_st_writer_t *w = calloc(1, sizeof *w);
    if (!w || !(w->meta = json_object())) {
        free(w);
        jb_err_set(err, JB_ENOMEM, "safetensors writer: out of memory");
        return NULL;
    }
    return w;
}

void jb_st_writer_destroy(jb_st_writer_t **w_p) {
    if (!w_p || !*w_p) return;
    jb_st_writer_t *w = *w_p;
    for (int i = 0; i < w->n; i++) free(w->entries[i].name);
    free(w->entries);
    json_decref(w->meta);
    free(w);
    *w_p = NULL;
}

int jb_st_writer_meta(jb_st_writer_t *w, const char *key, const char *value, jb_err_t *err) {
    if (json_object_set_new(w->meta, key, json_string(value)) != 0)
        return jb_err_set(err, JB_EINVAL, "safetensors writer: bad metadata '%s' (not UTF-8?)", key);
    return 0;
}

int jb_st_writer_add(jb_st_writer_t *w, const char *name, jb_dtype_t dt, int ndim,
                     const int64_t *shape, const void *data, jb_err_t *err) {
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return jb_err_set(err, JB_EINVAL, "safetensors writer: bad tensor name");
    if ((unsigned)dt >= JB_DTYPE_COUNT || ndim < 0 || ndim > JB_MAX_DIMS)
        return jb_err_set(err, JB_EINVAL, "safetensors writer: tensor '%s': bad dtype or ndim", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return jb_err_set(err, JB_EINVAL, "safetensors writer: duplicate tensor '%s'", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        writer_entry_t *e = realloc(w->entries, (size_t)cap * sizeof *e);
        if (!e) return jb_err_set(err, JB_ENOMEM, "safetensors writer: out of memory");
        w->entries = e;
        w->cap = cap;
    }
    writer_entry_t *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return jb_err_set(err, JB_ENOMEM, "safetensors writer: out of memory");
    e->dtype = dt;
    e->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            free(e->name);
            return jb_err_set(err, JB_EINVAL, "safetensors writer: tensor '%s': negative dim", name);
        }
        e->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    e->data = data;
    e->nbytes = numel * jb_dtype_size(dt);
    w->n++;
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int jb_st_writer_write(jb_st_writer_t *w, const char *path,
                       void (*progress)(size_t done, size_t total, void *user), void *user,
                       jb_err_t *err) {
    json_t *root = json_object();
    char *hdr = NULL, *tmp = NULL;
    int fd = -1;
    if (!root) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    if (json_object_size(w->meta) > 0) json_object_set(root, "__metadata__", w->meta);
    size_t off = 0, total = 0;
    for (int i = 0; i < w->n; i++) {
        writer_entry_t *e = &w->entries[i];
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *ent = json_pack("{s:s, s:o, s:[I, I]}", "dtype", jb_dtype_name(e->dtype), "shape",
                                shape, "data_offsets", (json_int_t)off,
                                (json_int_t)(off + e->nbytes));
        if (!ent || json_object_set_new(root, e->name, ent) != 0) {
            jb_err_set(err, JB_ENOMEM, "%s: cannot build header", path);
            goto fail;
        }
        off += e->nbytes;
    }
    total = off;
    hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr) {
        jb_err_set(err, JB_ENOMEM, "%s: cannot serialise header", path);
        goto fail;
    }
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    size_t tlen = strlen(path) + 32;
    tmp = malloc(tlen);
    if (!tmp) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        jb_err_set(err, errno == ENOENT ? JB_ENOENT : JB_EIO, "%s: cannot create: %s", tmp,
                   strerror(errno));
        goto fail;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    if (write_all(fd, len8, 8) || write_all(fd, hdr, hlen) ||
        write_all(fd, spaces, padded - hlen))
        goto io_fail;
    size_t done = 0;
    for (int i = 0; i < w->n; i++) {
        if (w->entries[i].nbytes && write_all(fd, w->entries[i].data, w->entries[i].nbytes))
            goto io_fail;
        done += w->entries[i].nbytes;
        if (progress) progress(done, total, user);
    }
    if (fsync(fd) != 0) goto io_fail;
    if (close(fd) != 0) {
        fd = -1;
        goto io_fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) goto io_fail;
    free(tmp);
    free(hdr);
    json_decref(root);
    return 0;
io_fail:
    jb_err_set(err, JB_EIO, "%s: write failed: %s", path, strerror(errno));
fail:
    if (fd >= 0) close(fd);
    if (tmp) unlink(tmp);
    free(tmp);
    free(hdr);
    json_decref(root);
    return -1;
}
