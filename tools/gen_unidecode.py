#!/usr/bin/env python3
"""Generate common/model/jb_unidecode_table.c: the transliteration tables of the PyPI
package `unidecode` 1.3.6 (the version the golden fixtures were made with) and
the lower-case mapping of Python's str.lower(), as compact C arrays.

Usage (generation only; the C build never runs this):
    python3 -m venv /tmp/ud && /tmp/ud/bin/pip install unidecode==1.3.6
    /tmp/ud/bin/python tools/gen_unidecode.py > common/model/jb_unidecode_table.c

Layout of the output (read by common/model/jb_text.c):
  * every distinct replacement string once, NUL-terminated, in one pool;
    string id 0 is "" (unidecode's None and "" both give "");
  * per 256-code-point section that unidecode has a table for: the start of
    its entries in one uint16 array of string ids, and its length (a position
    past the table's end gives "", as unidecode does);
  * Hangul syllables U+AC00..U+D7A3 are not stored: unidecode's table for them
    equals lead + vowel + tail romanisation of the syllable's decomposition,
    which this script verifies for all 11172 syllables before emitting the
    three small arrays;
  * the lower-case map: every code point whose str.lower() differs, with up to
    two code points of result (U+0130 is the only two-code-point case), and the
    two character classes that Python's final-sigma rule reads (as ranges).
"""
import importlib
import sys
import unicodedata

import unidecode

assert unidecode.__name__ == "unidecode"
MAX_SECTION = 0xF00          # unidecode looks up only code points <= 0xEFFFF
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def load_sections():
    secs = {}
    for sec in range(MAX_SECTION):
        try:
            mod = importlib.import_module("unidecode.x%03x" % sec)
        except ImportError:
            continue
        secs[sec] = [x if x is not None else "" for x in mod.data]
    return secs


def hangul_parts(secs):
    def ud(cp):
        sec, pos = cp >> 8, cp & 0xFF
        t = secs.get(sec)
        return t[pos] if t is not None and pos < len(t) else ""
    # syllable = 0xAC00 + (lead * 21 + vowel) * 28 + tail
    vowel = [ud(HANGUL_FIRST + 11 * 588 + v * 28) for v in range(21)]   # lead 11: silent
    lead = []
    for l in range(19):
        s = ud(HANGUL_FIRST + l * 588)
        assert s.endswith(vowel[0]), (l, s)
        lead.append(s[: len(s) - len(vowel[0])])
    assert lead[11] == ""
    tail = []
    for t in range(28):
        s = ud(HANGUL_FIRST + 11 * 588 + t)
        assert s.startswith(vowel[0]), (t, s)
        tail.append(s[len(vowel[0]):])
    for cp in range(HANGUL_FIRST, HANGUL_LAST + 1):
        s = cp - HANGUL_FIRST
        exp = lead[s // 588] + vowel[(s % 588) // 28] + tail[s % 28]
        assert ud(cp) == exp, (hex(cp), ud(cp), exp)
    return lead, vowel, tail


def c_string(s):
    out = []
    for ch in s:
        o = ord(ch)
        assert o < 128, "unidecode output must be ASCII"
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "?":
            out.append("\\?")          # no trigraphs
        elif 32 <= o < 127:
            out.append(ch)
        else:
            out.append("\\%03o" % o)
    return "".join(out)


def emit_array(w, ctype, name, values, per_line=16):
    w("const %s %s[%d] = {\n" % (ctype, name, len(values)))
    for i in range(0, len(values), per_line):
        w("    " + ",".join(str(v) for v in values[i:i + per_line]) + ",\n")
    w("};\n")


def main():
    secs = load_sections()
    lead, vowel, tail = hangul_parts(secs)
    hangul_secs = set(range(HANGUL_FIRST >> 8, (HANGUL_LAST >> 8)))  # fully inside
    assert (HANGUL_FIRST & 0xFF) == 0
    # the partial last section (0xD7) is stored whole; its syllables are never read

    pool_ids = {"": 0}
    pool = [""]
    def sid(s):
        if s not in pool_ids:
            pool_ids[s] = len(pool)
            pool.append(s)
        return pool_ids[s]

    n_sec = max(secs) + 1
    sec_start = [-1] * n_sec
    sec_len = [0] * n_sec
    entries = []
    for sec in range(n_sec):
        if sec not in secs or sec in hangul_secs:
            continue
        sec_start[sec] = len(entries)
        sec_len[sec] = len(secs[sec])
        entries.extend(sid(s) for s in secs[sec])
    for part in (lead, vowel, tail):
        for s in part:
            sid(s)
    offs, pos = [], 0
    for s in pool:
        offs.append(pos)
        pos += len(s) + 1
    assert pos < 65536 and len(pool) < 65536

    lower = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        l = chr(cp).lower()
        if l != chr(cp):
            assert len(l) <= 2, hex(cp)
            lower.append((cp, ord(l[0]), ord(l[1]) if len(l) > 1 else 0))

    # Python's lower() maps U+03A3 to final sigma when the previous non
    # case-ignorable char is cased and the next one is not. Recover the two
    # predicates the rule reads from lower() itself (no property tables needed):
    #   cased_ni(c): cased and not case-ignorable   <=> ('1' c 'S').lower() ends in final
    #   ignorable(c)                                <=> not cased_ni and ('A' c 'S') does
    SIG, FIN = "\u03a3", "\u03c2"
    cased_ni, ignorable = [], []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        b = ("1" + c + SIG).lower()[-1] == FIN
        a = ("A" + c + SIG).lower()[-1] == FIN
        if b:
            cased_ni.append(cp)
        elif a:
            ignorable.append(cp)
    assert ("A" + SIG).lower()[-1] == FIN and ("A" + SIG + "B").lower()[1] != FIN

    def ranges(cps):
        out = []
        for cp in cps:
            if out and out[-1][1] == cp - 1:
                out[-1][1] = cp
            else:
                out.append([cp, cp])
        return out

    w = sys.stdout.write
    w("// jb_unidecode_table.c: GENERATED by tools/gen_unidecode.py -- do not edit.\n")
    w("// Transliteration tables of unidecode %s (all sections; Hangul syllables\n"
      "// by composition, verified by the generator) and Python %d.%d str.lower()\n"
      "// (Unicode %s). Read by jb_text.c.\n"
      % (getattr(unidecode, "__version__", "1.3.6"), sys.version_info[0],
         sys.version_info[1], unicodedata.unidata_version))
    w("#include <stdint.h>\n\n")
    w("const int jb_text_ud_n_sections = %d;\n" % n_sec)
    w("const int jb_text_ud_n_strings = %d;\n" % len(pool))
    w("const char jb_text_ud_pool[%d] =\n" % pos)
    line = ""
    for s in pool:
        piece = c_string(s) + "\\000"   # 3 digits: a digit after it is not absorbed
        if len(line) + len(piece) > 90:
            w('    "%s"\n' % line)
            line = ""
        line += piece
    # the array holds pos bytes: drop the last explicit \0, the literal's own NUL ends it
    assert line.endswith("\\000")
    w('    "%s";\n' % line[:-4])
    emit_array(w, "uint16_t", "jb_text_ud_pool_off", offs)
    emit_array(w, "int32_t", "jb_text_ud_sec_start", sec_start)
    emit_array(w, "uint16_t", "jb_text_ud_sec_len", sec_len)
    emit_array(w, "uint16_t", "jb_text_ud_entries", entries, 20)
    emit_array(w, "uint16_t", "jb_text_ud_hangul_lead", [pool_ids[s] for s in lead])
    emit_array(w, "uint16_t", "jb_text_ud_hangul_vowel", [pool_ids[s] for s in vowel])
    emit_array(w, "uint16_t", "jb_text_ud_hangul_tail", [pool_ids[s] for s in tail])
    w("const int jb_text_lower_n = %d;\n" % len(lower))
    w("// (code point, lower-case code point, second code point or 0), sorted\n")
    w("const uint32_t jb_text_lower_map[%d][3] = {\n" % len(lower))
    for i in range(0, len(lower), 6):
        w("    " + ",".join("{%d,%d,%d}" % t for t in lower[i:i + 6]) + ",\n")
    w("};\n")
    for name, cps in (("cased", cased_ni), ("ignorable", ignorable)):
        rs = ranges(cps)
        w("const int jb_text_%s_n = %d;\n" % (name, len(rs)))
        w("const uint32_t jb_text_%s_ranges[%d][2] = {\n" % (name, len(rs)))
        for i in range(0, len(rs), 8):
            w("    " + ",".join("{%d,%d}" % tuple(r) for r in rs[i:i + 8]) + ",\n")
        w("};\n")


if __name__ == "__main__":
    main()
