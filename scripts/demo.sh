#!/usr/bin/env bash
# The README's first command: the local stack, a simulated day of clicks into Kafka, one worker
# scoring them, and a summary of the decisions (with the simulator's ground truth beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
slidr=.venv/bin/slidr
clicks_per_day=${SLIDR_DEMO_CLICKS_PER_DAY:-50000}
run_dir=$(mktemp -d -t slidr-demo-XXXX)

$slidr stack up
# A fresh seed per run: click ids derive from it, so reruns never collide on the topics.
seed=$(( $(date +%s) % 100000 ))
$slidr simulate --days 1 --clicks-per-day "$clicks_per_day" --seed "$seed" --to kafka \
  --truth-out "$run_dir/truth" --no-progress

echo "[demo] starting a worker (logs: $run_dir/worker.log)" >&2
$slidr worker >"$run_dir/worker.log" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null || true; wait $worker 2>/dev/null || true' EXIT

# Wait until the worker has decided every simulated click (its Prometheus counter).
want=$(.venv/bin/python -c "import pyarrow.dataset as ds; print(ds.dataset('$run_dir/truth/truth', partitioning='hive').count_rows())")
for _ in $(seq 1 600); do
  sleep 2
  kill -0 $worker 2>/dev/null || { tail -20 "$run_dir/worker.log"; exit 1; }
  decided=$(curl -sf http://127.0.0.1:19100/metrics | awk '/^slidr_clicks_total\{/ {s+=$2} END {printf "%d", s}') || continue
  echo "[demo] decided $decided of $want clicks" >&2
  [ "$decided" -ge "$want" ] && break
done

$slidr topics
$slidr decisions --truth "$run_dir/truth/truth"
echo "[demo] the stack keeps running; stop it with: $slidr stack down" >&2
