#!/usr/bin/env bash
# Create bench/.venv-peers with the peer queues (kept out of the project venv: arq pins
# redis<6 and would downgrade redis 8 -> 5.3.1; bullmq 3.x pins croniter 2.0.x).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
"$py" -m venv "$here/.venv-peers"
"$here/.venv-peers/bin/pip" install -q --upgrade pip
"$here/.venv-peers/bin/pip" install -q rq arq saq 'dramatiq[redis]' huey bullmq hiredis typing_extensions
"$here/.venv-peers/bin/pip" list 2>/dev/null | grep -iE '^(redis|hiredis|rq|arq|saq|dramatiq|huey|bullmq) '
