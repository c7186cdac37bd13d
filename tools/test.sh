#!/usr/bin/env bash
# The test command: installs what the tests need (once), builds in Release, runs every test assembly and prints one line
# "N passed, N failed, N skipped". Extra arguments go to dotnet test (e.g. --filter "Category!=Large").
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || { echo "setup failed"; exit 1; }
dotnet build Workbook.sln -c Release -nologo -v q 2>&1 | grep -E ' error |WeakenGlibcxx' ; [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "build failed"; exit 1; }
log=$(mktemp)
dotnet test Workbook.sln -c Release --no-build "$@" 2>&1 | tee "$log"; rc=${PIPESTATUS[0]}
grep -E '^(Passed|Failed)!' "$log" | sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\1 \2 \3/' \
  | awk '{f+=$1;p+=$2;s+=$3} END {printf "%d passed, %d failed, %d skipped\n", p, f, s}'
rm -f "$log"
# the test host renamed its temporary root to done-* at exit (too little time to delete it there): delete it now
rm -rf "${TMPDIR:-/tmp}/workbook-tests/"done-*
exit $rc
