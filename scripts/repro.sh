#!/usr/bin/env bash
# `dvc repro` of the whole pipeline; without the real data, of every track that does not need it.
set -euo pipefail
if [ -f data/photoz_sdss_mgs/train.csv ]; then
  exec dvc repro "$@"
fi
echo "skybench: the real SDSS MGS catalogue is not in data/; running every track except photoz-sdss-mgs"
targets=$(python - <<'PY'
import yaml
tracks = yaml.safe_load(open("params.yaml"))["tracks"]  # {task: [track, ...]}
print(" ".join(f"leaderboard-{task}@{t}" for task, ts in tracks.items() for t in ts if t != "photoz-sdss-mgs"))
PY
)
# --allow-missing: calibrate-photoz (locked in dvc.lock) reads the real train split; its git-committed output stays
exec dvc repro --allow-missing "$@" $targets
