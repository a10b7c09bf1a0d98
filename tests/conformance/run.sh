#!/usr/bin/env bash
# The differential conformance suite (tests/conformance/) in a private network namespace.
#
# Knative's Go queue-proxy binds fixed ports on every address (8022, 9090, 9091, 8012 here),
# and other sessions on the machine run Go queue-proxies too: `unshare --net` gives this run
# its own loopback, so nothing outside can collide with it. Builds the Go peers first if
# they are missing (tests/kube/peers/build.sh is idempotent). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
command -v unshare >/dev/null || { echo "run.sh: unshare not found (apt install util-linux)" >&2; exit 1; }
command -v ip >/dev/null || { echo "run.sh: ip not found (apt install iproute2)" >&2; exit 1; }
if [[ ! -x tests/kube/peers/bin/queue || ! -x tests/kube/peers/bin/queue-v1.10 || ! -x tests/kube/peers/bin/h2spec ]]; then
  tests/kube/peers/build.sh
fi
CONFORMANCE_HOST_NETNS="$(stat -L -c %i /proc/self/ns/net)"
export CONFORMANCE_HOST_NETNS
# A private mount namespace too: Go reads its TLS certificate from the fixed directory
# /var/lib/knative/certs, so /var/lib is a fresh tmpfs for this run only (the TLS cases write
# a certificate there and remove it again).
CONFORMANCE_PRIVATE_VAR_LIB=1
export CONFORMANCE_PRIVATE_VAR_LIB
exec unshare --net --mount --fork sh -c \
  'ip link set lo up && mount -t tmpfs tmpfs /var/lib && exec "$0" "$@"' \
  .venv/bin/pytest tests/conformance -m conformance -o markers=conformance -p no:cacheprovider "$@"
