#!/usr/bin/env bash
# Run the test suite (creates the Python 3.10 environment first if it is missing).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the long sweeps.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$("$repo/scripts/env.sh")"
cd "$repo"
# idle OpenMP threads spin otherwise (2-core machines); the CLI sets the same
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
set +e
"$py" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "neurodeploy: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$rc"
