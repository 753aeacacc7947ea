#!/usr/bin/env bash
# The evaluation sandbox needs bubblewrap >= 0.8 (--size, --disable-userns, --seccomp) and libseccomp
# (libseccomp.so.2, used through the pyseccomp binding). Install them when we can (root on Debian/Ubuntu),
# else explain.
bwrap_ok() {
  command -v bwrap >/dev/null || return 1
  local help; help=$(bwrap --help 2>&1)
  for opt in --size --disable-userns --seccomp; do
    grep -q -- "$opt" <<<"$help" || return 1
  done
}
seccomp_ok() { ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; }
bwrap_ok && seccomp_ok && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "skybench: installing bubblewrap and libseccomp2 for the evaluation sandbox"
  (apt-get install -y -qq bubblewrap libseccomp2 >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq bubblewrap libseccomp2 >/dev/null; }) \
    && bwrap_ok && seccomp_ok && exit 0
fi
if command -v bwrap >/dev/null && ! bwrap_ok; then
  echo "skybench: $(bwrap --version 2>&1 | head -1) lacks --size, --disable-userns or --seccomp; install" \
       "bubblewrap >= 0.8.0 (Debian 12, Ubuntu 24.04, or build https://github.com/containers/bubblewrap)." >&2
else
  echo "skybench: bubblewrap (bwrap) or libseccomp2 is missing; install them (e.g. 'sudo apt-get install" \
       "bubblewrap libseccomp2'). Submissions cannot be evaluated without them." >&2
fi
exit 1
