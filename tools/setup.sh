#!/usr/bin/env bash
# One-time setup on a fresh machine (idempotent): restore NuGet packages and the local dotnet tools.
# The TorchSharp native fix (GLIBCXX_3.4.32 on Debian 12) runs as part of every build (Directory.Build.targets).
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet restore Workbook.sln -nologo -v q
