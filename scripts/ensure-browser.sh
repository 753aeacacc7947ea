#!/usr/bin/env bash
# The challenge server's browser test drives Debian's headless `chromium` through Playwright for Python
# (executable_path=/usr/bin/chromium; Playwright's own browser download is never used). Install it when we can
# (root on Debian/Ubuntu); without it the browser test is skipped with a reason, so this never fails setup.
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "skybench: installing chromium for the challenge server's browser test"
  (apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null 2>&1; }) && [ -x /usr/bin/chromium ] && exit 0
fi
echo "skybench: /usr/bin/chromium is not installed; the server's browser test will be skipped" \
     "(install Debian's 'chromium' package to run it)" >&2
exit 0
