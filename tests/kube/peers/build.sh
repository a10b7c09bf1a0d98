#!/usr/bin/env bash
# Build the kube tier's Go test peers into tests/kube/peers/bin/.
#
# Idempotent: a binary that exists is not rebuilt (delete it to force a rebuild).
# Uses the default Go module and build caches, so a second run costs seconds.
# The modules' go.mod/go.sum are the pinning; nothing here picks a version.
# Cold build on a 2-core machine: see tests/kube/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/bin"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

die() { echo "build.sh: $*" >&2; exit 1; }

command -v go >/dev/null || die "go not found on PATH (Go >= 1.25 is needed to build the kube tier's peers)"
mkdir -p "$bin"

# name  module-dir  package
peers=(
  "etcd            etcd           go.etcd.io/etcd/server/v3"
  "kube-apiserver  kube           k8s.io/kubernetes/cmd/kube-apiserver"
  "controller      knative        ./cmd/controller"
  "autoscaler      knative        knative.dev/serving/cmd/autoscaler"
  "queue           knative        knative.dev/serving/cmd/queue"
  "activator       knative        knative.dev/serving/cmd/activator"
  "queue-v1.10     knative-v1.10  knative.dev/serving/cmd/queue"
)

total_start=$SECONDS
for line in "${peers[@]}"; do
  read -r name dir pkg <<<"$line"
  out="$bin/$name"
  if [[ -x "$out" ]]; then
    echo "build.sh: $name present"
    continue
  fi
  start=$SECONDS
  log="$bin/.$name.log"
  ldflags="-s -w"
  if [[ $name == kube-apiserver ]]; then
    # Built by module path, the binary reports v0.0.0-master; Knative's controller and
    # autoscaler refuse a server older than their minimum, so stamp the real version.
    version="$(cd "$here/$dir" && go list -m -f '{{.Version}}' k8s.io/kubernetes)" ||
      die "cannot read the k8s.io/kubernetes version from $dir/go.mod"
    minor="${version#v1.}"; minor="${minor%%.*}"
    v=k8s.io/component-base/version
    ldflags+=" -X $v.gitVersion=$version -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  fi
  if ! (cd "$here/$dir" && go build -trimpath -ldflags="$ldflags" -o "$out.tmp" "$pkg") >"$log" 2>&1; then
    rm -f "$out.tmp"
    die "$name ($pkg in $dir/) failed to build after $((SECONDS - start))s: $(grep -m1 -v '^#' "$log" || echo 'no output') (full log: $log)"
  fi
  mv "$out.tmp" "$out"
  rm -f "$log"
  echo "build.sh: $name built in $((SECONDS - start))s"
done
echo "build.sh: all peers ready in $((SECONDS - total_start))s ($bin)"
