#!/usr/bin/env bash
# The evaluation sandbox needs bubblewrap. Install it when we can (root on Debian/Ubuntu), else explain.
command -v bwrap >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "skybench: installing bubblewrap for the evaluation sandbox"
  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }) \
    && exit 0
fi
echo "skybench: bubblewrap (bwrap) is missing; install it (e.g. 'sudo apt-get install bubblewrap')." \
     "Submissions cannot be evaluated without it." >&2
exit 1
