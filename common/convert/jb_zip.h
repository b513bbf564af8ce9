// jb_zip.h: the records of a zip archive as torch.save (>= 1.6) writes it, read in place.
//
//   jb_zip_t z;
//   if (jb_zip_open(&z, data, size, "x.pth", &err)) return -1;
//   if (jb_zip_all_stored(&z, &err)) ...;              // no record compressed or encrypted
//   const jb_zip_entry_t *e = jb_zip_find(&z, "archive/data.pkl");
//   if (e && jb_zip_crc_ok(&z, e, &err) == 0) use(data + e->off, e->size);
//   jb_zip_close(&z);
//
// The central directory is found from the end record (before a comment of up to 64 KiB);
// Zip64 end records and extra fields are understood. Every offset and size is checked
// against the data: a damaged or truncated archive is JB_EFORMAT naming the file and the
// record. Records are not decompressed: jb_zip_all_stored refuses an archive with a
// compressed or encrypted record (JB_EUNSUP); jb_zip_crc_ok checks one record's CRC-32
// (JB_EFORMAT on a mismatch).
// Thread rules: a jb_zip_t is read-only after open; the data must outlive it.
#ifndef JB_ZIP_H
#define JB_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "jb_err.h"

typedef struct {
    char *name;           // as stored
    uint64_t off, size;   // the record's data: [off, off + size) of the archive
    uint32_t crc;
    int method, flags;    // compression method (0: stored), general-purpose flags
} jb_zip_entry_t;

typedef struct {
    jb_zip_entry_t *e;    // in central-directory order
    size_t n;
    size_t *by_name;      // indices sorted by (name, index)
    const uint8_t *data;
    const char *file;     // for messages; borrowed
} jb_zip_t;

int jb_zip_open(jb_zip_t *z, const uint8_t *data, size_t size, const char *file, jb_err_t *err);
void jb_zip_close(jb_zip_t *z);
// The first record of that name, or NULL.
const jb_zip_entry_t *jb_zip_find(const jb_zip_t *z, const char *name);
// 0 when every record is stored (method 0, not encrypted).
int jb_zip_all_stored(const jb_zip_t *z, jb_err_t *err);
// 0 when the record's CRC-32 matches its data.
int jb_zip_crc_ok(const jb_zip_t *z, const jb_zip_entry_t *e, jb_err_t *err);

#endif
