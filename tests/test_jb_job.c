// test_jb_job.c: job specs — defaults, JSON round trip, refusals.
#include <string.h>

#include "jb_job.h"
#include "jb_wire.h"
#include "jb_test.h"

static jb_prior_hparams_t preset(const char *name) {
    jb_prior_hparams_t p;
    jb_err_t err;
    json_t *hp = jb_hparams_preset(name, &err);
    memset(&p, 0, sizeof p);
    if (hp) jb_prior_hparams_parse(hp, &p, &err);
    json_decref(hp);
    return p;
}

static void expect_invalid(jb_job_t *j, const char *what, const char *needle) {
    jb_err_t err = {0};
    int rc = jb_job_validate(j, &err);
    JB_CHECK(rc != 0 && err.code == JB_EINVAL && strstr(err.msg, needle),
             "%s refused, message has '%s' (%s)", what, needle, err.msg);
}

int main(void) {
    jb_err_t err = {0};
    jb_job_t j, k;
    jb_job_defaults(&j);
    // sample.py's defaults
    JB_CHECK(j.temp[0] == 0.99 && j.temp[2] == 0.99 && j.hop_fraction[0] == 0.5 &&
                 j.hop_fraction[1] == 0.5 && j.hop_fraction[2] == 0.125 &&
                 j.max_batch_size[2] == 3 && j.chunk_size[0] == 32 && j.total_seconds == 240 &&
                 j.sample_seconds == 24,
             "reference defaults");
    JB_CHECK(jb_job_validate(&j, &err) == 0, "defaults valid (%s)", err.msg);

    // JSON round trip of every field
    snprintf(j.id, sizeof j.id, "song-1.a_b");
    j.mode = JB_MODE_CONTINUE;
    snprintf(j.artist, sizeof j.artist, "Alan Jackson");
    snprintf(j.genre, sizeof j.genre, "Country");
    j.artist_id[1] = 7;
    j.genre_ids[2][0] = 3, j.genre_ids[2][1] = 9, j.n_genre_ids[2] = 2;
    j.lyrics = strdup("I met a traveller\nfrom an antique land ünïcode");
    j.seed = 18446744073709551615ull;
    j.top_k[2] = 40;
    j.top_p[1] = 0.9;
    j.n_samples = 3;
    j.pick[0] = 2, j.pick[1] = 0, j.n_pick = 2;
    json_t *js = jb_job_to_json(&j);
    char *text = json_dumps(js, 0);
    json_t *back = json_loads(text, 0, NULL);
    jb_job_defaults(&k);
    JB_CHECK(jb_job_from_json(back, &k, &err) == 0, "from_json (%s)", err.msg);
    JB_CHECK(!strcmp(k.id, j.id) && k.mode == j.mode && !strcmp(k.artist, j.artist) &&
                 !strcmp(k.genre, j.genre) && k.artist_id[1] == 7 && k.artist_id[0] == -1 &&
                 k.n_genre_ids[2] == 2 && k.genre_ids[2][1] == 9 && k.n_genre_ids[0] == 0 &&
                 !strcmp(k.lyrics, j.lyrics) && k.seed == j.seed && k.top_k[2] == 40 &&
                 k.top_p[1] == 0.9 && k.n_pick == 2 && k.pick[0] == 2 && k.n_samples == 3 &&
                 k.temp[1] == 0.99,
             "every field survives the round trip");
    free(text);
    json_decref(js);
    json_decref(back);
    jb_job_free(&k);

    // Unknown keys and wrong types are refused, naming the key.
    jb_job_defaults(&k);
    json_t *bad = json_loads("{\"tmep\": 0.9}", 0, NULL);
    JB_CHECK(jb_job_from_json(bad, &k, &err) != 0 && strstr(err.msg, "tmep"), "typo key: %s",
             err.msg);
    json_decref(bad);
    bad = json_loads("{\"mode\": \"remix\"}", 0, NULL);
    JB_CHECK(jb_job_from_json(bad, &k, &err) != 0 && strstr(err.msg, "remix"), "unknown mode: %s",
             err.msg);
    json_decref(bad);
    bad = json_loads("{\"temp\": [1, 2]}", 0, NULL);
    JB_CHECK(jb_job_from_json(bad, &k, &err) != 0 && strstr(err.msg, "temp"), "temp arity: %s",
             err.msg);
    json_decref(bad);
    bad = json_loads("{\"temp\": 0.7, \"seed\": \"12\"}", 0, NULL);
    JB_CHECK(jb_job_from_json(bad, &k, &err) == 0 && k.temp[0] == 0.7 && k.temp[2] == 0.7 &&
                 k.seed == 12,
             "scalar applies to every level; seed as string");
    json_decref(bad);
    jb_job_free(&k);

    // Model-independent refusals
    jb_job_t v;
    jb_job_defaults(&v);
    snprintf(v.id, sizeof v.id, "../etc");
    expect_invalid(&v, "path-like id", "id");
    jb_job_defaults(&v);
    v.n_samples = 0;
    expect_invalid(&v, "zero samples", "n_samples");
    jb_job_defaults(&v);
    v.sample_seconds = 300;
    expect_invalid(&v, "sample longer than total", "longer than the total");
    jb_job_defaults(&v);
    v.temp[1] = 0;
    expect_invalid(&v, "temperature 0", "temperature");
    jb_job_defaults(&v);
    v.top_p[2] = 1.5;
    expect_invalid(&v, "top_p 1.5", "top_p");
    jb_job_defaults(&v);
    v.mode = JB_MODE_PRIMED;
    v.prompt_seconds = 30;
    expect_invalid(&v, "prompt longer than sample", "prompt");
    jb_job_defaults(&v);
    v.pick[0] = 1, v.n_pick = 1;
    expect_invalid(&v, "pick in ancestral mode", "pick");
    jb_job_defaults(&v);
    v.mode = JB_MODE_UPSAMPLE;
    v.pick[0] = 1, v.pick[1] = 1, v.n_pick = 2;
    expect_invalid(&v, "pick twice", "twice");

    // Against the released models
    jb_prior_hparams_t top = preset("prior_5b"), up0 = preset("upsampler_level_0");
    jb_job_defaults(&v);
    JB_CHECK(jb_job_validate_for_prior(&v, &top, &err) == 0, "defaults fit prior_5b (%s)", err.msg);
    JB_CHECK(jb_job_validate_for_prior(&v, &up0, &err) == 0, "defaults fit upsampler 0 (%s)",
             err.msg);
    v.total_seconds = 30;
    v.sample_seconds = 20;
    JB_CHECK(jb_job_validate_for_prior(&v, &top, &err) != 0 && strstr(err.msg, "[60, 600)"),
             "30 s total outside prior_5b's [60, 600) s: %s", err.msg);
    jb_job_defaults(&v);
    v.sample_seconds = 1.0;   // 44100/8 = 5512 bottom tokens < 8192
    JB_CHECK(jb_job_validate_for_prior(&v, &up0, &err) != 0 && strstr(err.msg, "one context"),
             "1 s is less than one bottom context: %s", err.msg);
    jb_job_defaults(&v);
    v.sample_seconds = 0.001;
    JB_CHECK(jb_job_validate_for_prior(&v, &top, &err) != 0 && strstr(err.msg, "one top-level"),
             "shorter than one top token: %s", err.msg);
    jb_job_defaults(&v);
    v.artist_id[2] = 5000;
    JB_CHECK(jb_job_validate_for_prior(&v, &top, &err) != 0 && strstr(err.msg, "artist"),
             "artist id past the table: %s", err.msg);
    JB_CHECK(jb_job_sample_length(&v, 44100, 128) == (int64_t)(24 * 44100) / 128 * 128,
             "sample length rounded to the top hop");
    // Job ids: one definition (docs/wire.md 2.1) for the wire, the spec and every tool.
    {
        static const struct { const char *id; int ok; } ids[] = {
            {"b:c", 1}, {"a.b", 1}, {"x-1_2", 1}, {"b.", 1}, {":b", 1},
            {".b", 0}, {".", 0}, {"..", 0}, {"", 0}, {"a/b", 0}, {"a b", 0}, {"caf\xc3\xa9", 0},
            {"0123456789012345678901234567890123456789012345678901234567890123", 0},   // 64
        };
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
            jb_job_t v;
            jb_job_defaults(&v);
            snprintf(v.id, sizeof v.id, "%s", ids[i].id);
            int spec_ok = strlen(ids[i].id) < sizeof v.id && jb_job_validate(&v, &err) == 0;
            JB_CHECK(jb_wire_job_id_ok(ids[i].id) == ids[i].ok && spec_ok == ids[i].ok,
                     "job id '%s': %s by the wire and the spec", ids[i].id,
                     ids[i].ok ? "valid" : "refused");
        }
    }
    jb_job_free(&j);
    return jb_test_summary("test_jb_job");
}
