// test_jb_pickle.c: the converter's two readers on their own (common/convert/jb_pickle.h,
// jb_zip.h): hand-written pickles through the machine and its hooks, and the zip records of
// a torch.save fixture (tests/fixtures/torch/), intact and corrupted.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jb_pickle.h"
#include "jb_test.h"
#include "jb_zip.h"

static int n_persistent, n_calls;

static jb_pv_t *persistent(jb_pickle_t *u, void *ctx, jb_pv_t *pid) {
    n_persistent++;
    if (!jb_pv_is_str(pid, "ok")) {
        jb_pickle_fail(u, JB_EFORMAT, "persistent id is not 'ok'");
        return NULL;
    }
    jb_pv_t *v = jb_pickle_new(u, JB_PV_INT);
    if (v) v->i = *(int *)ctx;
    return v;
}

static jb_pv_t *call(jb_pickle_t *u, void *ctx, const char *name, jb_pv_t *args) {
    n_calls++;
    if (strcmp(name, "m.seven")) return NULL;   // declined: an opaque object
    jb_pv_t *v = jb_pickle_new(u, JB_PV_INT);
    if (v) v->i = 7;
    return v;
}

static jb_pv_t *run(const char *bytes, size_t n, jb_pk_arena_t *ar, const jb_pickle_hooks_t *h,
                    jb_err_t *err) {
    size_t pos = 0;
    return jb_pickle_run((const uint8_t *)bytes, n, &pos, "t.pkl", "object", ar, h, err);
}

static void test_machine(void) {
    jb_pk_arena_t ar = {0};
    jb_err_t err = {0};
    int forty_two = 42;
    jb_pickle_hooks_t hooks = {persistent, call, &forty_two};
    // {'a': [1, 300, 'x'], 'b': <memo of the list>, 'p': persistent('ok'), 'c': m.seven(),
    //  'd': m.other(1)}  (protocol 2)
#define S1 "X\x01\x00\x00\x00"   // BINUNICODE of 1 byte (the byte follows)
    static const char pk[] =
        "\x80\x02}q\x00(" S1 "a" "]q\x01(K\x01M\x2c\x01" S1 "x" "e"
        S1 "b" "h\x01"
        S1 "p" "X\x02\x00\x00\x00" "ok" "Q"
        S1 "c" "cm\nseven\n)R"
        S1 "d" "cm\nother\nK\x01\x85R"
        "u.";
    jb_pv_t *v = run(pk, sizeof pk - 1, &ar, &hooks, &err);
    JB_CHECK(v && v->kind == JB_PV_DICT && v->n == 5, "a dict of 5 (%s)", v ? "" : err.msg);
    if (v) {
        jb_pv_t *a = jb_pv_dict_get(v, "a"), *b = jb_pv_dict_get(v, "b");
        JB_CHECK(a && a->kind == JB_PV_LIST && a->n == 3 && a->a[0]->i == 1 && a->a[1]->i == 300 &&
                     jb_pv_is_str(a->a[2], "x"),
                 "list [1, 300, 'x']");
        JB_CHECK(b == a, "the memo shares the list");
        jb_pv_t *p = jb_pv_dict_get(v, "p"), *c = jb_pv_dict_get(v, "c"), *d = jb_pv_dict_get(v, "d");
        JB_CHECK(p && p->kind == JB_PV_INT && p->i == 42 && n_persistent == 1,
                 "BINPERSID through the hook");
        JB_CHECK(c && c->kind == JB_PV_INT && c->i == 7, "REDUCE through the call hook");
        JB_CHECK(d && d->kind == JB_PV_OBJ && !strcmp(d->s, "m.other") && d->args && d->args->n == 1,
                 "a declined call is an opaque object with its arguments");
        JB_CHECK(n_calls == 2, "the hook saw both calls (%d)", n_calls);
        json_t *j = jb_pv_to_json(v, "t.pkl", &err);
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        JB_CHECK(s && !strcmp(s, "{\"a\":[1,300,\"x\"],\"b\":[1,300,\"x\"],\"c\":7,\"d\":null,\"p\":42}"),
                 "JSON of plain data, an opaque object without items is null: %s", s ? s : err.msg);
        free(s);
        json_decref(j);
    }
    // no hooks: a persistent id is refused, naming file, pickle, byte and opcode
    v = run(pk, sizeof pk - 1, &ar, NULL, &err);
    JB_CHECK(!v && err.code == JB_EFORMAT && strstr(err.msg, "t.pkl: object pickle: byte 49") &&
                 strstr(err.msg, "opcode 0x51") && strstr(err.msg, "persistent id where none"),
             "no hooks: persistent id refused (%s)", err.msg);
    // a hook's own error, with the place
    static const char bad[] = "\x80\x02X\x02\x00\x00\x00" "noQ.";
    v = run(bad, sizeof bad - 1, &ar, &hooks, &err);
    JB_CHECK(!v && strstr(err.msg, "byte 9") && strstr(err.msg, "is not 'ok'"),
             "hook error with its place (%s)", err.msg);
    // truncated, unknown opcode, protocol 6
    v = run(pk, 20, &ar, &hooks, &err);
    JB_CHECK(!v && err.code == JB_EFORMAT && strstr(err.msg, "unexpected end"), "truncated: %s", err.msg);
    v = run("\x80\x02\xff.", 4, &ar, &hooks, &err);
    JB_CHECK(!v && strstr(err.msg, "byte 2") && strstr(err.msg, "unknown"), "unknown opcode: %s", err.msg);
    v = run("\x80\x06N.", 4, &ar, &hooks, &err);
    JB_CHECK(!v && err.code == JB_EUNSUP, "protocol 6: JB_EUNSUP (%s)", err.msg);
    jb_pk_arena_free(&ar);
    JB_CHECK(ar.n == 0 && ar.all == NULL, "arena freed");
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) free(b), b = NULL;
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void test_zip(void) {
    jb_err_t err = {0};
    size_t n = 0;
    uint8_t *d = slurp("tests/fixtures/torch/offsets.zip.pth.tar", &n);
    JB_CHECK(d != NULL, "fixture read");
    if (!d) return;
    jb_zip_t z;
    JB_CHECK_OK(jb_zip_open(&z, d, n, "offsets.zip", &err), &err, "zip open");
    const jb_zip_entry_t *pk = NULL;
    for (size_t k = 0; k < z.n; k++)
        if (strstr(z.e[k].name, "/data.pkl")) pk = &z.e[k];
    JB_CHECK(pk && jb_zip_find(&z, pk->name) == pk, "data.pkl found by name");
    JB_CHECK(jb_zip_find(&z, "nonesuch") == NULL, "absent name: NULL");
    JB_CHECK(jb_zip_all_stored(&z, &err) == 0, "every record stored");
    JB_CHECK(pk && jb_zip_crc_ok(&z, pk, &err) == 0, "CRC of data.pkl");
    if (pk && pk->size > 0) {
        d[pk->off] ^= 1;
        JB_CHECK(jb_zip_crc_ok(&z, pk, &err) != 0 && err.code == JB_EFORMAT &&
                     strstr(err.msg, "CRC-32 mismatch") && strstr(err.msg, "data.pkl"),
                 "a flipped bit: CRC mismatch naming the record (%s)", err.msg);
        d[pk->off] ^= 1;
    }
    jb_zip_close(&z);
    // truncated: no end record
    JB_CHECK(jb_zip_open(&z, d, n - 30, "cut.zip", &err) != 0 && err.code == JB_EFORMAT &&
                 strstr(err.msg, "cut.zip: zip: no end of central directory"),
             "truncated archive refused (%s)", err.msg);
    free(d);
}

int main(void) {
    test_machine();
    test_zip();
    return jb_test_summary("test_jb_pickle");
}
