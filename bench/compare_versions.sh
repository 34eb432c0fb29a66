#!/usr/bin/env bash
# Run the benchmarks of an earlier commit and of the working tree in turns, in one run, so
# that both meet the same machine (its speed drifts by a third between runs).
#
#   bash bench/compare_versions.sh 30d8a68          # import 1M, /kpi at 1M, alerts, Slack
#
# The earlier commit is exported into a temporary folder; the 1M /kpi database is built
# once by the working tree and shared (the schema of the main database is the same).
set -euo pipefail
old_rev=${1:?usage: bash bench/compare_versions.sh OLD_COMMIT}
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python"
old=$(mktemp -d /tmp/kpibot-old-XXXX)
trap 'rm -rf "$old"' EXIT
git -C "$here" archive "$old_rev" | tar -x -C "$old"
mkdir -p "$old/bench/out"
cp "$here/bench/bench_alerts.py" "$old/bench/"     # the same rules for both

run() {   # run VERSION ARGS...: one bench script of one version
  local v=$1; shift
  local root=$here; [ "$v" = old ] && root=$old
  echo "=== $v: $*"
  (cd "$root" && "$py" "$@" 2>&1 | tail -12)
}

for i in 1 2; do
  run old bench/bench_import.py --sizes 1000000 --repeat 1
  run new bench/bench_import.py --sizes 1000000 --repeat 1
done
(cd "$here" && "$py" bench/bench_kpi.py --sizes 1000000 --repeat 1 > /dev/null)
cp "$here/bench/out/kpi-1000000.db" "$here/bench/out/.kpibot-hash-key" "$old/bench/out/"
for v in old new old new; do
  run $v bench/bench_kpi.py --sizes 1000000 --repeat 15
  run $v bench/bench_alerts.py
done
for v in old new; do
  run $v bench/bench_slack.py --repeat 20
done
