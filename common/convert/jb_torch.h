// jb_torch.h: PyTorch checkpoints (torch.save files) read without Python.
//
//   jb_err_t err;
//   jb_torch_t *ck = jb_torch_open("prior_level_2.pth.tar", &err);
//   if (!ck) { fprintf(stderr, "%s\n", err.msg); ... }
//   for (int i = 0; i < jb_torch_count(ck); i++) use(jb_torch_tensor(ck, i));
//   const json_t *hps = jb_torch_hps(ck);          // NULL when the file has none
//   jb_torch_destroy(&ck);
//
// Both serialisations torch.save has used are read:
// * legacy (torch <= 1.5, the released Jukebox files): five pickles (magic
//   number, protocol version 1001, sys info, the object, the list of storage
//   keys) followed, for each key in that order, by an int64 element count and
//   the storage's raw little-endian bytes;
// * zip (torch >= 1.6): a stored (uncompressed) zip archive whose records sit
//   under one folder of any name: <dir>/data.pkl (the object), <dir>/data/<key>
//   (raw storage bytes), <dir>/version. Zip64 is understood; every record's
//   CRC-32 is checked.
// The object is read by a small pickle interpreter (protocols 0-4 as torch
// writes them: dicts, OrderedDict, lists, tuples, str, int, float, bool, None,
// persistent-id storages, torch._utils._rebuild_tensor(_v2) and
// _rebuild_parameter). Any other callable becomes an opaque object, so that
// entries we do not need ('opt', metrics) are read without failing.
//
// The state dict is the object's 'model' entry (the reference's
// save_checkpoint), or the object itself when it is a dict of tensors. A
// leading "module." is stripped from its keys (as the reference's
// restore_model does). Views come out right: storage offsets, strides
// (non-contiguous tensors are copied into C order), shared storages, tied
// tensors, and legacy storage views.
//
// Bad input never crashes and never yields a partial result: jb_torch_open
// returns NULL and an error that names the file and the pickle opcode and
// byte offset, the zip record, or the state-dict key. Every length, index,
// memo slot, stack depth and storage range is checked.
//
// Thread rules: a jb_torch_t is immutable after open; share it read-only.
// Ownership: every pointer handed out is borrowed and valid until
// jb_torch_destroy(). File data are mmap'd; contiguous tensors point into the map.
#ifndef JB_TORCH_H
#define JB_TORCH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"
#include "jb_tensor.h"

typedef struct jb_torch jb_torch_t;   // opaque: a loaded checkpoint

typedef struct {
    const char *name;             // state-dict key, "module." stripped
    jb_dtype_t dtype;
    int ndim;
    int64_t shape[JB_MAX_DIMS];   // PyTorch order
    const void *data;             // (shape) C-contiguous, little-endian; borrowed
    size_t nbytes;
} jb_torch_tensor_t;

typedef enum { JB_TORCH_LEGACY = 0, JB_TORCH_ZIP = 1 } jb_torch_format_t;

// Open a checkpoint file (mmap). NULL + err: JB_ENOENT missing, JB_EFORMAT bad content,
// JB_EUNSUP valid but not handled (compressed zip record, big-endian data).
jb_torch_t *jb_torch_open(const char *path, jb_err_t *err);
// The same from memory (the fuzz target). data must outlive the result; name labels errors.
jb_torch_t *jb_torch_open_mem(const void *data, size_t size, const char *name, jb_err_t *err);
// Frees everything; sets *ck_p to NULL; accepts NULL.
void jb_torch_destroy(jb_torch_t **ck_p);

jb_torch_format_t jb_torch_format(const jb_torch_t *ck);
// Tensors of the state dict, in its order.
int jb_torch_count(const jb_torch_t *ck);
const jb_torch_tensor_t *jb_torch_tensor(const jb_torch_t *ck, int i);
// NULL when absent.
const jb_torch_tensor_t *jb_torch_find(const jb_torch_t *ck, const char *name);
// The 'hps' entry as JSON (dicts -> objects, lists/tuples -> arrays, None -> null,
// objects that are not plain data -> null). Borrowed; NULL when the file has none.
const json_t *jb_torch_hps(const jb_torch_t *ck);
// The 'step' entry, or -1 when absent or not an integer.
int64_t jb_torch_step(const jb_torch_t *ck);
// Number of storages in the file and of tensors that had to be copied (non-contiguous).
int jb_torch_n_storages(const jb_torch_t *ck);
int jb_torch_n_copied(const jb_torch_t *ck);

#endif
