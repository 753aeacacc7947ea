#!/usr/bin/env bash
# Fetch the real-data release (data.dvc) from the default DVC remote, or say in one line why not.
# Fetched into DVC's cache first, so that a failed fetch (remote down, a hash in data.dvc the remote lacks) leaves
# data/ as it was: `dvc pull` removes it when it cannot check out. Then data/ is checked against MANIFEST.sha256:
# DVC does not re-hash what a remote sends.
remote=$(dvc remote default 2>/dev/null)
first_error() { grep -m1 -iE 'error|missing|md5' <<<"$1" | tr -d '\r' | cut -c1-160; }
out=$(dvc fetch data.dvc 2>&1)
code=$?
if missing=$(grep -m1 -o 'md5: [0-9a-f.dir]*' <<<"$out"); then  # dvc fetch exits 0 when the remote lacks it
  out="ERROR: the remote ($(dvc config "remote.$remote.url" 2>/dev/null)) does not hold what data.dvc names ($missing)"
  code=1
fi
if [ "$code" != 0 ]; then
  if [ -z "$(ls -A data 2>/dev/null)" ]; then
    echo "skybench: could not fetch the real data from DVC remote '$remote' ($(first_error "$out")); going on without it"
    # the pipeline then writes empty real sets (the import stages depend on these folders)
    mkdir -p data/lenses_hst data/galaxies/hst_stamps data/galaxies/hst_fields data/galaxies/kids_viking_field
  else
    echo "skybench: could not fetch the real data from DVC remote '$remote' ($(first_error "$out")); data/ is left as it was"
  fi
  exit 0
fi
if ! out=$(dvc checkout data.dvc 2>&1); then
  echo "skybench: fetched the real data but could not check it out into data/ ($(first_error "$out"))" >&2
  exit 1
fi
if [ -f data/MANIFEST.sha256 ] && ! bad=$(cd data && sha256sum --quiet -c MANIFEST.sha256 2>&1); then
  echo "skybench: real data from DVC remote '$remote' does not match data/MANIFEST.sha256 ($(head -1 <<<"$bad" | cut -c1-160)); the remote holds a corrupt copy" >&2
  exit 1
fi
echo "skybench: real data in data/ is up to date (DVC remote '$remote')"
