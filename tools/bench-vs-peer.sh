#!/bin/bash
# Speed side by side with the peer (tuned eager PyTorch, ../shared/perf/peer.sh), alternating in one sitting: each
# case runs `workbook bench` and the peer as separate processes, ROUNDS times, and the medians and their ratio go to
# one JSON file. Absolute speed moves between machines and hours; the ratio taken side by side is the figure to quote.
#   tools/bench-vs-peer.sh [--rounds N] [--out FILE.json] [--cases gemm,train,gen1,gen8] [--fix]
#   --fix adds a third side: workbook with WORKBOOK_MKL_VENDOR_FIX=1 (README, Platform notes).
# On CPUs without AVX-512 the peer needs PERF_CORETYPE=Haswell PERF_ATEN_CAP=avx2; the script sets them when
# /proc/cpuinfo shows no avx512f.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${WORKBOOK_SHARED:-$here/../shared}
rounds=3 out="" cases="gemm,train,gen1,gen8" fix=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --fix) fix=1; shift ;;
    *) echo "bench-vs-peer: unknown option '$1' (expected --rounds N, --out FILE, --cases LIST, --fix)" >&2; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench-vs-peer: --rounds $rounds: expected a positive integer" >&2; exit 2; }
for c in ${cases//,/ }; do
  [[ $c =~ ^(gemm|train|gen1|gen8)$ ]] || { echo "bench-vs-peer: --cases: unknown case '$c'" >&2; exit 2; }
done
[[ -x $shared/perf/peer.sh ]] || { echo "bench-vs-peer: $shared/perf/peer.sh not found (set WORKBOOK_SHARED)" >&2; exit 2; }
"$shared/perf/peer.sh" setup >/dev/null
grep -q avx512f /proc/cpuinfo || export PERF_CORETYPE=${PERF_CORETYPE:-Haswell} PERF_ATEN_CAP=${PERF_ATEN_CAP:-avx2}
"$here/workbook" info >/dev/null # builds once, so no build lands inside a timed process
dll=$(ls "$here"/src/Workbook.Cli/bin/Release/net*/workbook.dll | head -1)
raw=$(mktemp); trap 'rm -f "$raw"' EXIT
# one JSON object per line: {"case", "side", "value"} (GFLOP/s or tokens/s)
wb() { # side case args...
  local side=$1 case=$2; shift 2
  local fixenv=WORKBOOK_MKL_VENDOR_FIX=0; [[ $side == wbfix ]] && fixenv=WORKBOOK_MKL_VENDOR_FIX=1
  local v; v=$(env "$fixenv" dotnet "$dll" bench "$@" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); k=sys.argv[1]; print(d[k])' "$key")
  echo "{\"case\": \"$case\", \"side\": \"$side\", \"value\": $v}" >> "$raw"
}
peer() { # case args...
  local case=$1; shift
  local v; v=$("$shared/perf/peer.sh" "$@" 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$pkey")
  echo "{\"case\": \"$case\", \"side\": \"peer\", \"value\": $v}" >> "$raw"
}
sides="wb"; [[ $fix == 1 ]] && sides="wb wbfix"
for r in $(seq "$rounds"); do
  for c in ${cases//,/ }; do
    case $c in
      gemm) key=gemm_peak_gflops pkey=gflops_median
        for s in $sides; do wb "$s" gemm_f32 gemm --dtype f32; done
        peer gemm_f32 gemm --sizes 2048 --dtypes f32 --warmup 3 --runs 15 ;;
      train) key=train_tokens_per_second pkey=tokens_per_s_median
        for s in $sides; do wb "$s" train_f32 train --preset small --dtype f32; done
        peer train_f32 train --vocab 4096 --mode f32 --warmup 3 --steps 10 ;;
      gen1|gen8) b=${c#gen} key=generate_tokens_per_second_batch${c#gen} pkey=tokens_per_s_e2e_median
        for s in $sides; do
          wb "$s" "gen_b${b}_f32" generate --preset small --vocab 151936 --dtype f32 --gen-batch "$b"
        done
        peer "gen_b${b}_f32" gen --vocab 151936 --mode f32 --batch "$b" --warmup 2 --runs 3 ;;
    esac
  done
  echo "round $r of $rounds done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done
python3 - "$raw" "${out:-/dev/stdout}" "$rounds" <<'PY'
import json, os, statistics, sys, time
raw, out, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(raw)]
res = {"definitions": "shared/perf/README.md; values: GEMM 2048^2 GFLOP/s, train V4096 B8xT256 tokens/s, "
       "generate V151936 prompt 32 + 128 new greedy e2e tokens/s; medians of alternating processes",
       "rounds": rounds, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "loadavg_end": os.getloadavg()[0], "cases": {}}
for case in dict.fromkeys(r["case"] for r in rows):
    by = {}
    for r in rows:
        if r["case"] == case:
            by.setdefault(r["side"], []).append(r["value"])
    c = {s: {"median": statistics.median(v), "runs": v} for s, v in by.items()}
    for s in ("wb", "wbfix"):
        if s in c and "peer" in c:
            c[f"{s}_over_peer"] = c[s]["median"] / c["peer"]["median"]
    res["cases"][case] = c
text = json.dumps(res, indent=1)
if out == "/dev/stdout":
    print(text)
else:
    tmp = out + ".tmp"
    open(tmp, "w").write(text + "\n"); os.replace(tmp, out)
    print(f"wrote {out}", file=sys.stderr)
PY
