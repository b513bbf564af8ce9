// jb_safetensors.h: safetensors files, read through mmap and written atomically.
//
// Format: u64 little-endian header length n, n bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
//    "__metadata__": {"key": "string", ...}}
// then the raw little-endian tensor bytes (offsets count from the end of the header).
//
// Reading validates everything before handing out a pointer: header length
// within the file, JSON well-formed, every dtype known, every shape
// non-negative and consistent with its byte range, every range inside the
// file. Errors name the file and the tensor.
//
// Thread rules: an opened file is immutable; share it read-only between threads.
#ifndef JB_SAFETENSORS_H
#define JB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_tensor.h"

typedef struct jb_st jb_st_t;   // opaque: an opened (mmap'd) file

typedef struct {
    const char *name;
    jb_dtype_t dtype;
    int ndim;
    int64_t shape[JB_MAX_DIMS];
    const void *data;   // into the mmap; valid until jb_st_close(). Do not free.
    size_t nbytes;
} jb_st_entry_t;

// Open and validate. NULL + err (JB_ENOENT missing file, JB_EFORMAT bad content).
jb_st_t *jb_st_open(const char *path, jb_err_t *err);
// Unmaps; sets *st_p to NULL; accepts NULL. Every pointer handed out dies here.
void jb_st_close(jb_st_t **st_p);

const char *jb_st_path(const jb_st_t *st);
int jb_st_count(const jb_st_t *st);
// Entries in file order of their data offsets; i in [0, count).
const jb_st_entry_t *jb_st_entry(const jb_st_t *st, int i);
// NULL when absent (no error: use jb_st_get for a required tensor).
const jb_st_entry_t *jb_st_find(const jb_st_t *st, const char *name);
// __metadata__ value for key, or NULL. Borrowed.
const char *jb_st_meta(const jb_st_t *st, const char *key);
int jb_st_meta_count(const jb_st_t *st);
// i-th metadata pair (key, value), borrowed; -1 if out of range.
int jb_st_meta_at(const jb_st_t *st, int i, const char **key, const char **value);

// A required tensor: present, and of this shape (ndim < 0: any shape).
// Error names file and tensor: "model.safetensors: tensor 'x.w': shape [3, 4], expected [4, 3]".
const jb_st_entry_t *jb_st_get(const jb_st_t *st, const char *name, int ndim,
                               const int64_t *shape, jb_err_t *err);
// As jb_st_get, widened into a new float32 buffer (caller frees with jb_free).
float *jb_st_get_f32(const jb_st_t *st, const char *name, int ndim, const int64_t *shape,
                     jb_err_t *err);
// As jb_st_get, converted into a new int32 buffer (caller frees with jb_free).
int32_t *jb_st_get_i32(const jb_st_t *st, const char *name, int ndim, const int64_t *shape,
                       jb_err_t *err);

// ---- writing ----------------------------------------------------------------

typedef struct jb_st_writer jb_st_writer_t;   // opaque

jb_st_writer_t *jb_st_writer_new(jb_err_t *err);
void jb_st_writer_destroy(jb_st_writer_t **w_p);
// Add a metadata string (copied).
int jb_st_writer_meta(jb_st_writer_t *w, const char *key, const char *value, jb_err_t *err);
// Add a tensor. name and shape are copied; data is borrowed until write returns.
// Tensors are written in the order added. A duplicate name is an error.
int jb_st_writer_add(jb_st_writer_t *w, const char *name, jb_dtype_t dt, int ndim,
                     const int64_t *shape, const void *data, jb_err_t *err);
// Write to path via "path.tmp.<pid>", fsync, rename: the file appears only complete.
// On failure (full disk, ...) the temporary is removed and path is untouched.
// progress (may be NULL) is called after each tensor with bytes written so far.
int jb_st_writer_write(jb_st_writer_t *w, const char *path,
                       void (*progress)(size_t done, size_t total, void *user), void *user,
                       jb_err_t *err);

#endif
