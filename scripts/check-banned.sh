#!/bin/sh
# Fails when the sources call a function on the banned list (unbounded copies and unchecked
# conversions; curl's checksrc keeps a similar list).
set -eu
cd "$(dirname "$0")/.."
banned='strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|strtok|strncpy|tmpnam'
if grep -nE "(^|[^_a-zA-Z0-9])($banned)[[:space:]]*\(" $(git ls-files --cached --others --exclude-standard 'src/*.c' 'src/*.h' 2>/dev/null || find src -name '*.[ch]'); then
    echo "banned functions used (see scripts/check-banned.sh)"
    exit 1
fi
echo "banned functions: none used"
