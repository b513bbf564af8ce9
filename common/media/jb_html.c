// jb_html.c: see jb_html.h.
#include "jb_html.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "jb_publish.h"

// Frames of the alignment animation: one per 16 top-level tokens (~46 ms at
// 44.1 kHz and hop 128), as the reference's page does.
#define JB_HTML_FRAME_TOKENS 16

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

// Append one PNG chunk (length, type, data, CRC over type+data).
static size_t png_chunk(uint8_t *out, const char *type, const uint8_t *data, uint32_t n) {
    put_be32(out, n);
    memcpy(out + 4, type, 4);
    if (n) memcpy(out + 8, data, n);
    uint32_t crc = (uint32_t)crc32(0L, out + 4, 4 + n);
    put_be32(out + 8 + n, crc);
    return 12 + (size_t)n;
}

int jb_png_write_gray(const char *path, const uint8_t *pix, int w, int h, jb_err_t *err) {
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
        return jb_err_set(err, JB_EINVAL, "%s: bad image size %dx%d", path, w, h);
    size_t raw_n = (size_t)h * (size_t)(w + 1);
    uint8_t *raw = malloc(raw_n);
    uLongf z_n = compressBound((uLong)raw_n);
    uint8_t *z = malloc(z_n);
    uint8_t *png = malloc(z_n + 128);
    int rc = -1;
    if (!raw || !z || !png) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int y = 0; y < h; y++) {   // filter type 0 (none) on every row
        raw[(size_t)y * (w + 1)] = 0;
        memcpy(raw + (size_t)y * (w + 1) + 1, pix + (size_t)y * w, (size_t)w);
    }
    if (compress2(z, &z_n, raw, (uLong)raw_n, 6) != Z_OK) {
        jb_err_set(err, JB_EINTERNAL, "%s: zlib failed", path);
        goto done;
    }
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 0;
    memcpy(png, sig, 8);
    n = 8;
    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)w);
    put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8, ihdr[9] = 0, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0;   // 8-bit gray
    n += png_chunk(png + n, "IHDR", ihdr, 13);
    n += png_chunk(png + n, "IDAT", z, (uint32_t)z_n);
    n += png_chunk(png + n, "IEND", NULL, 0);
    rc = jb_publish_bytes(path, png, n, err);
done:
    free(raw);
    free(z);
    free(png);
    return rc;
}

int jb_html_write_waveform(const char *path, const float *audio, int64_t n, int w, int h,
                           jb_err_t *err) {
    if (w <= 0 || h <= 1 || w > 16384 || h > 16384 || n < 1)
        return jb_err_set(err, JB_EINVAL, "%s: bad waveform size %dx%d of %lld samples", path, w,
                          h, (long long)n);
    uint8_t *pix = malloc((size_t)w * h);
    if (!pix) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    memset(pix, 0x1c, (size_t)w * h);                 // background, a little lighter than the page
    for (int x = 0; x < w; x++) pix[(size_t)(h / 2) * w + x] = 0x44;   // the zero line
    for (int x = 0; x < w; x++) {
        int64_t a = n * x / w, b = n * (x + 1) / w;
        if (b <= a) b = a + 1;
        float lo = 1, hi = -1;
        for (int64_t i = a; i < b && i < n; i++) {
            float v = audio[i] < -1 ? -1 : audio[i] > 1 ? 1 : audio[i];
            lo = v < lo ? v : lo, hi = v > hi ? v : hi;
        }
        int y0 = (int)((1 - hi) * 0.5f * (h - 1) + 0.5f), y1 = (int)((1 - lo) * 0.5f * (h - 1) + 0.5f);
        for (int y = y0; y <= y1 && y < h; y++) pix[(size_t)y * w + x] = 0xd8;
    }
    int rc = jb_png_write_gray(path, pix, w, h, err);
    free(pix);
    return rc;
}

// ---- a growable string ------------------------------------------------------------

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}
static void sb_str(sbuf_t *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}
// HTML-escaped text (also safe inside attribute values).
static void sb_html(sbuf_t *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': sb_str(b, "&lt;"); break;
        case '>': sb_str(b, "&gt;"); break;
        case '&': sb_str(b, "&amp;"); break;
        case '"': sb_str(b, "&quot;"); break;
        case '\'': sb_str(b, "&#39;"); break;
        default: sb_put(b, s, 1);
        }
    }
}

// The alignment reduced to animation frames, quantised to 0..255:
// frame f = mean of token rows [16 f, 16 f + 16).
static void frames_json(sbuf_t *b, const jb_html_sample_t *s) {
    const int per = s->rows_per_frame > 0 ? s->rows_per_frame : JB_HTML_FRAME_TOKENS;
    int n_frames = (s->n_frames + per - 1) / per;
    sb_str(b, "[");
    for (int f = 0; f < n_frames; f++) {
        int t0 = f * per, t1 = t0 + per;
        if (t1 > s->n_frames) t1 = s->n_frames;
        sb_str(b, f ? ",[" : "[");
        for (int c = 0; c < s->n_chars; c++) {
            double acc = 0;
            for (int t = t0; t < t1; t++) acc += s->alignment[(size_t)t * s->n_chars + c];
            double v = acc / (t1 - t0);
            int q = (int)(v * 255.0 + 0.5);
            q = q < 0 ? 0 : q > 255 ? 255 : q;
            sb_printf(b, c ? ",%d" : "%d", q);
        }
        sb_str(b, "]");
    }
    sb_str(b, "]");
}

// Alignment picture: lyric characters across, time down, scaled to at most
// 1024 rows and columns by averaging.
static int write_alignment_png(const char *path, const jb_html_sample_t *s, jb_err_t *err) {
    int w = s->n_chars < 1024 ? s->n_chars : 1024;
    int h = s->n_frames < 1024 ? s->n_frames : 1024;
    uint8_t *pix = calloc((size_t)w * h, 1);
    if (!pix) return jb_err_set(err, JB_ENOMEM, "%s: out of memory", path);
    float vmax = 0;
    for (size_t i = 0; i < (size_t)s->n_frames * s->n_chars; i++)
        if (s->alignment[i] > vmax) vmax = s->alignment[i];
    for (int y = 0; y < h; y++) {
        int t0 = (int)((int64_t)y * s->n_frames / h), t1 = (int)((int64_t)(y + 1) * s->n_frames / h);
        for (int x = 0; x < w; x++) {
            int c0 = (int)((int64_t)x * s->n_chars / w), c1 = (int)((int64_t)(x + 1) * s->n_chars / w);
            double acc = 0;
            for (int t = t0; t < t1; t++)
                for (int c = c0; c < c1; c++) acc += s->alignment[(size_t)t * s->n_chars + c];
            double v = acc / ((t1 - t0) * (c1 - c0)) / (vmax > 0 ? vmax : 1);
            pix[(size_t)y * w + x] = (uint8_t)(255.0 - 255.0 * (v > 1 ? 1 : v));   // dark = attended
        }
    }
    int rc = jb_png_write_gray(path, pix, w, h, err);
    free(pix);
    return rc;
}

static const char *k_script =
    "<script>\n"
    "// Light up the lyrics: frames[f][c] is the attention (0..255) of the top\n"
    "// prior's alignment head on character c during animation frame f.\n"
    "function follow(audio, sample) {\n"
    "  const frames = JSON.parse(document.getElementById('align-' + sample).textContent);\n"
    "  if (!frames.length) return;\n"
    "  const spans = document.querySelectorAll('#lyrics-' + sample + ' span');\n"
    "  function paint() {\n"
    "    if (!audio.duration) return;\n"
    "    let f = Math.floor(audio.currentTime / audio.duration * frames.length);\n"
    "    f = Math.min(Math.max(f, 0), frames.length - 1);\n"
    "    const row = frames[f];\n"
    "    for (let c = 0; c < spans.length && c < row.length; c++) {\n"
    "      const g = Math.max(230 - 10 * row[c], 0);\n"
    "      spans[c].style.color = 'rgb(255,' + g + ',' + g + ')';\n"
    "    }\n"
    "  }\n"
    "  audio.addEventListener('timeupdate', paint);\n"
    "  audio.addEventListener('seeked', paint);\n"
    "}\n"
    "document.querySelectorAll('audio[data-sample]').forEach(a => follow(a, a.dataset.sample));\n"
    "// Per level, when its codes were complete (timings.js: it varies from run to run).\n"
    "document.querySelectorAll('td.ready').forEach(td => {\n"
    "  const v = (window.jbTimings || {})[td.dataset.level];\n"
    "  if (v > 0) td.textContent = v.toFixed(1) + ' s';\n"
    "});\n"
    "</script>\n";

// The page's head, its styles, the title and the job's settings.
static void page_head(sbuf_t *b, const jb_html_page_t *p) {
    sb_str(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
    sb_html(b, p->title ? p->title : "jukebox");
    sb_str(b, "</title>\n<style>\n"
              "body{font-family:sans-serif;max-width:1024px;margin:auto;padding:1em;"
              "background:#111;color:#eee}\n"
              "a,a:visited{color:#9cc3ff}\n"
              "section{margin:2em 0;padding:1em;border:1px solid #444;border-radius:8px}\n"
              "audio{width:100%}\n"
              ".lyrics{white-space:pre-wrap;font-size:1.2em;font-weight:bold;color:#e6e6e6}\n"
              ".align{width:100%;max-height:256px;image-rendering:pixelated;background:#fff}\n"
              ".meta{color:#b8b8b8}\n"
              "table.levels{border-collapse:collapse;width:100%}\n"
              ".levels td,.levels th{padding:4px 8px;text-align:left;vertical-align:middle}\n"
              ".levels th{color:#b8b8b8;font-weight:normal}\n"
              ".wave{width:100%;height:64px;display:block;background:#1c1c1c}\n"
              "</style></head><body>\n<h1>");
    sb_html(b, p->title ? p->title : "jukebox");
    sb_str(b, "</h1>\n<p class=\"meta\">Artist <b>");
    sb_html(b, p->artist && *p->artist ? p->artist : "(none)");
    sb_str(b, "</b>, genre <b>");
    sb_html(b, p->genre && *p->genre ? p->genre : "(none)");
    sb_str(b, "</b>");
    if (p->details) {
        sb_str(b, "<br>Settings: ");
        sb_html(b, p->details);
    }
    sb_str(b, "</p>\n");
}

// A sample's levels: a table of waveform, audio and when the codes were complete (a
// preview link when the levels are not known).
static void sample_levels(sbuf_t *b, const jb_html_sample_t *s, int i) {
    if (s->n_levels > 0) {
        static const char *names[] = {"bottom, the result", "middle, preview",
                                      "top, preview", "level 3"};
        sb_str(b, "<table class=\"levels\"><tr><th>level</th><th>waveform</th>"
                  "<th>audio</th><th>codes complete after</th></tr>\n");
        for (int k = 0; k < s->n_levels && k < JB_HTML_MAX_LEVELS; k++) {
            const jb_html_level_t *L = &s->levels[k];
            int li = L->level >= 0 && L->level < 4 ? L->level : 3;
            sb_printf(b, "<tr class=\"level-%d\"><td style=\"white-space:nowrap\">%d: %s</td>"
                         "<td style=\"width:55%%\">",
                      L->level, L->level, names[li]);
            if (L->picture_href) {
                sb_printf(b, "<img class=\"wave\" alt=\"waveform of sample %d, level %d\" "
                             "src=\"", i, L->level);
                sb_html(b, L->picture_href);
                sb_str(b, "\">");
            }
            sb_str(b, "</td><td>");
            if (L->audio_href) {
                sb_str(b, "<a href=\"");
                sb_html(b, L->audio_href);
                sb_str(b, "\">");
                sb_html(b, L->audio_href);
                sb_str(b, "</a>");
            }
            // The time varies from run to run: timings.js carries it, so that
            // index.html itself is the same for the same job on every run.
            sb_printf(b, " <span class=\"meta\">%.1f s</span></td><td class=\"ready\" "
                         "data-level=\"%d\"><span class=\"meta\">unknown</span></td></tr>\n",
                      L->seconds, L->level);
        }
        sb_str(b, "</table>\n");
    } else if (s->preview_href) {
        sb_str(b, "<p class=\"meta\">Preview from the top-level codes: <a href=\"");
        sb_html(b, s->preview_href);
        sb_str(b, "\">");
        sb_html(b, s->preview_href);
        sb_str(b, "</a></p>\n");
    }
}

// One sample's section: title, player, levels, the alignment picture (written beside the
// page), the lyrics one span per character and the alignment frames. 0 / -1 + err.
static int sample_section(sbuf_t *b, const char *outdir, const jb_html_page_t *p, int i,
                          jb_err_t *err) {
    const jb_html_sample_t *s = &p->samples[i];
    char path[4096];
    sb_printf(b, "<section id=\"sample-%d\">\n<h2>Sample %d", i, i);
    // The player rounds its duration down (9.999 s shows as 0:09): say it here.
    if (s->seconds > 0) sb_printf(b, " <span class=\"meta duration\">%.1f s</span>", s->seconds);
    sb_str(b, "</h2>\n");
    if (s->audio_href) {
        sb_printf(b, "<audio controls preload=\"metadata\" data-sample=\"%d\" src=\"", i);
        sb_html(b, s->audio_href);
        sb_str(b, "\"></audio>\n");
    }
    sample_levels(b, s, i);
    int have_align = s->alignment && s->n_frames > 0 && s->n_chars > 0;
    if (have_align) {
        snprintf(path, sizeof path, "%s/align_%d.png", outdir, i);
        if (write_alignment_png(path, s, err) != 0) return -1;
        sb_printf(b, "<img class=\"align\" alt=\"alignment of sample %d: lyrics across, "
                     "time down\" src=\"align_%d.png\">\n", i, i);
    }
    // One span per character. The model's lyric token i is predicted with
    // the characters before it in view, so span i shows character i - 1,
    // as the reference's page does.
    sb_printf(b, "<pre class=\"lyrics\" id=\"lyrics-%d\">", i);
    const char *ly = p->lyrics ? p->lyrics : "";
    size_t len = strlen(ly);
    if (len) sb_str(b, "<span></span>");
    for (size_t c = 0; c + 1 < len; c++) {
        char ch[2] = {ly[c], 0};
        sb_str(b, "<span>");
        sb_html(b, ch);
        sb_str(b, "</span>");
    }
    sb_str(b, "</pre>\n");
    sb_printf(b, "<script type=\"application/json\" id=\"align-%d\">", i);
    if (have_align) frames_json(b, s);
    else sb_str(b, "[]");
    sb_str(b, "</script>\n</section>\n");
    return 0;
}

// timings.js: per level, seconds from the job's start until its codes were complete
// (the same for every sample; {} when unknown). The time varies from run to run, so it
// is kept out of index.html, which is then the same for the same job on every run.
static int write_timings(const char *outdir, const jb_html_page_t *p, jb_err_t *err) {
    char js[256], path[4096];
    int n = snprintf(js, sizeof js, "window.jbTimings = {");
    const jb_html_sample_t *s0 = p->n_samples > 0 ? &p->samples[0] : NULL;
    for (int k = 0, first = 1; s0 && k < s0->n_levels && k < JB_HTML_MAX_LEVELS; k++) {
        if (s0->levels[k].ready_s <= 0) continue;
        n += snprintf(js + n, sizeof js - (size_t)n, "%s\"%d\": %.3f", first ? "" : ", ",
                      s0->levels[k].level, s0->levels[k].ready_s);
        first = 0;
    }
    n += snprintf(js + n, sizeof js - (size_t)n, "};\n");
    snprintf(path, sizeof path, "%s/timings.js", outdir);
    return jb_publish_bytes(path, js, (size_t)n, err);
}

int jb_html_write(const char *outdir, const jb_html_page_t *p, jb_err_t *err) {
    sbuf_t b = {0};
    char path[4096];
    page_head(&b, p);
    for (int i = 0; i < p->n_samples; i++)
        if (sample_section(&b, outdir, p, i, err)) goto fail;
    sb_str(&b, "<script src=\"timings.js\"></script>\n");
    sb_str(&b, k_script);
    sb_str(&b, "</body></html>\n");
    if (b.oom) {
        jb_err_set(err, JB_ENOMEM, "%s: out of memory building the page", outdir);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/index.html", outdir);
    if (jb_publish_bytes(path, b.s, b.n, err) != 0 || write_timings(outdir, p, err)) goto fail;
    free(b.s);
    return 0;
fail:
    free(b.s);
    return -1;
}
