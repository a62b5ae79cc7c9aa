#!/usr/bin/env bash
# Build optimc's C extension with AddressSanitizer and UndefinedBehaviorSanitizer
# in a temporary copy of the tree (the normal in-place build is not touched) and
# run the test suite against it. Exits nonzero on any sanitizer report, any
# crash or any failed test.
#
#   tools/sanitize.sh                      # the whole suite (tests/)
#   tools/sanitize.sh tests/test_api.py -x # any pytest arguments instead
#
# Environment: PYTHON (default: python3), CC (default: gcc; ASan's runtime is
# located with `$CC -print-file-name=libasan.so`), OPTIMC_SANITIZE_KEEP=1 keeps
# the temporary tree and the reports.
#
# Why these flags: -fno-wrapv undoes the -fwrapv that Python's own CFLAGS add
# (it defines signed overflow, which would hide it from UBSan);
# -fno-sanitize-recover=undefined makes the first UB report fatal; -O1 -g and
# frame pointers give usable stacks. They are appended after every flag
# setup.py and Python add, so they win over setup.py's -O3.
#
# How it runs: the interpreter is not instrumented, so ASan's runtime is
# LD_PRELOADed; PYTHONMALLOC=malloc routes Python's own allocations through it
# too; detect_leaks=0 because CPython keeps memory until exit by design. ASan
# writes its reports to log files (log_path), so reports from subprocesses the
# tests start (fork and crash tests) count as well; UBSan ignores log_path when
# it shares the process with ASan (GCC 12), so pytest runs with -s and its
# whole output is searched for sanitizer reports too. A sanitized subprocess
# that halts exits nonzero, which the tests that start subprocesses check.
#
# torch is made unimportable for this run (a stub package on PYTHONPATH that
# raises ModuleNotFoundError): its bundled native libraries clash with the
# preloaded ASan runtime, and the torch comparisons are parity tests of the
# formulas, not of memory safety; they skip cleanly, as they do wherever torch
# is not installed. OPTIMC_SANITIZE=1 is set so tests can tell they run here.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
cc="${CC:-gcc}"
san_flags="-fsanitize=address,undefined -fno-wrapv -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"

libasan="$("$cc" -print-file-name=libasan.so)"
if [ ! -f "$libasan" ]; then
    echo "sanitize: $cc has no ASan runtime (libasan.so not found)" >&2
    exit 2
fi
# libstdc++ is preloaded too: ASan resolves its C++ exception interceptor at
# start-up, and C++ extensions loaded later (matplotlib's ft2font) abort on their
# first throw when libstdc++ was not there yet.
preload="$libasan"
libstdcxx="$("$cc" -print-file-name=libstdc++.so.6)"
[ -f "$libstdcxx" ] && preload="$preload $libstdcxx"

work="$(mktemp -d "${TMPDIR:-/tmp}/optimc-sanitize.XXXXXX")"
cleanup() {
    if [ "${OPTIMC_SANITIZE_KEEP:-0}" = 1 ]; then
        echo "sanitize: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
mkdir -p "$work/tree" "$work/bin" "$work/reports" "$work/no-torch/torch"

# 1. The working tree as it is (uncommitted changes included), without build output.
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$root" && tar --null -T - -cf -) | tar -C "$work/tree" -xf -

# 2. A compiler wrapper that appends the sanitizer flags to every compile and link.
cat > "$work/bin/cc-sanitize" <<EOF
#!/bin/sh
exec "$cc" "\$@" $san_flags
EOF
chmod +x "$work/bin/cc-sanitize"

echo "sanitize: building in $work/tree with: $san_flags"
(cd "$work/tree" && CC="$work/bin/cc-sanitize" "$python" setup.py -q build_ext --inplace --force) \
    > "$work/build.log" 2>&1 || { cat "$work/build.log"; echo "sanitize: build failed" >&2; exit 2; }
ext="$(ls "$work"/tree/optimc/_core*.so)"
if ! nm -D "$ext" | grep __asan_init > /dev/null; then   # no -q: with pipefail, SIGPIPE to nm would fail the test
    echo "sanitize: $ext is not instrumented" >&2
    exit 2
fi

# 3. torch disabled for this run (see above).
cat > "$work/no-torch/torch/__init__.py" <<'EOF'
raise ModuleNotFoundError("torch is disabled under tools/sanitize.sh (its native libraries clash "
                          "with the preloaded ASan runtime)", name="torch")
EOF

# 4. The tests, against the instrumented build.
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(tests)
echo "sanitize: running pytest ${args[*]}"
set +e
(
    cd "$work/tree"
    export LD_PRELOAD="$preload"
    export PYTHONMALLOC=malloc
    export ASAN_OPTIONS="detect_leaks=0:log_path=$work/reports/asan:print_summary=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$work/reports/ubsan"
    export PYTHONPATH="$work/no-torch:$work/tree${PYTHONPATH:+:$PYTHONPATH}"
    export OPTIMC_SANITIZE=1
    "$python" -m pytest -p no:cacheprovider -q -s "${args[@]}" 2>&1
) | tee "$work/pytest.log"
status=${PIPESTATUS[0]}
set -e

# 5. Any report fails the run, whatever pytest said.
found=0
for r in "$work"/reports/*; do
    [ -e "$r" ] || continue
    echo "==== sanitizer report: $(basename "$r") ===="
    cat "$r"
    found=$((found + 1))
done
markers='runtime error:|ERROR: AddressSanitizer|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer)'
if grep -Eq "$markers" "$work/pytest.log"; then
    echo "==== sanitizer reports in the test output ===="
    grep -En -A12 "$markers" "$work/pytest.log" | head -400
    found=$((found + $(grep -Ec "$markers" "$work/pytest.log")))
fi
if [ "$found" -ne 0 ]; then
    echo "sanitize: $found sanitizer report(s); pytest exit status $status" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: no sanitizer reports, but pytest exit status $status" >&2
    exit "$status"
fi
echo "sanitize: no sanitizer reports, all tests passed"
