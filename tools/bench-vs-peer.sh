#!/bin/bash
# Speed side by side with the peer (tuned eager PyTorch, ../shared/perf/peer.sh), alternating in one sitting: each
# case runs `workbook bench` and the peer as separate processes, ROUNDS times, and the medians and their ratio go to
# one JSON file. Absolute speed moves between machines and hours; the ratio taken side by side is the figure to quote.
#   tools/bench-vs-peer.sh [--rounds N] [--out FILE.json] [--mkl-off] [--task-model DIR]
#                          [--cases gemm,train,gen1,gen8,train16,gen8b16,task-train,task-gen]
#   train16 and gen8b16 are the bf16 rows (weights and activations in bf16 on both sides; AdamW state in bf16 on the
#   peer, float32 moments and master weights in the workbook, 4% of its step); they are not in the default set,
#   which stays the f32 comparison.
#   task-train and task-gen measure the main job's own model (`run all`: 3 layers, hidden 96, V 260) on one thread, as
#   each seed trains: an SFT-sized step (B32xT72, f32) and generation at GRPO's rollout batch (B64, prompt 32, 128 new,
#   greedy). They need a checkpoint of that model for both sides: --task-model DIR, default the newest
#   runs/*/sft-then-rl/seed-*/1-sft/start. The peer runs them twice: its manual attention ("peer", the workbook's
#   algorithm) and SDPA ("peer_sdpa").
#   The workbook side "wb" runs with the default oneMKL path (on for AMD CPUs); --mkl-off adds a third side, "wboff",
#   with WORKBOOK_MKL_VENDOR_FIX=0 (MKL's own path; README, Platform notes).
# On CPUs without AVX-512 the peer needs PERF_CORETYPE=Haswell PERF_ATEN_CAP=avx2; the script sets them when
# /proc/cpuinfo shows no avx512f.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${WORKBOOK_SHARED:-$here/../shared}
rounds=3 out="" cases="gemm,train,gen1,gen8" mkloff=0 taskmodel=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --mkl-off) mkloff=1; shift ;;
    --task-model) taskmodel=$2; shift 2 ;;
    *) echo "bench-vs-peer: unknown option '$1' (expected --rounds N, --out FILE, --cases LIST, --mkl-off, --task-model DIR)" >&2
       exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench-vs-peer: --rounds $rounds: expected a positive integer" >&2; exit 2; }
for c in ${cases//,/ }; do
  [[ $c =~ ^(gemm|train|gen1|gen8|train16|gen8b16|task-train|task-gen)$ ]] ||
    { echo "bench-vs-peer: --cases: unknown case '$c'" >&2; exit 2; }
done
# bf16 on an x86 CPU without oneDNN's bf16 path (AVX-512 BW/VL/DQ) is refused by `workbook bench`: say so up front
if [[ ,$cases, =~ ,(train16|gen8b16), && $(uname -m) == x86_64 && ${WORKBOOK_ALLOW_SLOW_BF16:-0} != 1 ]]; then
  missing=$(for f in avx512bw avx512vl avx512dq; do grep -qw "$f" /proc/cpuinfo || printf '%s ' "$f"; done)
  [[ -z $missing ]] || { echo "bench-vs-peer: --cases train16/gen8b16: this CPU lacks ${missing% }, so libtorch's bf16 \
matmul measured 15-47 times slower than f32 (README, Platform notes); drop them, or set WORKBOOK_ALLOW_SLOW_BF16=1" >&2
    exit 2; }
fi
if [[ ,$cases, == *,task-* ]]; then
  if [[ -z $taskmodel ]]; then
    taskmodel=$(ls -dt "$here"/runs/*/sft-then-rl/seed-*/1-sft/start 2>/dev/null | head -1 || true)
    [[ -n $taskmodel ]] || { echo "bench-vs-peer: task cases need the main job's model: run ./workbook run all first, or \
pass --task-model DIR" >&2; exit 2; }
  fi
  [[ -f $taskmodel/config.json && -f $taskmodel/model.safetensors ]] ||
    { echo "bench-vs-peer: --task-model $taskmodel: expected config.json and model.safetensors there" >&2; exit 2; }
  taskmodel=$(cd "$taskmodel" && pwd)
fi
[[ -x $shared/perf/peer.sh ]] || { echo "bench-vs-peer: $shared/perf/peer.sh not found (set WORKBOOK_SHARED)" >&2; exit 2; }
"$shared/perf/peer.sh" setup >/dev/null
grep -q avx512f /proc/cpuinfo || export PERF_CORETYPE=${PERF_CORETYPE:-Haswell} PERF_ATEN_CAP=${PERF_ATEN_CAP:-avx2}
"$here/workbook" info >/dev/null # builds once, so no build lands inside a timed process
dll=$(ls "$here"/src/Workbook.Cli/bin/Release/net*/workbook.dll | head -1)
raw=$(mktemp); trap 'rm -f "$raw"' EXIT
# one JSON object per line: {"case", "side", "value"} (GFLOP/s or tokens/s)
wb() { # side case args...
  local side=$1 case=$2; shift 2
  local mklenv=(-u WORKBOOK_MKL_VENDOR_FIX); [[ $side == wboff ]] && mklenv=(WORKBOOK_MKL_VENDOR_FIX=0)
  local v; v=$(env "${mklenv[@]}" ${wbthreads:+OMP_NUM_THREADS=$wbthreads} dotnet "$dll" bench "$@" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); k=sys.argv[1]; print(d[k])' "$key")
  echo "{\"case\": \"$case\", \"side\": \"$side\", \"value\": $v}" >> "$raw"
}
peer() { # case args... (PEER_SIDE names the side; default peer)
  local case=$1; shift
  local v; v=$("$shared/perf/peer.sh" "$@" 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$pkey")
  echo "{\"case\": \"$case\", \"side\": \"${PEER_SIDE:-peer}\", \"value\": $v}" >> "$raw"
}
peer_attns() { # case args...: the peer with its manual attention (side peer, the workbook's) and SDPA (peer_sdpa)
  PEER_SIDE=peer peer "$@" --attn manual
  PEER_SIDE=peer_sdpa peer "$@" --attn sdpa
}
sides="wb"; [[ $mkloff == 1 ]] && sides="wb wboff"
for r in $(seq "$rounds"); do
  for c in ${cases//,/ }; do
    case $c in
      gemm) key=gemm_peak_gflops pkey=gflops_median
        for s in $sides; do wb "$s" gemm_f32 gemm --dtype f32; done
        peer gemm_f32 gemm --sizes 2048 --dtypes f32 --warmup 3 --runs 15 ;;
      train) key=train_tokens_per_second pkey=tokens_per_s_median
        for s in $sides; do wb "$s" train_f32 train --preset small --dtype f32; done
        peer train_f32 train --vocab 4096 --mode f32 --warmup 3 --steps 10 ;;
      train16) key=train_tokens_per_second pkey=tokens_per_s_median
        for s in $sides; do wb "$s" train_bf16 train --preset small --dtype bf16; done
        peer train_bf16 train --vocab 4096 --mode bf16 --warmup 3 --steps 10 ;;
      gen8b16) key=generate_tokens_per_second_batch8 pkey=tokens_per_s_e2e_median
        for s in $sides; do wb "$s" gen_b8_bf16 generate --preset small --vocab 151936 --dtype bf16 --gen-batch 8; done
        peer gen_b8_bf16 gen --vocab 151936 --mode bf16 --batch 8 --warmup 2 --runs 3 ;;
      task-train) key=train_tokens_per_second pkey=tokens_per_s_median
        for s in $sides; do wbthreads=1 wb "$s" task_train_f32 train --model "$taskmodel" --batch 32 --seq 72 \
          --steps 100 --warmup 10; done
        peer_attns task_train_f32 train --weights "$taskmodel" --batch 32 --seq 72 --mode f32 --threads 1 \
          --steps 100 --warmup 10 ;;
      task-gen) key=generate_tokens_per_second_batch64 pkey=tokens_per_s_e2e_median
        for s in $sides; do wbthreads=1 wb "$s" task_gen_b64_f32 generate --model "$taskmodel" --gen-batch 64; done
        peer_attns task_gen_b64_f32 gen --weights "$taskmodel" --batch 64 --mode f32 --threads 1 --warmup 2 \
          --runs 3 ;;
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
       "generate V151936 prompt 32 + 128 new greedy e2e tokens/s (f32, or bf16 where the case says); "
       "task_*: the main job's model (config of --task-model) on one thread, train B32xT72 tokens/s, generate B64 "
       "prompt 32 + 128 new greedy e2e tokens/s; medians of alternating processes",
       "rounds": rounds, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "loadavg_end": os.getloadavg()[0], "cases": {}}
for case in dict.fromkeys(r["case"] for r in rows):
    by = {}
    for r in rows:
        if r["case"] == case:
            by.setdefault(r["side"], []).append(r["value"])
    c = {s: {"median": statistics.median(v), "runs": v} for s, v in by.items()}
    for s in ("wb", "wboff"):
        for p in ("peer", "peer_sdpa"):
            if s in c and p in c:
                c[f"{s}_over_{p}"] = c[s]["median"] / c[p]["median"]
    res["cases"][case] = c
text = json.dumps(res, indent=1)
if out == "/dev/stdout":
    print(text)
else:
    tmp = out + ".tmp"
    open(tmp, "w").write(text + "\n"); os.replace(tmp, out)
    print(f"wrote {out}", file=sys.stderr)
PY
