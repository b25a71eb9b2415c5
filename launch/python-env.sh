#!/usr/bin/env bash
# Prints the python of a virtual environment holding the pinned PyPI packages of
# launch/requirements-pypi.txt over Debian's python3 (--system-site-packages: torch,
# numpy, h5py come from Debian). The environment is made once per version of that file,
# under ${MOE_PYENV_DIR:-~/.cache/moe}/venv-<hash>, and reused; tests call this script,
# and a lock makes concurrent callers wait for one creation. Needs network the first time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req=$root/launch/requirements-pypi.txt
hash=$(sha256sum "$req" | cut -c1-12)
base=${MOE_PYENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe}
env=$base/venv-$hash
mkdir -p "$base"
exec 9>"$env.lock"
flock 9
if [[ ! -f $env/.complete ]]; then
  echo "python-env: creating $env" >&2
  rm -rf "$env"
  /usr/bin/python3 -m venv --system-site-packages "$env"
  "$env/bin/pip" install --disable-pip-version-check --no-input -q -r "$req" >&2
  touch "$env/.complete"
fi
echo "$env/bin/python"
