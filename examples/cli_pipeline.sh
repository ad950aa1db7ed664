#!/usr/bin/env bash
# The streamlstm command line in shell pipelines: learn per-sensor temperatures from a CSV
# stream, save the model, describe it, predict new data without learning, forecast a live
# feed with checkpoints (stopped and resumed), and see what happens to bad rows.
#
#   bash examples/cli_pipeline.sh            (needs `pip install -e '.[cli]'`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
if command -v streamlstm >/dev/null 2>&1; then SL=(streamlstm); else SL=("$PY" -m streamlstm.adapters.cli); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
gen() { "$PY" "$here/make_sensor_csv.py" "$@"; }
say() { printf '\n== %s\n' "$*"; }

say "1. data: 4 sensors x 1500 hours, interleaved, 2% of the temperatures missing"
gen --rows 1500 --sensors 4 > sensors.csv
head -3 sensors.csv

say "2. regression from a pipe: temp from humidity and pressure, one state per sensor, shared weights"
cat sensors.csv | "${SL[@]}" run --target temp --key sensor_id --time time --save model.slstm > preds.csv
head -4 preds.csv
# the output is CSV like any other: the MAE of the last 1000 rows with awk
tail -n 1000 preds.csv | awk -F, '$5 != "" { e = $5 < 0 ? -$5 : $5; s += e; n++ } END { printf "MAE of the last %d rows: %.3f\n", n, s / n }'

say "3. what was saved"
"${SL[@]}" info model.slstm

say "4. inference only, on the next 24 hours (no temp column), JSON lines"
gen --rows 24 --sensors 4 --start 1500 --seed 1 --no-temp | "${SL[@]}" run --load model.slstm --no-learn --format jsonl --digits 4 -q | head -4

say "5. forecast 3 hours ahead from a live feed, checkpointing; stopped by SIGTERM, then resumed"
gen --rows 400 --sensors 2 --seed 2 > feed.csv
# the same rows as a slow live feed: every row is answered as soon as it is written (like behind `tail -f`)
gen --rows 400 --sensors 2 --seed 2 --delay 0.005 | "${SL[@]}" run --target temp --key sensor_id --time time \
    --ahead 3 --checkpoint state.slstm --checkpoint-every 100 -q > forecast1.csv &
pid=$!   # the CLI (last command of the pipeline)
# Stop it once it has answered 150 rows: on a cold numba cache the first run compiles for
# 20-30 s first, and a stop before the job has started would leave nothing to resume from.
for _ in $(seq 600); do
    [ "$(wc -l < forecast1.csv)" -gt 150 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
done
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" && code=0 || code=$?
echo "the CLI stopped with exit code $code (143 = 128 + SIGTERM), after a final checkpoint"
echo "rows answered before the stop: $(( $(wc -l < forecast1.csv) - 1 ))"
"${SL[@]}" info state.slstm | grep consumed
# resume on the same input: the consumed rows are skipped, the rest continues exactly
"${SL[@]}" run feed.csv --target temp --key sensor_id --time time --ahead 3 \
    --checkpoint state.slstm --resume > forecast2.csv
echo "rows answered after resuming: $(wc -l < forecast2.csv)"
tail -n 2 forecast2.csv

say "6. bad rows: the default stops at the first one (exit 2), --on-bad-row warn skips and counts them"
# (a missing cell such as NA or an empty one is not a bad row: see --missing in docs/cli.md)
gen --rows 50 --sensors 2 --bad 2 --seed 3 > bad.csv
"${SL[@]}" run bad.csv --target temp --key sensor_id --time time --features humidity,pressure > /dev/null || echo "exit code $?"
"${SL[@]}" run bad.csv --target temp --key sensor_id --time time --features humidity,pressure --on-bad-row warn > /dev/null

say "7. River's WaterFlow series (needs river)"
"${SL[@]}" demo || true
