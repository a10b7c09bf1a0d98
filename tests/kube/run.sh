#!/usr/bin/env bash
# The kube tier: build the Go peers if missing, then run `pytest -m kube tests/kube` in a
# network namespace of its own when this user may make one (root with unshare), so the fixed
# ports of Knative's components (the autoscaler's :8080, Go queue-proxies' :8012/:9090) cannot
# collide with anything else on the machine. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tests/kube/peers/build.sh
pytest=(.venv/bin/pytest -p no:cacheprovider -m kube tests/kube "$@")
if [[ "$(id -u)" == 0 ]] && command -v unshare >/dev/null && command -v ip >/dev/null \
  && unshare --net true 2>/dev/null; then
  exec unshare --net --fork sh -c 'ip link set lo up && exec "$@"' sh "${pytest[@]}"
fi
echo "run.sh: no private network namespace here; running on the host's loopback" >&2
exec "${pytest[@]}"
