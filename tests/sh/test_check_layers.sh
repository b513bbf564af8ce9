#!/bin/bash
# test_check_layers.sh: `make check-layers` (scripts/check-layers.py) passes on the tree and
# fails, naming file:line, on a temp copy of common/ with an include planted that points up a
# layer, with a module left directly in common/, with an include nothing resolves and with a
# header name held by two layers. A same-layer and a downward include stay allowed.
set -u
cd "$(dirname "$0")/../.."
pass=0; fail=0
check() { if eval "$2"; then echo "  ok   $1"; pass=$((pass + 1)); else echo "  FAIL $1"; fail=$((fail + 1)); fi; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
CL=scripts/check-layers.py
layers=$(sed -n 's/^LAYERS *:\?= *//p' Makefile)

# 1. the tree as it is
out=$(make -s check-layers 2>&1); rc=$?
check "make check-layers passes on the tree (exit $rc: $(tail -1 <<<"$out"))" '[ $rc = 0 ]'
check "it looked at the layer folders" 'grep -qE "check-layers: [1-9][0-9]* files, [1-9][0-9]* includes, 0 violations" <<<"$out"'

fresh() {   # a temp copy of the tree's common/ and Makefile in $T/r
    rm -rf "$T/r"; mkdir -p "$T/r"
    cp -r common "$T/r/common"; cp Makefile "$T/r/"
}
run_cl() { out=$("$CL" --root "$T/r" 2>&1); rc=$?; }

# 2. a planted upward include: core/jb_err.c includes a header of serve/
fresh
sed -i '0,/^#include/s//#include "jb_stage.h"\n#include/' "$T/r/common/core/jb_err.c"
line=$(grep -n '#include "jb_stage.h"' "$T/r/common/core/jb_err.c" | cut -d: -f1)
run_cl
check "upward include: exit 1 (got $rc)" '[ $rc = 1 ]'
check "upward include: names common/core/jb_err.c:$line and the layers" \
    'grep -q "^common/core/jb_err.c:$line: #include \"jb_stage.h\" points up: core/ may not include serve/" <<<"$out"'
check "upward include: one violation counted" 'grep -q ", 1 violation$" <<<"$out"'

# 3. the same through make check-layers in the copy (the Makefile's LAYERS order)
mkdir -p "$T/r/scripts"; cp "$CL" "$T/r/scripts/"
out=$(make -s -C "$T/r" check-layers 2>&1); rc=$?
check "make check-layers in the copy fails (exit $rc)" '[ $rc != 0 ] && grep -q "jb_err.c:$line" <<<"$out"'

# 4. downward and same-layer includes are fine: serve/ includes core/ and serve/
fresh
printf '#include "jb_err.h"\n#include "jb_stage.h"\n#include "jb_wire.h"\n' >> "$T/r/common/serve/jb_sample.c"
run_cl
check "downward and sideways includes pass (exit $rc)" '[ $rc = 0 ]'

# 5. a module directly in common/
fresh
printf '#include "jb_err.h"\n' > "$T/r/common/jb_flat.c"
run_cl
check "a file directly in common/ fails and is named" '[ $rc = 1 ] && grep -q "^common/jb_flat.c: sits directly in common/" <<<"$out"'

# 6. an include no layer holds, and a folder that is not a layer
fresh
printf '#include "jb_nonesuch.h"\n' >> "$T/r/common/ops/jb_nn.c"
n=$(wc -l < "$T/r/common/ops/jb_nn.c")
mkdir "$T/r/common/misc"; printf '\n' > "$T/r/common/misc/jb_x.c"
run_cl
check "an unresolved include is named with its line" 'grep -q "^common/ops/jb_nn.c:$n: #include \"jb_nonesuch.h\": no layer folder holds it" <<<"$out"'
check "a folder outside the layers is named" 'grep -q "^common/misc/jb_x.c: misc/ is not a layer" <<<"$out"'
check "both counted, exit 1" '[ $rc = 1 ] && grep -q ", 2 violations$" <<<"$out"'

# 7. one header name in two layers (flat includes would be ambiguous)
fresh
cp "$T/r/common/core/jb_err.h" "$T/r/common/wire/jb_err.h"
run_cl
check "a header name in two layers fails" '[ $rc = 1 ] && grep -q "jb_err.h: header name also in common/" <<<"$out"'

# 8. the order given on the command line wins; a bad --root is a usage error
fresh
run_cl
# shellcheck disable=SC2086
out=$("$CL" --root "$T/r" $(tr ' ' '\n' <<<"$layers" | tac | tr '\n' ' ') 2>&1); rc=$?
check "reversed layer order: the tree's downward includes now fail" '[ $rc = 1 ] && grep -q "points up" <<<"$out"'
"$CL" --root "$T/none" >/dev/null 2>&1; rc=$?
check "no common/ under --root: exit 64 (got $rc)" '[ $rc = 64 ]'

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
