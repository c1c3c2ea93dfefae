#!/usr/bin/env bash
# Start JupyterLab on lessons/ (what `make lab` runs after the setup). Works as a normal user and as
# root (containers, WSL, cloud VMs), with JupyterLab's news pop-up and update check off.
#   LAB_IP=0.0.0.0 make lab    listen on every interface (a container reached from its host)
# Extra arguments go to `jupyter lab`, e.g. scripts/lab.sh --no-browser --port=8899.
set -euo pipefail
cd "$(dirname "$0")/.."

settings=.venv/share/jupyter/lab/settings
mkdir -p "$settings"
cp scripts/jupyterlab-overrides.json "$settings/overrides.json"

args=(
  --notebook-dir=lessons
  "--ServerApp.ip=${LAB_IP:-127.0.0.1}"
  --LabApp.news_url=None
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate
)
if [ "$(id -u)" = 0 ]; then
  args+=(--allow-root)  # Jupyter refuses root without it; a container's only user is often root
fi
exec .venv/bin/jupyter lab "${args[@]}" "$@"
