#!/usr/bin/env bash
# The demo's browser test in one command (docs/demo.md): installs headless Chromium from Debian (apt: chromium and
# chromium-driver), the demo extra's packages and Playwright (pip; Playwright drives that system Chromium and downloads
# no browser of its own), then runs tests/test_demo_browser.py on real data ($ADV_MIDIBERT_DATA, default
# ../shared/data). Screenshots go to $ADV_MIDIBERT_ARTIFACTS (default build/browser-test). Extra arguments go to
# pytest. Set PYTHON to choose the interpreter; an installed adversarial-midibert is used as it is, never replaced.
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium chromium-driver
fi
if ! "$PYTHON" -c "import adversarial_midibert, datasets, pytest" >/dev/null 2>&1; then
  bash scripts/setup.sh  # the package (editable) with its train and test extras: the test fine-tunes tiny models
fi
"$PYTHON" -c "import configparser, subprocess, sys; c = configparser.ConfigParser(); c.read('setup.cfg'); \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet', \
*c['options.extras_require']['demo'].split(), 'playwright'])"
export ADV_MIDIBERT_BROWSER_TESTS=1 ADV_MIDIBERT_ARTIFACTS=${ADV_MIDIBERT_ARTIFACTS:-$PWD/build/browser-test}
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest -q -rs tests/test_demo_browser.py "$@"
echo "browser test screenshots: $ADV_MIDIBERT_ARTIFACTS"
