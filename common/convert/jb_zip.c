// jb_zip.c: see jb_zip.h.
#include "jb_zip.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

void jb_zip_close(jb_zip_t *z) {
    for (size_t k = 0; z->e && k < z->n; k++) free(z->e[k].name);
    free(z->e);
    free(z->by_name);
    memset(z, 0, sizeof *z);
}

// The end of central directory: the last 22 bytes, or before a comment of up to 64 KiB.
// Sets the directory's entry count, size and offset (from the Zip64 record when present).
static int find_directory(const uint8_t *d, size_t size, const char *f, uint64_t *n_total,
                          uint64_t *cd_size, uint64_t *cd_off, jb_err_t *err) {
    size_t e = (size_t)-1;
    if (size >= 22)
        for (size_t k = size - 22;; k--) {
            if (le(d + k, 4) == 0x06054b50 && k + 22 + le(d + k + 20, 2) == size) {
                e = k;
                break;
            }
            if (k == 0 || size - k > 22 + 65535) break;
        }
    if (e == (size_t)-1)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: no end of central directory (truncated?)", f);
    *n_total = le(d + e + 10, 2), *cd_size = le(d + e + 12, 4), *cd_off = le(d + e + 16, 4);
    if (*n_total == 0xffff || *cd_size == 0xffffffff || *cd_off == 0xffffffff) {
        // Zip64: locator just before, pointing at the 64-bit record.
        if (e < 20 || le(d + e - 20, 4) != 0x07064b50)
            return jb_err_set(err, JB_EFORMAT, "%s: zip: zip64 locator missing", f);
        uint64_t z = le(d + e - 20 + 8, 8);
        if (z > size || size - z < 56 || le(d + z, 4) != 0x06064b50)
            return jb_err_set(err, JB_EFORMAT, "%s: zip: bad zip64 end of central directory", f);
        *n_total = le(d + z + 32, 8);
        *cd_size = le(d + z + 40, 8);
        *cd_off = le(d + z + 48, 8);
    }
    if (*cd_off > size || *cd_size > size - *cd_off || *n_total > *cd_size / 46)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: central directory outside the file", f);
    return 0;
}

// One central-directory entry at *c (before cend) into ze; advances *c.
static int read_entry(const uint8_t *d, size_t size, const char *f, size_t idx,
                      const uint8_t **c, const uint8_t *cend, jb_zip_entry_t *ze, jb_err_t *err) {
    const uint8_t *p = *c;
    if (cend - p < 46 || le(p, 4) != 0x02014b50)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: central directory entry %zu is damaged", f,
                          idx);
    ze->flags = (int)le(p + 8, 2);
    ze->method = (int)le(p + 10, 2);
    ze->crc = (uint32_t)le(p + 16, 4);
    uint64_t csize = le(p + 20, 4), usize = le(p + 24, 4), lho = le(p + 42, 4);
    size_t nl = le(p + 28, 2), xl = le(p + 30, 2), cl = le(p + 32, 2);
    if ((size_t)(cend - p) < 46 + nl + xl + cl)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: central directory entry %zu is damaged", f,
                          idx);
    if (!(ze->name = malloc(nl + 1))) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", f);
    memcpy(ze->name, p + 46, nl);
    ze->name[nl] = 0;
    // Zip64 extra field: the 64-bit values of the fields that read 0xffffffff.
    const uint8_t *x = p + 46 + nl, *xend = x + xl;
    while (xend - x >= 4) {
        size_t id = le(x, 2), len = le(x + 2, 2);
        if ((size_t)(xend - x - 4) < len) break;
        if (id == 1) {
            const uint8_t *y = x + 4, *yend = y + len;
            if (usize == 0xffffffff && yend - y >= 8) usize = le(y, 8), y += 8;
            if (csize == 0xffffffff && yend - y >= 8) csize = le(y, 8), y += 8;
            if (lho == 0xffffffff && yend - y >= 8) lho = le(y, 8), y += 8;
        }
        x += 4 + len;
    }
    *c = p + 46 + nl + xl + cl;
    if (lho > size || size - lho < 30 || le(d + lho, 4) != 0x04034b50)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s': local header damaged", f,
                          ze->name);
    uint64_t data = lho + 30 + le(d + lho + 26, 2) + le(d + lho + 28, 2);
    if (data > size || csize > size - data)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s' runs past the end of the file",
                          f, ze->name);
    ze->off = data;
    ze->size = usize;
    if (ze->method == 0 && csize != usize)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s': stored sizes disagree", f,
                          ze->name);
    return 0;
}

static int by_name_cmp(const void *a, const void *b, void *zp) {
    const jb_zip_t *z = zp;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int c = strcmp(z->e[i].name, z->e[j].name);
    return c ? c : (i > j) - (i < j);
}

int jb_zip_open(jb_zip_t *z, const uint8_t *data, size_t size, const char *file, jb_err_t *err) {
    memset(z, 0, sizeof *z);
    z->data = data, z->file = file;
    uint64_t n_total = 0, cd_size = 0, cd_off = 0;
    if (find_directory(data, size, file, &n_total, &cd_size, &cd_off, err)) return -1;
    z->e = calloc(n_total ? n_total : 1, sizeof *z->e);
    z->by_name = calloc(n_total ? n_total : 1, sizeof *z->by_name);
    if (!z->e || !z->by_name) {
        jb_zip_close(z);
        return jb_err_set(err, JB_ENOMEM, "%s: out of memory", file);
    }
    z->n = n_total;   // names not read yet are NULL: close frees what there is
    const uint8_t *c = data + cd_off, *cend = data + cd_off + cd_size;
    for (size_t k = 0; k < n_total; k++) {
        z->by_name[k] = k;
        if (read_entry(data, size, file, k, &c, cend, &z->e[k], err)) {
            jb_zip_close(z);
            return -1;
        }
    }
    qsort_r(z->by_name, z->n, sizeof *z->by_name, by_name_cmp, z);
    return 0;
}

const jb_zip_entry_t *jb_zip_find(const jb_zip_t *z, const char *name) {
    size_t lo = 0, hi = z->n;   // first index whose name is >= name
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(z->e[z->by_name[mid]].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < z->n && !strcmp(z->e[z->by_name[lo]].name, name) ? &z->e[z->by_name[lo]] : NULL;
}

int jb_zip_all_stored(const jb_zip_t *z, jb_err_t *err) {
    for (size_t k = 0; k < z->n; k++) {
        const jb_zip_entry_t *e = &z->e[k];
        if (e->method != 0 || (e->flags & 1))
            return jb_err_set(err, JB_EUNSUP, "%s: zip: record '%s' is compressed or encrypted "
                              "(method %d); torch.save writes stored records", z->file, e->name,
                              e->method);
    }
    return 0;
}

int jb_zip_crc_ok(const jb_zip_t *z, const jb_zip_entry_t *e, jb_err_t *err) {
    const uint8_t *p = z->data + e->off;
    uint64_t n = e->size;
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk, n -= chunk;
    }
    if ((uint32_t)c != e->crc)
        return jb_err_set(err, JB_EFORMAT, "%s: zip: record '%s': CRC-32 mismatch (corrupt file)",
                          z->file, e->name);
    return 0;
}
