#!/usr/bin/env bash
# Build the Go test peers of the kube and conformance tiers into tests/kube/peers/bin/.
#
# Idempotent: a binary that exists is not rebuilt (delete it to force a rebuild).
# Uses the default Go module and build caches, so a second run costs seconds. Builds with
# -mod=mod (go.sum may gain lines for the build's own needs, never versions) and -buildvcs=false.
# The modules' go.mod/go.sum are the pinning; nothing here picks a version.
# Cold build (empty caches, 2 cores): about 14 minutes; see tests/kube/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/bin"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

die() { echo "build.sh: $*" >&2; exit 1; }

# Endpoints and EndpointSlice validation refuses loopback addresses, and in this tier every
# pod (and the autoscaler, which publishes its own address in an EndpointSlice) lives on
# 127.0.0.0/8. So kube-apiserver is built from a copy of k8s.io/kubernetes (the pinned
# version, from the module cache) with that one check removed, through a generated
# `-modfile` that adds a `replace` to the copy; go.mod/go.sum in kube/ stay the pinning.
# (`go build -overlay` would be simpler but refuses files in the module cache.)
# Prints the generated modfile's path.
patched_kubernetes_modfile() {
  local moddir="$1" orig copy gen src
  (cd "$moddir" && go mod download k8s.io/kubernetes) >&2 || die "go mod download k8s.io/kubernetes failed"
  orig="$(cd "$moddir" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)" || die "cannot locate k8s.io/kubernetes"
  [[ -n $orig && -d $orig ]] || die "k8s.io/kubernetes is not in the module cache (go mod download failed?)"
  copy="$bin/.kubernetes-src"
  gen="$bin/.kube-modfile"
  rm -rf "$copy" "$gen"
  mkdir -p "$copy" "$gen"
  cp -r "$orig/go.mod" "$orig/go.sum" "$orig/LICENSE" "$orig/cmd" "$orig/pkg" "$orig/plugin" "$orig/third_party" "$copy/"
  chmod -R u+w "$copy"
  src="$copy/pkg/apis/core/validation/validation.go"
  sed -i '/^\tif ip.IsLoopback() {$/,/^\t}$/d' "$src"
  [[ $(( $(wc -l <"$orig/pkg/apis/core/validation/validation.go") - $(wc -l <"$src") )) -eq 3 ]] &&
    ! grep -q "loopback range" "$src" ||
    die "the loopback check in $src changed shape; update patched_kubernetes_modfile"
  cp "$moddir/go.sum" "$gen/go.sum"
  { cat "$moddir/go.mod"; echo; echo "replace k8s.io/kubernetes => $copy"; } >"$gen/go.mod"
  echo "$gen/go.mod"
}

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
  "h2spec          h2spec         github.com/summerwind/h2spec/cmd/h2spec"
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
    modfile="$(patched_kubernetes_modfile "$here/$dir")"
    extra=(-modfile="$modfile")
  else
    extra=()
  fi
  if ! (cd "$here/$dir" && go build -mod=mod -buildvcs=false -trimpath -ldflags="$ldflags" "${extra[@]}" -o "$out.tmp" "$pkg") >"$log" 2>&1; then
    rm -f "$out.tmp"
    die "$name ($pkg in $dir/) failed to build after $((SECONDS - start))s: $(grep -m1 -v '^#' "$log" || echo 'no output') (full log: $log)"
  fi
  mv "$out.tmp" "$out"
  rm -f "$log"
  echo "build.sh: $name built in $((SECONDS - start))s"
done
echo "build.sh: all peers ready in $((SECONDS - total_start))s ($bin)"
