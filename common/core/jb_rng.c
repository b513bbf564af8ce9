// jb_rng.c: the non-inline part of jb_rng.h (job id hashing).
#include "jb_rng.h"

uint64_t jb_rng_hash_job(const char *job_id) {
    // FNV-1a 64: fixed constants, byte order independent of the platform.
    uint64_t h = 0xCBF29CE484222325ull;
    for (const unsigned char *p = (const unsigned char *)job_id; p && *p; p++) {
        h ^= *p;
        h *= 0x100000001B3ull;
    }
    return h;
}
