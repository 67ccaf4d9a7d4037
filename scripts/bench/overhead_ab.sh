#!/usr/bin/env bash
# Before/after of the overhead command: an older commit and this tree in alternating turns, on digits.
#
#   bash scripts/bench/overhead_ab.sh 2cb48c2 4 docs/results/bench_overhead_ab 15
#
# Each turn runs `python -m scripts.bench overhead --dataset digits --repeats 2 --epochs EPOCHS` (default 15:
# digits epochs are ~25 ms, and medians of 14 of them vary far less than of 4) first in a temporary worktree of
# the older commit, then here, so a machine that speeds up or slows down moves both; a table of the turns'
# medians (B/A, D/A) and the summary are printed and every turn's JSON is kept in OUT. The older commit's own
# overhead benchmark runs there (scripts/bench_overhead.py before scripts/bench/; it may lack newer arms such
# as L).
set -euo pipefail
old=${1:?older commit}; turns=${2:-4}; out=${3:-bench_overhead_ab}; epochs=${4:-15}
here=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
tree=$(mktemp -d)/old
git -C "$here" worktree add --detach "$tree" "$old" >/dev/null
trap 'git -C "$here" worktree remove --force "$tree"' EXIT
old_overhead=(scripts/bench_overhead.py)
if [ -f "$tree/scripts/bench/__main__.py" ]; then old_overhead=(-m scripts.bench overhead); fi
mkdir -p "$out"
out=$(realpath "$out")
for turn in $(seq 1 "$turns"); do
  (cd "$tree" && "$python" "${old_overhead[@]}" --dataset digits --repeats 2 --epochs "$epochs" --out "$out/old_$turn.json" >/dev/null 2>&1)
  (cd "$here" && "$python" -m scripts.bench overhead --dataset digits --repeats 2 --epochs "$epochs" --out "$out/new_$turn.json" >/dev/null 2>&1)
  echo "turn $turn done"
done
"$python" - "$out" "$old" "$(git -C "$here" rev-parse --short HEAD)" "$turns" <<'PY'
import json, statistics, sys
from pathlib import Path
out, old, new, turns = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = []
for turn in range(1, turns + 1):
    pair = {arm: json.loads((out / f"{arm}_{turn}.json").read_text())["digits"]["summary"] for arm in ("old", "new")}
    rows.append({f"{arm} {ratio}": pair[arm][ratio]["median"] for arm in ("old", "new") for ratio in ("B/A", "D/A")})
print(f"| turn | {old} B/A | {new} B/A | {old} D/A | {new} D/A |\n|---:|---:|---:|---:|---:|")
for turn, row in enumerate(rows, 1):
    print(f"| {turn} | {row['old B/A']:.3f} | {row['new B/A']:.3f} | {row['old D/A']:.3f} | {row['new D/A']:.3f} |")
summary = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
summary.update({f"{ratio} change": statistics.median(row[f"new {ratio}"] - row[f"old {ratio}"] for row in rows)
                for ratio in ("B/A", "D/A")})
print("medians:", {key: round(value, 3) for key, value in summary.items()})
(out / "summary.json").write_text(json.dumps({"old": old, "new": new, "turns": rows, "summary": summary}, indent=2) + "\n")
PY
