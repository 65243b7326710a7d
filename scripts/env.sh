#!/usr/bin/env bash
# Ensure the Python 3.10 environment exists and print its interpreter path.
#
# The environment lives outside the clone (default ~/.cache/neurodeploy/venv-<hash>),
# keyed by a hash of requirements.lock (the exact pins), so fresh clones reuse it
# while the pins match and rebuild it when they change. Override with NEURODEPLOY_VENV.
# --relock: resolve pyproject's ranges anew and rewrite requirements.lock.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

find_python310() {
    local c
    for c in "${NEURODEPLOY_PYTHON:-}" python3.10 \
             "$HOME"/.pyenv/versions/3.10*/bin/python3.10 \
             /usr/local/bin/python3.10 /usr/bin/python3.10; do
        [ -n "$c" ] || continue
        if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
            command -v "$c" 2>/dev/null || echo "$c"
            return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        c="$(PYENV_VERSION="$(pyenv versions --bare | grep '^3\.10' | tail -n1)" pyenv which python3.10 2>/dev/null || true)"
        [ -n "$c" ] && { echo "$c"; return 0; }
    fi
    echo "neurodeploy: Python 3.10 is required (lava-nc 0.10.0 supports only 3.10) and none was found." >&2
    echo "  Install it (e.g. 'pyenv install 3.10.13') or set NEURODEPLOY_PYTHON=/path/to/python3.10." >&2
    return 1
}

# lava-dl's netx reads our HDF5 exports in the tests. lava-dl 0.6.0 pins torch 2.3,
# so it is installed without its dependencies (netx needs none beyond the lock
# but opencv; <4.11 keeps numpy < 2). torchattacks (APGD-CE) asks for torchvision,
# which it never imports and which breaks beside this torch: also without deps.
extras=(lava-dl==0.6.0 opencv-python-headless==4.10.0.84 torchattacks==3.5.1)
key="$( { cat requirements.lock; echo "${extras[@]}"; } | sha256sum | cut -c1-12)"
venv="${NEURODEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/neurodeploy/venv-$key}"
mkdir -p "$(dirname "$venv")"

if [ "${1:-}" = "--relock" ]; then
    py="$(find_python310)"
    tmp="$(mktemp -d)"
    "$py" -m venv "$tmp/venv"
    "$tmp/venv/bin/python" -m pip install -q --upgrade pip >&2
    "$tmp/venv/bin/python" -m pip install -q ".[test]" >&2
    { sed -n '1,2p' requirements.lock; "$tmp/venv/bin/python" -m pip freeze --exclude neurodeploy; } > requirements.lock.new
    mv requirements.lock.new requirements.lock
    rm -rf "$tmp"
    echo "requirements.lock rewritten" >&2
    exit 0
fi

# One builder at a time; a marker file says the build finished, so a half-built
# environment (interrupted install) is thrown away and rebuilt.
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.neurodeploy-complete" ]; then
    py="$(find_python310)"
    echo "neurodeploy: creating the Python 3.10 environment in $venv (first run: a few minutes)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${extras[@]}" >&2
    touch "$venv/.neurodeploy-complete"
fi
# The package itself is installed editable from this clone (cheap), so the
# `neurodeploy` console script exists; re-pointed when another clone uses the env
# or pyproject.toml (entry points, metadata) changes.
src="$repo $(sha256sum pyproject.toml | cut -c1-12)"
if [ "$(cat "$venv/.neurodeploy-src" 2>/dev/null || true)" != "$src" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$repo" >&2
    echo "$src" > "$venv/.neurodeploy-src"
fi
flock -u 9
echo "$venv/bin/python"
