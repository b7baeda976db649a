#!/bin/sh
# Fails when a C source file differs from what clang-format (.clang-format) would write.
set -eu
cd "$(dirname "$0")/.."
# The project's own sources only: a build directory with another name than build* (generated
# sources, CMake's test programs) is not ours to format.
files=$(git ls-files --cached --others --exclude-standard -- 'src/*.[ch]' 'tests/*.[ch]' \
    'bench/*.[ch]' 2>/dev/null || find src tests bench -name '*.[ch]')
[ -n "$files" ] || { echo "no C files"; exit 1; }
# shellcheck disable=SC2086
clang-format --dry-run -Werror $files
echo "formatting: $(echo "$files" | wc -w) files checked"
