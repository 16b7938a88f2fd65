#!/usr/bin/python3
"""gen_saslprep.py - the data tables of pgwharf's SASLprep (proxy/saslprep.c).

SASLprep (RFC 4013) is stringprep (RFC 3454) over Unicode 3.2.  Python
carries that version: unicodedata.ucd_3_2_0 and the stringprep module (its
tables are RFC 3454's).  This script writes proxy/saslprep_tables.c from
them:

    scripts/gen_saslprep.py                 rewrite proxy/saslprep_tables.c
    scripts/gen_saslprep.py --check-tables  exit 1 when the committed file differs
    scripts/gen_saslprep.py --check BINARY [N]
        compare BINARY (tests/saslprep_filter.c: hex lines in, "rc hex" lines
        out) with a Python reference of PostgreSQL's pg_saslprep over N
        random strings (default 20000), long runs of combining marks and
        every assigned character alone

Decompositions and combining classes are those of the characters assigned
in Unicode 3.2 as ucd_3_2_0.decomposition()/combining() give them, which
are the current data for those characters: what PostgreSQL's own tables
(a later Unicode) hold for them.  The one place that differs from
ucd_3_2_0.normalize() is the five CJK compatibility ideographs whose
decomposition Unicode corrected after 3.2 (Python reverts them; PostgreSQL
does not, nor does pgwharf); the reference below follows PostgreSQL.
"""
import os
import random
import stringprep
import subprocess
import sys
import unicodedata

U = unicodedata.ucd_3_2_0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "proxy", "saslprep_tables.c")
MAXCP = 0x10FFFF
S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def assigned(c):
    return not stringprep.in_table_a1(chr(c)) and U.category(chr(c)) != "Cn"


def is_hangul(c):
    return S_BASE <= c < S_BASE + S_COUNT


def raw_decomp(c):
    """(compat, [code points]) or None, one level, no Hangul."""
    d = U.decomposition(chr(c))
    if not d:
        return None
    parts = d.split()
    compat = parts[0].startswith("<")
    if compat:
        parts = parts[1:]
    return compat, [int(p, 16) for p in parts]


def full_decomp(c):
    """Recursive compatibility decomposition (no Hangul: the C side does that)."""
    r = raw_decomp(c)
    if r is None:
        return [c]
    out = []
    for d in r[1]:
        out.extend(full_decomp(d))
    return out


def ranges(pred):
    out, start = [], None
    for c in range(MAXCP + 2):
        inside = c <= MAXCP and pred(c)
        if inside and start is None:
            start = c
        elif not inside and start is not None:
            out.append((start, c - 1))
            start = None
    return out


def tables():
    ch = chr
    t = {}
    t["map_to_nothing"] = ranges(lambda c: stringprep.in_table_b1(ch(c)))
    t["non_ascii_space"] = ranges(lambda c: stringprep.in_table_c12(ch(c)))

    def prohibited(c):
        s = ch(c)
        return (stringprep.in_table_c12(s) or stringprep.in_table_c21_c22(s)
                or stringprep.in_table_c3(s) or stringprep.in_table_c4(s)
                or stringprep.in_table_c5(s) or stringprep.in_table_c6(s)
                or stringprep.in_table_c7(s) or stringprep.in_table_c8(s)
                or stringprep.in_table_c9(s))
    t["prohibited"] = ranges(prohibited)
    t["unassigned"] = ranges(lambda c: stringprep.in_table_a1(ch(c)))
    t["randalcat"] = ranges(lambda c: stringprep.in_table_d1(ch(c)))
    t["lcat"] = ranges(lambda c: stringprep.in_table_d2(ch(c)))

    # canonical combining classes: runs of one non-zero class
    ccc = []
    for c in range(MAXCP + 1):
        k = U.combining(ch(c)) if assigned(c) else 0
        if not k:
            continue
        if ccc and ccc[-1][1] == c - 1 and ccc[-1][2] == k:
            ccc[-1][1] = c
        else:
            ccc.append([c, c, k])
    t["ccc"] = ccc

    # full decompositions: runs of consecutive characters that map to one
    # consecutive character each, else one entry each into a pool
    decomp, pool, pool_index = [], [], {}
    for c in range(MAXCP + 1):
        if not assigned(c) or is_hangul(c) or raw_decomp(c) is None:
            continue
        d = full_decomp(c)
        last = decomp[-1] if decomp else None
        if (len(d) == 1 and last and last[2] == 1 and last[0] + last[3] + 1 == c
                and pool[last[1]] + last[3] + 1 == d[0] and last[3] < 255):
            last[3] += 1
            continue
        key = tuple(d)
        if key not in pool_index:
            pool_index[key] = len(pool)
            pool.extend(d)
        decomp.append([c, pool_index[key], len(d), 0])
    t["decomp"], t["pool"] = decomp, pool

    # primary composites: canonical pairs that NFC keeps composed
    comp = []
    for c in range(MAXCP + 1):
        if not assigned(c) or is_hangul(c):
            continue
        r = raw_decomp(c)
        if r is None or r[0] or len(r[1]) != 2:
            continue
        if unicodedata.normalize("NFC", ch(c)) != ch(c):
            continue                     # a composition exclusion
        comp.append((r[1][0], r[1][1], c))
    comp.sort()
    t["compose"] = comp
    return t


def emit(t):
    o = []
    w = o.append
    w("/*")
    w(" * saslprep_tables.c - Unicode 3.2 data for SASLprep (proxy/saslprep.c).")
    w(" *")
    w(" * GENERATED by scripts/gen_saslprep.py from Python's stringprep module and")
    w(" * unicodedata.ucd_3_2_0: do not edit.  Regenerate with")
    w(" *     /usr/bin/python3 scripts/gen_saslprep.py")
    w(" * (ctest unit.saslprep_tables checks this file is what it writes).")
    w(" */")
    w('#include "proxy/saslprep_int.h"')
    w("")

    def table(decl, items, count=None):
        """decl = { items wrapped at 96 columns };  and pgw_sp_<count>_n."""
        w(decl + " = {")
        line = "   "
        for item in items:
            if len(line) + len(item) > 96:
                w(line)
                line = "   "
            line += item
        w(line)
        w("};")
        if count:
            w("const size_t pgw_sp_%s_n = %d;" % count)

    def range_table(name, rs, what):
        w("/* %s */" % what)
        table("const struct pgw_sp_range pgw_sp_%s[]" % name,
              [" { 0x%04X, 0x%04X }," % tuple(r) for r in rs], (name, len(rs)))
        w("")

    range_table("map_to_nothing", t["map_to_nothing"], "RFC 3454 B.1: commonly mapped to nothing.")
    range_table("non_ascii_space", t["non_ascii_space"], "RFC 3454 C.1.2: non-ASCII spaces (mapped to U+0020).")
    range_table("prohibited", t["prohibited"], "RFC 3454 C.1.2, C.2.1-C.9: prohibited output (RFC 4013 section 2.3).")
    range_table("unassigned", t["unassigned"], "RFC 3454 A.1: unassigned in Unicode 3.2.")
    range_table("randalcat", t["randalcat"], "RFC 3454 D.1: characters with bidi property R or AL.")
    range_table("lcat", t["lcat"], "RFC 3454 D.2: characters with bidi property L.")

    w("/* Canonical combining classes other than 0: lo, hi, class. */")
    table("const struct pgw_sp_ccc pgw_sp_ccc[]",
          [" { 0x%04X, 0x%04X, %d }," % tuple(r) for r in t["ccc"]], ("ccc", len(t["ccc"])))
    w("")

    w("/* Full compatibility decompositions (Hangul syllables are algorithmic):")
    w(" * code point, offset into pgw_sp_pool, length, and run: the next `run`")
    w(" * code points decompose to the next single characters of the pool's. */")
    table("const struct pgw_sp_decomp pgw_sp_decomp[]",
          [" { 0x%04X, %d, %d, %d }," % tuple(r) for r in t["decomp"]], ("decomp", len(t["decomp"])))
    w("")
    table("const uint32_t pgw_sp_pool[]", [" 0x%04X," % c for c in t["pool"]])
    w("")

    w("/* Canonical compositions (primary composites, exclusions left out),")
    w(" * sorted by first, second. */")
    table("const struct pgw_sp_compose pgw_sp_compose[]",
          [" { 0x%04X, 0x%04X, 0x%04X }," % tuple(r) for r in t["compose"]], ("compose", len(t["compose"])))
    return "\n".join(o) + "\n"


# ---- reference: PostgreSQL's pg_saslprep (src/common/saslprep.c) ----

OK, INVALID_UTF8, PROHIBITED = 0, -1, -2


def nfkc(s):
    """NFKC over Unicode 3.2 as PostgreSQL computes it (see the top)."""
    out = []
    for ch in s:
        c = ord(ch)
        if is_hangul(c):
            out.append(ch)
        else:
            out.extend(chr(d) for d in full_decomp(c))
    return U.normalize("NFKC", "".join(out))


def reference(raw):
    """(rc, bytes or None) as pg_saslprep gives them for raw (bytes)."""
    if all(b < 0x80 for b in raw):
        return OK, raw
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID_UTF8, None
    mapped = []
    for ch in s:
        if stringprep.in_table_c12(ch):
            mapped.append(" ")
        elif not stringprep.in_table_b1(ch):
            mapped.append(ch)
    if not mapped:
        return PROHIBITED, None
    out = nfkc("".join(mapped))
    for ch in mapped:                    # PostgreSQL checks the mapped string
        if (stringprep.in_table_c12(ch) or stringprep.in_table_c21_c22(ch)
                or stringprep.in_table_c3(ch) or stringprep.in_table_c4(ch)
                or stringprep.in_table_c5(ch) or stringprep.in_table_c6(ch)
                or stringprep.in_table_c7(ch) or stringprep.in_table_c8(ch)
                or stringprep.in_table_c9(ch) or stringprep.in_table_a1(ch)):
            return PROHIBITED, None
    if any(stringprep.in_table_d1(ch) for ch in mapped):
        if any(stringprep.in_table_d2(ch) for ch in mapped):
            return PROHIBITED, None
        if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            return PROHIBITED, None
    return OK, out.encode("utf-8")


def random_inputs(n, seed):
    rnd = random.Random(seed)
    marks = [c for c in range(0x300, 0x370)] + [0x0F71, 0x0F72, 0x0F74, 0x05B0, 0x05B9, 0x0654,
                                                0x3099, 0x309A, 0x1D165, 0x1D16E, 0x0E38, 0x0E48]
    interesting = ([c for c in range(0x20, 0x7F)] + [c for c in range(0xA0, 0x250)] +
                   [c for c in range(0x370, 0x500)] + [c for c in range(0x1E00, 0x2000)] +
                   [c for c in range(0x2000, 0x2200)] + [c for c in range(0x2460, 0x2500)] +
                   [c for c in range(0x3000, 0x3100)] + [c for c in range(0x3200, 0x3400)] +
                   [c for c in range(0xFB00, 0xFB50)] + [c for c in range(0xFE30, 0xFF00)] +
                   [c for c in range(0xFF00, 0xFFF0)] + [c for c in range(0x1100, 0x1200)] +
                   [c for c in range(0x0590, 0x0700)] + [c for c in range(0xAC00, 0xAC40)] +
                   [0x0F73, 0x0F75, 0x0F81, 0x1D15E, 0x1D1BB, 0x1D400, 0x2F800, 0x2F868,
                    0x00AD, 0x200B, 0x200D, 0xFEFF, 0x0000 + 7, 0xE000, 0x0340, 0x0341])
    for _ in range(n):
        k = rnd.randint(1, 8)
        s = []
        for _ in range(k):
            r = rnd.random()
            if r < 0.35:
                s.append(rnd.choice(marks))
            elif r < 0.85:
                s.append(rnd.choice(interesting))
            else:
                c = rnd.randint(0x80, 0x10FFFF) if rnd.random() < 0.3 else rnd.randint(0x80, 0xFFFF)
                if 0xD800 <= c <= 0xDFFF:
                    c = 0xE9
                s.append(c)
        yield "".join(chr(c) for c in s).encode("utf-8")
    for _ in range(n // 50):             # long runs of marks (the ordering sorts them)
        s = [rnd.choice(interesting) if rnd.random() < 0.05 else rnd.choice(marks)
             for _ in range(rnd.randint(16, 400))]
        yield "".join(chr(c) for c in s).encode("utf-8")
    for c in range(0x80, MAXCP + 1):     # every assigned character, alone and after "a"
        if assigned(c) and not (0xD800 <= c <= 0xDFFF):
            yield chr(c).encode("utf-8")
            yield ("a" + chr(c)).encode("utf-8")
    for raw in (b"\xC3", b"\xC0\xAF", b"\xED\xA0\x80", b"\xF4\x90\x80\x80", b"\xFF", b"a\x80"):
        yield raw


def check(binary, n):
    inputs = list(random_inputs(n, 4013))
    proc = subprocess.run([binary], input="".join(i.hex() + "\n" for i in inputs).encode(),
                          stdout=subprocess.PIPE, check=True)
    lines = proc.stdout.decode().splitlines()
    if len(lines) != len(inputs):
        print("got %d answers for %d inputs" % (len(lines), len(inputs)))
        return 1
    bad = 0
    for raw, line in zip(inputs, lines):
        parts = line.split()
        rc = int(parts[0])
        out = bytes.fromhex(parts[1]) if len(parts) > 1 else (b"" if rc == OK else None)
        want = reference(raw)
        if (rc, out) != want:
            bad += 1
            if bad <= 20:
                print("MISMATCH %s: C %r, reference %r" % (raw.hex(), (rc, out), want))
    print("%d inputs, %d mismatches" % (len(inputs), bad))
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "--check":
        return check(argv[2], int(argv[3]) if len(argv) > 3 else 20000)
    text = emit(tables())
    if len(argv) >= 2 and argv[1] == "--check-tables":
        path = argv[2] if len(argv) > 2 else OUT
        with open(path) as f:
            if f.read() != text:
                print("%s is not what scripts/gen_saslprep.py writes: regenerate it" % path)
                return 1
        print("%s is up to date" % path)
        return 0
    with open(OUT, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
