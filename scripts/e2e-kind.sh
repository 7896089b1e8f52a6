#!/usr/bin/env bash
# End to end on a local kind cluster: everything tests/e2e/test_cluster.py needs, then the test.
#
#   bash scripts/e2e-kind.sh             # set up (or reuse) the cluster, run pytest -m cluster
#   bash scripts/e2e-kind.sh --no-test   # set up only; print how to run the test by hand
#   bash scripts/e2e-kind.sh --down      # delete the cluster
#   bash scripts/e2e-kind.sh -- -x -s    # arguments after -- go to pytest
#
# Steps: a kind cluster (pinned node image) -> Kubeflow Pipelines standalone (pinned,
# platform-agnostic manifests) -> the Seldon Core v1 operator (pinned Helm chart) -> the
# three project images built and loaded into the nodes -> the S3 Secret and ConfigMap in
# the closedloop namespace and in KFP's -> the dev overlay (in-cluster SeaweedFS, the
# SeldonDeployment with its drift sidecar, the retrain trigger) -> a first champion,
# trained, registered and rolled out by the training pipeline on KFP -> the test.
# Re-running reuses what exists. Needs docker, kind, kubectl, helm, git, curl and the
# project's .venv (`make install`). See docs/e2e-kind.md.
#
# Every version is pinned here and can be overridden from the environment.
set -euo pipefail

KIND_VERSION="${KIND_VERSION:-v0.30.0}"
# The node image kind v0.30.0 was released with (Kubernetes 1.34.0), by digest.
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a}"
KFP_VERSION="${KFP_VERSION:-2.17.0}"
SELDON_CHART_VERSION="${SELDON_CHART_VERSION:-1.19.0}"
SELDON_CHART_REPO="${SELDON_CHART_REPO:-https://storage.googleapis.com/seldon-charts}"

CLUSTER_NAME="${CLUSTER_NAME:-closedloop-e2e}"
# Image names and tag the manifests and the compiled pipelines refer to (closedloop.images).
IMAGE_REGISTRY="${IMAGE_REGISTRY:-ghcr.io/closedloop}"
IMAGE_TAG="${IMAGE_TAG:-0.1.0}"
KFP_LOCAL_PORT="${KFP_LOCAL_PORT:-18888}"
S3_LOCAL_PORT="${S3_LOCAL_PORT:-18333}"
TRAIN_ROWS="${TRAIN_ROWS:-20000}"
TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-3600}"

NAMESPACE=closedloop
KFP_NAMESPACE=kubeflow
SELDON_NAMESPACE=seldon-system
SDEP=closedloop
MODEL_NAME=tabular-classifier
BUCKET=closedloop
REGISTRY_URI="s3://$BUCKET/registry"
REFERENCE_URI="s3://$BUCKET/data/reference.parquet"
# Keys and object names from closedloop.storage.settings (S3_SECRET, S3_SECRET_KEYS,
# S3_SETTINGS_CONFIG_MAP, S3_SETTINGS_KEYS); the endpoint is the dev overlay's store.
S3_SECRET=closedloop-s3-credentials
S3_SETTINGS_CONFIG_MAP=closedloop-s3-settings
S3_ENDPOINT_IN_CLUSTER="http://closedloop-s3.$NAMESPACE.svc.cluster.local:8333"
S3_REGION=us-east-1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK_DIR="$ROOT/build/e2e-kind"
KUBECONFIG_FILE="$WORK_DIR/kubeconfig"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
KFP_ENDPOINT="http://127.0.0.1:$KFP_LOCAL_PORT"

PF_PIDS=()

log() { printf '\n==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

cleanup() {
  local pid
  for pid in ${PF_PIDS[@]+"${PF_PIDS[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is needed: $2"
}

kctl() { "$KUBECTL" "$@"; }

# -- arguments ------------------------------------------------------------------------
MODE=all
PYTEST_EXTRA=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --down) MODE=down ;;
    --no-test) MODE=setup ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      PYTEST_EXTRA=("$@")
      break
      ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation ($KIND_VERSION)"
mkdir -p "$WORK_DIR"

if [ "$MODE" = down ]; then
  log "Deleting kind cluster $CLUSTER_NAME"
  kind delete cluster --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_FILE"
  rm -f "$KUBECONFIG_FILE"
  exit 0
fi

need docker "a running Docker engine (Docker Desktop, colima, or dockerd)"
need helm "https://helm.sh/docs/intro/install/ (Helm 3)"
need git "kubectl fetches the KFP manifests from GitHub with git"
need curl "used to wait for port-forwards"
need make "builds the images (make images) and the environments (make install)"
if command -v kubectl >/dev/null 2>&1; then
  KUBECTL="$(command -v kubectl)"
elif [ -x "$VENV/bin/kubectl" ]; then
  KUBECTL="$VENV/bin/kubectl"
else
  die "kubectl is needed (or run make install: .venv ships one)"
fi
docker info >/dev/null 2>&1 || die "docker is installed but its engine does not answer"
kind_version="$(kind version)"
case "$kind_version" in
  *"$KIND_VERSION "*) ;;
  *) warn "kind $KIND_VERSION is pinned, found '$kind_version'; node image $KIND_NODE_IMAGE is made for $KIND_VERSION" ;;
esac
memory="$(docker info --format '{{.MemTotal}}' 2>/dev/null || echo 0)"
if [ "${memory:-0}" -lt 8000000000 ]; then
  warn "Docker has $((${memory:-0} / 1000000)) MB of memory; KFP, Seldon and the retraining runs want 8 GB or more"
fi
if [ ! -x "$PY" ]; then
  log "Creating the project's environments (make install)"
  make -C "$ROOT" install
fi

# -- helpers --------------------------------------------------------------------------
# port_forward NAMESPACE TARGET LOCAL_PORT REMOTE_PORT [PATH]: background, bounded wait.
port_forward() {
  local ns="$1" target="$2" local_port="$3" remote_port="$4" path="${5:-/}" i
  "$KUBECTL" -n "$ns" port-forward "$target" "$local_port:$remote_port" \
    >"$WORK_DIR/port-forward-$local_port.log" 2>&1 &
  PF_PIDS+=("$!")
  for i in $(seq 1 60); do
    if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$local_port$path"; then
      return 0
    fi
    sleep 1
  done
  die "port-forward to $ns/$target on :$local_port not up after ${i}s; see $WORK_DIR/port-forward-$local_port.log"
}

# retry ATTEMPTS PAUSE COMMAND...: run COMMAND until it succeeds, at most ATTEMPTS times.
retry() {
  local attempts="$1" pause="$2" n=1
  shift 2
  until "$@"; do
    [ "$n" -lt "$attempts" ] || return 1
    n=$((n + 1))
    warn "retrying ($n/$attempts) in ${pause}s: $*"
    sleep "$pause"
  done
}

random_key() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

# -- 1. cluster -----------------------------------------------------------------------
log "kind cluster $CLUSTER_NAME ($KIND_NODE_IMAGE)"
clusters="$(kind get clusters 2>/dev/null || true)"
if printf '%s\n' "$clusters" | grep -qx "$CLUSTER_NAME"; then
  echo "exists; reusing it"
  kind export kubeconfig --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_FILE"
else
  kind create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --kubeconfig "$KUBECONFIG_FILE" --wait 5m
fi
export KUBECONFIG="$KUBECONFIG_FILE"
kctl cluster-info

# -- 2. Kubeflow Pipelines standalone -------------------------------------------------
log "Kubeflow Pipelines $KFP_VERSION (standalone, platform-agnostic)"
retry 3 10 kctl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kctl wait --for condition=established --timeout=60s crd/applications.app.k8s.io
retry 3 10 kctl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
# What a run needs. metadata-writer (lineage view only) is left out: at 2.17.0 its image
# is published for amd64 alone, so it never becomes ready on arm64 hosts.
kctl -n "$KFP_NAMESPACE" wait --for=condition=Available --timeout=30m \
  deployment/ml-pipeline deployment/ml-pipeline-persistenceagent \
  deployment/workflow-controller deployment/metadata-grpc-deployment \
  deployment/mysql deployment/seaweedfs

# -- 3. Seldon Core v1 operator -------------------------------------------------------
# No cert-manager: with certManager.enabled=false (the default) the chart generates the
# webhook's certificate itself. The request logger needs no global setting: our
# SeldonDeployment's graph node carries logger {mode: all, url: http://localhost:8080/}
# (the drift sidecar), which the executor honours; the chart only sizes its queue.
log "Seldon Core operator $SELDON_CHART_VERSION"
helm upgrade --install seldon-core seldon-core-operator \
  --repo "$SELDON_CHART_REPO" --version "$SELDON_CHART_VERSION" \
  --namespace "$SELDON_NAMESPACE" --create-namespace \
  --set usageMetrics.enabled=false \
  --set executor.requestLogger.workQueueSize=10000 \
  --set executor.requestLogger.writeTimeoutMs=2000 \
  --wait --timeout 10m
kctl -n "$SELDON_NAMESPACE" rollout status deployment/seldon-controller-manager --timeout=5m
kctl wait --for condition=established --timeout=60s crd/seldondeployments.machinelearning.seldon.io

# -- 4. project images ----------------------------------------------------------------
log "Building and loading the images ($IMAGE_REGISTRY/closedloop-*:$IMAGE_TAG)"
make -C "$ROOT" images IMAGE_REGISTRY="$IMAGE_REGISTRY" IMAGE_TAG="$IMAGE_TAG"
for name in component serving monitor; do
  kind load docker-image --name "$CLUSTER_NAME" "$IMAGE_REGISTRY/closedloop-$name:$IMAGE_TAG"
done

# -- 5. S3 credentials and settings, in both namespaces --------------------------------
log "S3 Secret $S3_SECRET and ConfigMap $S3_SETTINGS_CONFIG_MAP in $NAMESPACE and $KFP_NAMESPACE"
kctl create namespace "$NAMESPACE" --dry-run=client -o yaml | kctl apply -f -
if kctl -n "$NAMESPACE" get secret "$S3_SECRET" >/dev/null 2>&1; then
  # The in-cluster SeaweedFS made its admin identity from these: keep them.
  S3_ACCESS_KEY="$(kctl -n "$NAMESPACE" get secret "$S3_SECRET" -o 'jsonpath={.data.AWS_ACCESS_KEY_ID}' | base64 --decode)"
  S3_SECRET_KEY="$(kctl -n "$NAMESPACE" get secret "$S3_SECRET" -o 'jsonpath={.data.AWS_SECRET_ACCESS_KEY}' | base64 --decode)"
else
  S3_ACCESS_KEY="closedloop-$(random_key)"
  S3_SECRET_KEY="$(random_key)$(random_key)"
fi
secret_dir="$(mktemp -d)"
chmod 700 "$secret_dir"
printf '%s' "$S3_ACCESS_KEY" >"$secret_dir/AWS_ACCESS_KEY_ID"
printf '%s' "$S3_SECRET_KEY" >"$secret_dir/AWS_SECRET_ACCESS_KEY"
for ns in "$NAMESPACE" "$KFP_NAMESPACE"; do
  kctl -n "$ns" create secret generic "$S3_SECRET" \
    --from-file="$secret_dir/AWS_ACCESS_KEY_ID" --from-file="$secret_dir/AWS_SECRET_ACCESS_KEY" \
    --dry-run=client -o yaml | kctl apply -f -
  kctl -n "$ns" create configmap "$S3_SETTINGS_CONFIG_MAP" \
    --from-literal=endpoint="$S3_ENDPOINT_IN_CLUSTER" --from-literal=region="$S3_REGION" \
    --dry-run=client -o yaml | kctl apply -f -
done
rm -rf "$secret_dir"

# -- 6. the dev overlay ---------------------------------------------------------------
log "kubectl apply -k manifests/overlays/dev"
# The operator's admission webhook can refuse the first SeldonDeployment for a few
# seconds after its rollout: retry.
retry 6 10 kctl apply -k "$ROOT/manifests/overlays/dev"
kctl -n "$NAMESPACE" rollout status deployment/closedloop-s3 --timeout=10m
# Re-runs load fresh images under the same tag: restart the trigger so it uses them.
kctl -n "$NAMESPACE" rollout restart deployment/closedloop-trigger

port_forward "$NAMESPACE" "svc/closedloop-s3" "$S3_LOCAL_PORT" 8333
port_forward "$KFP_NAMESPACE" "svc/ml-pipeline" "$KFP_LOCAL_PORT" 8888 /apis/v2beta1/healthz
host_s3=(env "CLOSEDLOOP_S3_ENDPOINT=http://127.0.0.1:$S3_LOCAL_PORT"
  "AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY" "AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
  "AWS_DEFAULT_REGION=$S3_REGION")
"${host_s3[@]}" "$PY" -c "from closedloop.storage import Store; Store().ensure_bucket('$BUCKET')"
kctl -n "$NAMESPACE" rollout status deployment/closedloop-trigger --timeout=10m

# -- 7. a first champion --------------------------------------------------------------
champion_version() {
  "${host_s3[@]}" "$PY" - "$REGISTRY_URI" "$MODEL_NAME" <<'PY'
import sys

from closedloop.registry import Registry
from closedloop.storage import Store

pointer = Registry(Store(), sys.argv[1]).champion(sys.argv[2])
print(pointer.version if pointer else "")
PY
}

champion="$(champion_version)"
if [ -n "$champion" ]; then
  log "Champion: $MODEL_NAME $champion (already registered)"
else
  log "Training a first champion on KFP ($TRAIN_ROWS rows; deploy step rolls it out)"
  "${host_s3[@]}" "$VENV/bin/closedloop" data generate --out "$REFERENCE_URI" \
    --rows "$TRAIN_ROWS" --seed 0
  KFP_HOST="$KFP_ENDPOINT" DATA_URI="$REFERENCE_URI" MODEL="$MODEL_NAME" \
    REGISTRY="$REGISTRY_URI" TIMEOUT="$TRAIN_TIMEOUT" \
    IMAGE="$IMAGE_REGISTRY/closedloop-component:$IMAGE_TAG" "$PY" - <<'PY'
import os
import sys
import time

import kfp

from closedloop.cli.submit import submit_pipeline

host = os.environ["KFP_HOST"]
run_id, url = submit_pipeline(
    "training",
    host,
    {
        "data_uri": os.environ["DATA_URI"],
        "model_name": os.environ["MODEL"],
        "registry_uri": os.environ["REGISTRY"],
        "n_candidates": 2,
        "deploy_backend": "kubernetes",
    },
    experiment="closedloop-e2e-setup",
    run_name=f"e2e-champion-{int(time.time())}",
    component_image=os.environ["IMAGE"],
)
print(f"training run: {url}", flush=True)
run = kfp.Client(host=host).wait_for_run_completion(run_id, timeout=int(os.environ["TIMEOUT"]))
if str(run.state) != "SUCCEEDED":
    sys.exit(f"training run {url} ended {run.state}: {run.error}")
PY
  champion="$(champion_version)"
  [ -n "$champion" ] || die "the training run succeeded but promoted no champion (its gate rejected the model?)"
  log "Champion: $MODEL_NAME $champion"
fi
kctl -n "$NAMESPACE" wait --for=jsonpath='{.status.state}'=Available \
  "seldondeployments.machinelearning.seldon.io/$SDEP" --timeout=15m
kctl -n "$NAMESPACE" wait --for=condition=Available deployment \
  -l "seldon-deployment-id=$SDEP" --timeout=15m
kctl -n "$NAMESPACE" get "seldondeployments.machinelearning.seldon.io/$SDEP" \
  -o 'jsonpath={.metadata.labels.closedloop\.io/model-version}{"\n"}'

# -- 8. the test ----------------------------------------------------------------------
if [ "$MODE" = setup ]; then
  log "Set up. To run the test by hand:"
  cat <<EOF
  export KUBECONFIG=$KUBECONFIG_FILE
  kubectl -n $KFP_NAMESPACE port-forward svc/ml-pipeline $KFP_LOCAL_PORT:8888 &
  export KF_PIPELINES_ENDPOINT=$KFP_ENDPOINT
  .venv/bin/pytest tests/e2e -m cluster -v
EOF
  exit 0
fi
log "pytest tests/e2e -m cluster"
cd "$ROOT"
KF_PIPELINES_ENDPOINT="$KFP_ENDPOINT" PATH="$VENV/bin:$PATH" \
  "$VENV/bin/pytest" tests/e2e -m cluster -v ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"}
