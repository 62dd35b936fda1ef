#!/usr/bin/env bash
# The README's first command: the local stack, then two daily cycles on simulated traffic with
# drifting bots.
#   1. seven days of history (as if archived earlier) -> `slidr retrain`: the first trained
#      network replaces the day-zero heuristic, if it passes the guardrails;
#   2. three live days into Kafka -> a worker scores them with the serving version ->
#      `slidr archive` -> `slidr retrain` on the newest complete day;
# each cycle prints how its candidate and the serving model did on its later held-out day.
set -euo pipefail
cd "$(dirname "$0")/.."
slidr=.venv/bin/slidr
clicks_per_day=${SLIDR_DEMO_CLICKS_PER_DAY:-30000}
run_dir=$(mktemp -d -t slidr-demo-XXXX)
archive=$run_dir/archive

# Private topics, consumer group and Redis namespace per run: reruns never mix their traffic.
tag=demo$(date +%s)
export SLIDR_TOPICS__CLICKS=$tag.clicks SLIDR_TOPICS__PURCHASES=$tag.purchases \
  SLIDR_TOPICS__DECISIONS=$tag.decisions SLIDR_TOPICS__REPLAYED_DECISIONS=$tag.replayed \
  SLIDR_TOPICS__DEAD_LETTERS=$tag.dead-letters SLIDR_TOPICS__TRUTH=$tag.truth \
  SLIDR_WORKER__CONSUMER_GROUP=$tag-worker SLIDR_REDIS__KEY_PREFIX="slidr-$tag:" \
  SLIDR_ARCHIVE__FLUSH_EVERY_S=5
# At demo volume a night hour holds a handful of humans beside the simulated bot bursts, so its
# share of labelled humans is ~0 by chance; the hourly purchase check still catches lost labels.
export SLIDR_GUARDRAILS__MIN_HUMAN_DENSITY=${SLIDR_GUARDRAILS__MIN_HUMAN_DENSITY:-0}

$slidr stack up   # also creates this run's topics
day() { date -u -d "$(date -u +%F) $1 days" +%F; }
# A new simulated world each run; SLIDR_DEMO_SEED=N repeats one (the seed is printed).
seed=${SLIDR_DEMO_SEED:-$(( $(date +%s) % 100000 ))}
say() { echo "[demo] $*" >&2; }
say "seed $seed (SLIDR_DEMO_SEED=$seed make demo runs this world again)"

# A day is complete once a full attribution window (24 h) of purchases after it is archived:
# history ending at day -3 makes day -6 the newest complete one; live days up to today, day -3.
say "history: 7 days from $(day -10), $clicks_per_day clicks/day -> $archive"
$slidr simulate --days 7 --start "$(day -10)T00:00:00Z" --clicks-per-day "$clicks_per_day" \
  --seed "$seed" --to parquet --out "$archive" --no-progress >/dev/null

say "daily cycle 1: day $(day -6)"
$slidr retrain --day "$(day -6)" --archive "$archive" --report-dir "$run_dir/cycle-1" || [ $? -eq 3 ]
$slidr models

say "live: 3 days from $(day -3) into Kafka; a worker scores them (logs: $run_dir/worker.log)"
# The same world carried on from the history (--origin): without it the live days would replay
# the history's first three days, clicks the network trained on.
$slidr simulate --days 3 --start "$(day -3)T00:00:00Z" --origin "$(day -10)T00:00:00Z" \
  --clicks-per-day "$clicks_per_day" --seed "$seed" --to kafka --truth-out "$run_dir/live" \
  --no-progress >/dev/null
cp -r "$run_dir/live/truth/." "$archive/truth/"
# The monitor beside the worker, with the intraday re-solve on: it joins the purchases with the
# live decisions and re-solves the serving version's thresholds when the realised FPR leaves its
# band; the worker follows each new record without restart. It keeps the clicks' time, so three
# days decided in minutes are judged hour by hour. Its rollback rules judge a minute of the
# monitor's clock, here most of a day of clicks: they only alert in this replay.
# SLIDR_INTRADAY__ENABLED=false runs it without the re-solve.
SLIDR_INTRADAY__ENABLED=${SLIDR_INTRADAY__ENABLED:-true} SLIDR_MONITOR__AUTO_ROLLBACK=false \
  SLIDR_MONITOR__CONSUMER_GROUP=$tag-monitor SLIDR_MONITOR__FROM_BEGINNING=true \
  $slidr monitor >"$run_dir/monitor.log" 2>&1 &
monitor=$!
$slidr worker >"$run_dir/worker.log" 2>&1 &
worker=$!
trap 'kill $worker $monitor 2>/dev/null || true; wait $worker $monitor 2>/dev/null || true' EXIT
want=$(.venv/bin/python -c "import pyarrow.dataset as ds; print(ds.dataset('$run_dir/live/truth', partitioning='hive').count_rows())")
for _ in $(seq 1 600); do
  sleep 3
  kill -0 $worker 2>/dev/null || { tail -20 "$run_dir/worker.log"; exit 1; }
  # Model and fail-open decisions, plus GIVT ones (counted apart).
  decided=$(curl -sf http://127.0.0.1:19100/metrics |
    awk '/^slidr_(givt_)?clicks_total\{/ {s+=$2} END {printf "%d", s}') || continue
  say "decided $decided of $want clicks"
  [ "$decided" -ge "$want" ] && break
done
kill $worker $monitor 2>/dev/null || true
wait $worker $monitor 2>/dev/null || true
resolves=$(grep -c "intraday re-solve of model" "$run_dir/monitor.log" || true)
say "intraday re-solves by the monitor: $resolves (logs: $run_dir/monitor.log)"
sed -n 's/.*\(intraday re-solve of model .*\); window FPR.*/  \1/p' "$run_dir/monitor.log" >&2
$slidr decisions --truth "$run_dir/live/truth"

say "archiving clicks, purchases and decisions"
$slidr archive --root "$archive" --until-idle 5

say "daily cycle 2: day $(day -3) (served live by the version serving above: cycle 1's if promoted, else day zero)"
$slidr retrain --day "$(day -3)" --archive "$archive" --report-dir "$run_dir/cycle-2" || [ $? -eq 3 ]
$slidr models
say "reports: $run_dir/cycle-1, $run_dir/cycle-2 (cycle.json, train/, calibration/, guardrails)"
for cycle in 1 2; do
  page=$run_dir/cycle-$cycle/report.html
  if [ -f "$page" ]; then say "cycle $cycle on one page, open it in a browser: file://$page"; fi
done
say "the stack keeps running; stop it with: $slidr stack down"
