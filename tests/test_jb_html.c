// test_jb_html.c: the run page and its PNG writer; the page is loaded in
// headless Chromium when it is installed (scripts/deps.sh test installs it).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "jb_html.h"
#include "jb_test.h"

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)sz + 1);
    *n = fread(p, 1, (size_t)sz, f);
    p[*n] = 0;
    fclose(f);
    return p;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Parse our own PNG back independently: signature, IHDR, CRCs, IDAT through zlib.
static void check_png(const char *path, const uint8_t *want, int w, int h) {
    size_t n = 0;
    unsigned char *p = slurp(path, &n);
    JB_CHECK(p && n > 33 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8), "%s: PNG signature", path);
    if (!p || n < 33) {
        free(p);
        return;
    }
    JB_CHECK(!memcmp(p + 12, "IHDR", 4) && be32(p + 16) == (uint32_t)w && be32(p + 20) == (uint32_t)h &&
                 p[24] == 8 && p[25] == 0,
             "IHDR %dx%d 8-bit gray", w, h);
    size_t off = 8;
    int crc_ok = 1, got_idat = 0, got_iend = 0;
    while (off + 12 <= n) {
        uint32_t len = be32(p + off);
        if (off + 12 + len > n) break;
        uint32_t crc = (uint32_t)crc32(0L, p + off + 4, 4 + len);
        crc_ok &= crc == be32(p + off + 8 + len);
        if (!memcmp(p + off + 4, "IDAT", 4)) {
            uLongf raw_n = (uLongf)h * (w + 1);
            unsigned char *raw = malloc(raw_n);
            int zr = uncompress(raw, &raw_n, p + off + 8, len);
            int same = zr == Z_OK && raw_n == (uLongf)h * (w + 1);
            for (int y = 0; same && y < h; y++)
                same = raw[(size_t)y * (w + 1)] == 0 &&
                       !memcmp(raw + (size_t)y * (w + 1) + 1, want + (size_t)y * w, (size_t)w);
            JB_CHECK(same, "IDAT decompresses to the pixels");
            free(raw);
            got_idat = 1;
        }
        if (!memcmp(p + off + 4, "IEND", 4)) got_iend = 1;
        off += 12 + len;
    }
    JB_CHECK(crc_ok && got_idat && got_iend && off == n, "chunks, CRCs, IEND at the end");
    free(p);
}

int main(void) {
    jb_err_t err = {0};
    char dir[128], path[256], cmd[2048];
    snprintf(dir, sizeof dir, "/tmp/jb_test_html_%ld", (long)getpid());
    mkdir(dir, 0755);

    uint8_t pix[6 * 4];
    for (int i = 0; i < 24; i++) pix[i] = (uint8_t)(i * 10);
    snprintf(path, sizeof path, "%s/t.png", dir);
    JB_CHECK_OK(jb_png_write_gray(path, pix, 6, 4, &err), &err, "png write");
    check_png(path, pix, 6, 4);
    JB_CHECK(jb_png_write_gray(path, pix, 0, 4, &err) != 0, "zero width refused");
    snprintf(path, sizeof path, "%s/missing/t.png", dir);
    JB_CHECK(jb_png_write_gray(path, pix, 6, 4, &err) != 0 && err.code == JB_EIO,
             "unwritable path: %s", err.msg);

    // A page with two samples, one aligned: attention walks along the lyrics.
    const char *lyrics = "la <la> & \"la\"";
    int n_chars = (int)strlen(lyrics), n_frames = 64;
    float *align = calloc((size_t)n_frames * n_chars, sizeof(float));
    for (int t = 0; t < n_frames; t++) align[t * n_chars + t * n_chars / n_frames] = 1.0f;
    jb_html_sample_t samples[2] = {
        {.audio_href = "level_0/sample_0.wav", .preview_href = "level_2/sample_0.wav",
         .alignment = align, .n_frames = n_frames, .n_chars = n_chars},
        {.audio_href = "level_0/sample_1.wav"},
    };
    jb_html_page_t page = {.title = "job <7>", .artist = "Alan Jackson", .genre = "Country",
                           .lyrics = lyrics, .details = "ancestral, 24 s", .n_samples = 2,
                           .samples = samples};
    JB_CHECK_OK(jb_html_write(dir, &page, &err), &err, "page written");
    snprintf(path, sizeof path, "%s/index.html", dir);
    size_t n = 0;
    char *html = (char *)slurp(path, &n);
    JB_CHECK(html && strstr(html, "src=\"level_0/sample_0.wav\"") &&
                 strstr(html, "src=\"level_0/sample_1.wav\""),
             "an audio element per sample with its source");
    JB_CHECK(html && strstr(html, "job &lt;7&gt;") && !strstr(html, "job <7>"), "title escaped");
    JB_CHECK(html && strstr(html, "<span>&lt;</span>") && strstr(html, "<span>&amp;</span>"),
             "lyrics characters escaped");
    int spans = 0;
    for (char *q = html; q && (q = strstr(q, "<span")); q++) spans++;
    JB_CHECK(spans == 2 * n_chars, "one span per lyric token per sample (%d)", spans);
    JB_CHECK(html && strstr(html, "align_0.png") && !strstr(html, "align_1.png"),
             "picture only for the aligned sample");
    snprintf(path, sizeof path, "%s/align_0.png", dir);
    JB_CHECK(access(path, R_OK) == 0, "alignment picture written");
    free(html);

    // Per-level times: in timings.js, so that index.html is the same on every run.
    jb_html_sample_t timed[1] = {{.audio_href = "level_0/sample_0.wav", .n_levels = 2,
                                  .levels = {{.level = 0, .audio_href = "level_0/sample_0.wav",
                                              .seconds = 2, .ready_s = 3.25},
                                             {.level = 2, .audio_href = "level_2/sample_0.wav",
                                              .seconds = 2, .ready_s = 0.5}}}};
    jb_html_page_t tpage = {.title = "t", .n_samples = 1, .samples = timed};
    char *pages[2] = {0}, tdir[160];
    snprintf(tdir, sizeof tdir, "%s/timed", dir);
    mkdir(tdir, 0755);
    for (int run = 0; run < 2; run++) {
        timed[0].levels[0].ready_s = run ? 7.125 : 3.25;
        JB_CHECK_OK(jb_html_write(tdir, &tpage, &err), &err, "timed page written");
        snprintf(path, sizeof path, "%s/index.html", tdir);
        pages[run] = (char *)slurp(path, &n);
        snprintf(path, sizeof path, "%s/timings.js", tdir);
        char *js = (char *)slurp(path, &n);
        const char *want = run ? "window.jbTimings = {\"0\": 7.125, \"2\": 0.500};\n"
                               : "window.jbTimings = {\"0\": 3.250, \"2\": 0.500};\n";
        JB_CHECK(js && !strcmp(js, want), "timings.js of run %d: %s", run, js ? js : "(none)");
        free(js);
    }
    JB_CHECK(pages[0] && pages[1] && !strcmp(pages[0], pages[1]) &&
                 strstr(pages[0], "<script src=\"timings.js\"></script>") &&
                 strstr(pages[0], "class=\"ready\" data-level=\"2\""),
             "index.html is the same whatever the times; it loads timings.js");
    free(pages[0]);
    free(pages[1]);

    if (system("command -v chromium >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd,
                 "cd %s && timeout 60 chromium --headless --no-sandbox --disable-gpu "
                 "--user-data-dir=%s/profile --virtual-time-budget=2000 --dump-dom "
                 "file://%s/index.html > dom.html 2>/dev/null && "
                 "timeout 60 chromium --headless --no-sandbox --disable-gpu "
                 "--user-data-dir=%s/profile --window-size=1024,900 --screenshot=%s/shot.png "
                 "file://%s/index.html >/dev/null 2>&1",
                 dir, dir, dir, dir, dir, dir);
        int rc = system(cmd);
        snprintf(path, sizeof path, "%s/dom.html", dir);
        char *dom = (char *)slurp(path, &n);
        JB_CHECK(rc == 0 && dom && strstr(dom, "<audio") &&
                     strstr(dom, "src=\"level_0/sample_0.wav\""),
                 "chromium loads the page; the audio element has a source");
        int dspans = 0;
        for (char *q = dom; q && (q = strstr(q, "<span")); q++) dspans++;
        JB_CHECK(dspans == 2 * n_chars, "chromium sees the lyric spans (%d)", dspans);
        free(dom);
        snprintf(path, sizeof path, "%s/shot.png", dir);
        struct stat st;
        JB_CHECK(stat(path, &st) == 0 && st.st_size > 1000, "screenshot taken (%lld bytes)",
                 (long long)st.st_size);
    } else {
        JB_CHECK(0, "chromium not installed: run scripts/deps.sh test");
    }
    free(align);
    if (!getenv("JB_KEEP")) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) return 1;
    }
    return jb_test_summary("test_jb_html");
}
