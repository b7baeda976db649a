#!/bin/sh
# Fails when a C source file differs from what clang-format (.clang-format) would write.
set -eu
cd "$(dirname "$0")/.."
files=$(git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null || find src tests -name '*.[ch]')
[ -n "$files" ] || { echo "no C files"; exit 1; }
# shellcheck disable=SC2086
clang-format --dry-run -Werror $files
echo "formatting: $(echo "$files" | wc -w) files checked"
