#!/usr/bin/env bash
# The web UI in firefox-esr (over WebDriver BiDi): test_ns_webui.sh's
# focused pass, the full one being Chromium's. Skips without firefox-esr,
# fails so under CI=true.
E2E_NAME=test_ns_webui_firefox WEBUI_BROWSER=firefox exec bash "$(dirname "$0")/test_ns_webui.sh" "$@"
