#!/usr/bin/env bash
# tests/harness/kube.sh — a real Kubernetes control plane (etcd + kube-apiserver)
# on loopback for prescale's integration tests, CI and local development.
#
# Like controller-runtime's envtest: no controller-manager, no scheduler, no
# kubelet. Objects are stored and served (CRUD, watch, RBAC, TokenRequest, the
# scale subresource, admission) but nothing reconciles them: a Deployment never
# gets ReplicaSets or Pods, and a deleted namespace stays Terminating.
#
# Usage (from any directory):
#   eval "$(tests/harness/kube.sh start)"   # build if needed, start, export env
#   kubectl get ns
#   tests/harness/kube.sh stop              # stop and delete the state dir
# In scripts, note that eval "$(...)" hides a failed start (eval "" succeeds):
#   env="$(tests/harness/kube.sh start)" || exit 1; eval "$env"
#   trap 'tests/harness/kube.sh stop' EXIT
#
# Commands:
#   build              build kube-apiserver, kubectl and etcd once (cached)
#   start              start etcd + kube-apiserver; prints on stdout only:
#                        export KUBECONFIG=<state>/admin.kubeconfig
#                        export PRESCALE_SA_KUBECONFIG=<state>/sa.kubeconfig
#                        export PATH=<cache>/bin:$PATH
#                      (if already running, just prints them again)
#   env                print those lines for the running cluster
#   status             show pids, ports, readiness; exit 0 iff ready
#   stop               stop kube-apiserver then etcd, remove the state dir
#                      (idempotent)
#   stop-apiserver     stop only kube-apiserver (for outage tests)
#   start-apiserver    start it again: same certs, port, etcd; waits for /readyz
#   restart-apiserver  stop-apiserver + start-apiserver
#
# Admin kubeconfig: user "admin" in group system:masters (static token).
# SA kubeconfig: token of ServiceAccount prescale-system/prescale (24 h), bound
# by deploy/rbac.yaml when that file exists; default namespace prescale-system.
#
# Environment:
#   PRESCALE_CACHE      cache root (default ~/.cache/prescale); binaries go to
#                       $PRESCALE_CACHE/kube/<k8s-version>/bin
#   KUBE_HARNESS_DIR    state dir: certs, etcd data, logs, kubeconfigs
#                       (default ${TMPDIR:-/tmp}/prescale-kube)
#   KUBE_HARNESS_TIMEOUT  seconds to wait for /readyz (default 90)
#   KUBE_HARNESS_RBAC   RBAC manifest to apply (default <repo>/deploy/rbac.yaml)
#   KUBE_HARNESS_KEEP_GO=1  keep the build's Go module/build caches (~GBs) under
#                       $PRESCALE_CACHE/kube/<k8s-version>/go (deleted by default)
#   KUBE_HARNESS_BUILD_NICE  nice level for the Go build (default 19)
#
# The Kubernetes/etcd versions are pinned by tests/harness/kube/build/go.mod
# (regenerate with tests/harness/kube/update-build-module.sh). A cold build needs
# Go (>= the go.mod's go line) and the Go module proxy, and takes tens of
# minutes on 2 cores; later runs reuse the binaries.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HARNESS_DIR/../.." && pwd)"
BUILD_MOD="$HARNESS_DIR/kube/build"

modver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$BUILD_MOD/go.mod"; }
K8S_VERSION="$(modver k8s.io/kubernetes)"
ETCD_VERSION="$(modver go.etcd.io/etcd/server/v3)"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || {
  echo "kube.sh: cannot read versions from $BUILD_MOD/go.mod" >&2
  exit 1
}

CACHE_ROOT="${PRESCALE_CACHE:-$HOME/.cache/prescale}"
KUBE_CACHE="$CACHE_ROOT/kube/$K8S_VERSION"
BIN="$KUBE_CACHE/bin"
STATE="${KUBE_HARNESS_DIR:-${TMPDIR:-/tmp}/prescale-kube}"
STATE="${STATE%/}"
MARKER="$STATE/.prescale-kube-harness"
TIMEOUT="${KUBE_HARNESS_TIMEOUT:-90}"
RBAC_FILE="${KUBE_HARNESS_RBAC:-$REPO_ROOT/deploy/rbac.yaml}"
SA_NAMESPACE=prescale-system
SA_NAME=prescale

log() { echo "kube.sh: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --------------------------------------------------------------------- build

build_stamp() {
  # Anything that changes the binaries: pinned module graph + flags below.
  {
    cat "$BUILD_MOD/go.mod" "$BUILD_MOD/go.sum"
    echo "flags-v1 CGO_ENABLED=0 -trimpath -s -w"
  } | sha256sum | cut -d' ' -f1
}

is_built() {
  local b
  for b in kube-apiserver kubectl etcd; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ -f "$BIN/.stamp" && "$(cat "$BIN/.stamp")" == "$(build_stamp)" ]]
}

cmd_build() {
  is_built && return 0
  command -v go >/dev/null || die "go is required to build Kubernetes $K8S_VERSION (none on PATH)"
  mkdir -p "$KUBE_CACHE"
  # Serialise concurrent builds (parallel test jobs, two shells).
  if command -v flock >/dev/null; then
    exec 9>"$KUBE_CACHE/.build.lock"
    flock 9
    if is_built; then exec 9>&-; return 0; fi
  fi

  local gohome="$KUBE_CACHE/go" out="$KUBE_CACHE/bin.tmp"
  local date
  rm -rf "$out"
  mkdir -p "$gohome" "$out"
  log "building kube-apiserver + kubectl $K8S_VERSION and etcd $ETCD_VERSION into $BIN"
  log "(cold build: tens of minutes on 2 cores; Go caches in $gohome)"
  local start=$SECONDS
  (
    cd "$BUILD_MOD"
    export GOMODCACHE="$gohome/mod" GOCACHE="$gohome/cache" GOPATH="$gohome/path"
    export GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off CGO_ENABLED=0
    # Version stamping as in kubernetes' hack/lib/version.sh.
    date="$(go list -m -json k8s.io/kubernetes | sed -n 's/^[[:space:]]*"Time": "\(.*\)",*$/\1/p')"
    local ld="-s -w" minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    local p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=${date:-1970-01-01T00:00:00Z}"
    done
    nice -n "${KUBE_HARNESS_BUILD_NICE:-19}" go build -trimpath -ldflags "$ld" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kubectl \
      go.etcd.io/etcd/server/v3
  ) 9>&- || die "build failed (Go caches kept in $gohome for a retry)"
  mv "$out/server" "$out/etcd" # the etcd main package is go.etcd.io/etcd/server/v3
  build_stamp >"$out/.stamp"
  rm -rf "$BIN"
  mv "$out" "$BIN"
  log "built in $((SECONDS - start)) s: $(du -sh "$BIN" | cut -f1) in $BIN"
  if [[ "${KUBE_HARNESS_KEEP_GO:-0}" != 1 ]]; then
    chmod -R u+w "$gohome" 2>/dev/null || true # module cache files are read-only
    rm -rf "$gohome"
  fi
  exec 9>&-
}

# ----------------------------------------------------------------- processes

pid_alive() {
  # Alive and really ours (its command line mentions the state dir), so a
  # recycled pid is never signalled.
  local pid="$1" args i
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [[ -d /proc/$pid ]]; then
    # While a process execs (setsid becoming etcd) its command line reads
    # empty for a moment: read again rather than call it dead.
    for ((i = 0; i < 20; i++)); do
      args="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
      [[ -n "$args" ]] && break
      sleep 0.05
    done
  else
    args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
  fi
  [[ "$args" == *"$STATE"* ]]
}

proc_pid() { cat "$STATE/$1.pid" 2>/dev/null || true; }

stop_proc() {
  local name="$1" pid i
  pid="$(proc_pid "$name")"
  if pid_alive "$pid"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do # 10 s
      pid_alive "$pid" || break
      sleep 0.1
    done
    if pid_alive "$pid"; then
      log "$name did not exit after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$STATE/$name.pid"
}

launch() {
  # launch NAME ARGS...: run detached (own session, no inherited stdio, so a
  # caller's "$(kube.sh start)" is not held open), log to $STATE/NAME.log.
  local name="$1"
  shift
  local -a pre=()
  command -v setsid >/dev/null && pre=(setsid)
  "${pre[@]}" "$@" </dev/null >>"$STATE/$name.log" 2>&1 9>&- &
  local pid=$! i
  echo "$pid" >"$STATE/$name.pid"
  # Until the forked shell has exec'd, its command line is this script's and
  # pid_alive would not recognise it.
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
}

tail_logs() {
  local f
  for f in "$STATE"/etcd.log "$STATE"/kube-apiserver.log; do
    [[ -f "$f" ]] || continue
    echo "----- last 40 lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
}

port_in_use() {
  if command -v ss >/dev/null; then
    ss -Htan "sport = :$1" 2>/dev/null | grep -q . && return 0
    return 1
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  # Below the usual ephemeral range (32768+), so outgoing connections do not
  # take it between choosing and binding. Skips ports already chosen ($*).
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    [[ " $* " == *" $p "* ]] && continue
    port_in_use "$p" || {
      echo "$p"
      return 0
    }
  done
  die "no free loopback port found"
}

wait_port() {
  local port="$1" name="$2" deadline=$((SECONDS + TIMEOUT))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    pid_alive "$(proc_pid "$name")" || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

apiserver_ready() {
  [[ "$(kubectl_admin get --raw /readyz --request-timeout=5s 2>/dev/null)" == ok ]]
}

wait_ready() {
  local deadline=$((SECONDS + TIMEOUT))
  until apiserver_ready; do
    pid_alive "$(proc_pid kube-apiserver)" || {
      log "kube-apiserver exited"
      return 1
    }
    if ((SECONDS >= deadline)); then
      log "kube-apiserver not ready after ${TIMEOUT}s; /readyz says:"
      kubectl_admin get --raw '/readyz?verbose' --request-timeout=5s 2>&1 | grep -v ' ok$' >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------------- PKI

gen_pki() {
  local d="$STATE/pki"
  mkdir -p "$d"
  command -v openssl >/dev/null || die "openssl is required"
  cat >"$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = prescale-kube-harness-ca
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:10.0.0.1
EOF
  (
    cd "$d"
    umask 077
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -config openssl.cnf \
      -extensions v3_ca -out ca.crt 2>/dev/null
    openssl genrsa -out apiserver.key 2048 2>/dev/null
    openssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -CAserial ca.srl -sha256 -days 3650 -extfile openssl.cnf -extensions v3_server \
      -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # token,user,uid,"groups"
    printf '%s,admin,admin,"system:masters"\n' "$(openssl rand -hex 32)" >tokens.csv
  ) || die "certificate generation with openssl failed"
}

write_kubeconfig() {
  # write_kubeconfig FILE USER TOKEN [NAMESPACE]
  local file="$1" user="$2" token="$3" ns="${4:-}" ca
  ca="$(base64 <"$STATE/pki/ca.crt" | tr -d '\n')"
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: prescale-kube
  cluster:
    server: https://127.0.0.1:${APISERVER_PORT}
    certificate-authority-data: ${ca}
users:
- name: ${user}
  user:
    token: ${token}
contexts:
- name: ${user}@prescale-kube
  context:
    cluster: prescale-kube
    user: ${user}${ns:+
    namespace: ${ns}}
current-context: ${user}@prescale-kube
EOF
  )
}

# ------------------------------------------------------------------ start/stop

load_ports() {
  [[ -f "$STATE/cluster.env" ]] || return 1
  # shellcheck disable=SC1091
  source "$STATE/cluster.env"
}

start_etcd() {
  launch etcd "$BIN/etcd" \
    --name prescale \
    --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "prescale=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --log-level warn
}

start_apiserver_proc() {
  local p="$STATE/pki"
  mkdir -p "$STATE/apiserver"
  # ServiceAccount admission is off: without the controller-manager no
  # "default" ServiceAccount exists, and it would reject every Pod.
  launch kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "$APISERVER_PORT" \
    --cert-dir "$STATE/apiserver" \
    --tls-cert-file "$p/apiserver.crt" \
    --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --token-auth-file "$p/tokens.csv" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" \
    --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode RBAC \
    --allow-privileged \
    --disable-admission-plugins ServiceAccount \
    --profiling=false
}

print_env() {
  echo "export KUBECONFIG=$STATE/admin.kubeconfig"
  echo "export PRESCALE_SA_KUBECONFIG=$STATE/sa.kubeconfig"
  # A literal $PATH, expanded by the caller's shell at eval time.
  echo "export PATH=$BIN:\$PATH"
}

running() {
  pid_alive "$(proc_pid etcd)" && pid_alive "$(proc_pid kube-apiserver)"
}

fail_start() {
  log "start failed; logs are in $STATE"
  tail_logs
  stop_proc kube-apiserver
  stop_proc etcd
  exit 1
}

cmd_start() {
  cmd_build
  if [[ -f "$MARKER" ]] && running && load_ports && apiserver_ready; then
    log "already running (state $STATE)"
    print_env
    return 0
  fi
  cmd_stop_quiet
  mkdir -p "$STATE"
  touch "$MARKER"
  local t0=$SECONDS
  ETCD_PORT="$(free_port)"
  ETCD_PEER_PORT="$(free_port "$ETCD_PORT")"
  APISERVER_PORT="$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT")"
  cat >"$STATE/cluster.env" <<EOF
K8S_VERSION=$K8S_VERSION
ETCD_VERSION=$ETCD_VERSION
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
EOF
  gen_pki
  local admin_token
  admin_token="$(cut -d, -f1 "$STATE/pki/tokens.csv")"
  write_kubeconfig "$STATE/admin.kubeconfig" admin "$admin_token"

  log "starting etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT (peer $ETCD_PEER_PORT)"
  start_etcd
  wait_port "$ETCD_PORT" etcd || fail_start
  log "starting kube-apiserver $K8S_VERSION on https://127.0.0.1:$APISERVER_PORT"
  start_apiserver_proc
  wait_ready || fail_start
  log "kube-apiserver ready after $((SECONDS - t0)) s"

  setup_service_account || fail_start
  log "control plane up in $((SECONDS - t0)) s (state $STATE; stop with: $0 stop)"
  print_env
}

setup_service_account() {
  local k=(kubectl_admin --request-timeout=30s) token
  "${k[@]}" create namespace "$SA_NAMESPACE" >/dev/null
  "${k[@]}" -n "$SA_NAMESPACE" create serviceaccount "$SA_NAME" >/dev/null
  if [[ -f "$RBAC_FILE" ]]; then
    log "applying RBAC from $RBAC_FILE"
    "${k[@]}" apply -f "$RBAC_FILE" >&2
  else
    log "no $RBAC_FILE: ServiceAccount $SA_NAMESPACE/$SA_NAME has no RBAC bindings"
  fi
  token="$("${k[@]}" -n "$SA_NAMESPACE" create token "$SA_NAME" --duration 24h)"
  [[ -n "$token" ]] || {
    log "kubectl create token returned nothing"
    return 1
  }
  write_kubeconfig "$STATE/sa.kubeconfig" "system:serviceaccount:$SA_NAMESPACE:$SA_NAME" \
    "$token" "$SA_NAMESPACE"
}

cmd_stop_quiet() {
  [[ -d "$STATE" ]] || return 0
  if [[ ! -f "$MARKER" ]]; then
    [[ -z "$(ls -A "$STATE")" ]] || die "$STATE exists but was not made by kube.sh; not touching it"
  fi
  stop_proc kube-apiserver
  stop_proc etcd
  rm -rf "$STATE"
}

cmd_stop() {
  if [[ -d "$STATE" ]]; then
    cmd_stop_quiet
    log "stopped; removed $STATE"
  else
    log "not running ($STATE does not exist)"
  fi
}

require_cluster() {
  if [[ ! -f "$MARKER" ]] || ! load_ports; then
    die "no cluster in $STATE (run: $0 start)"
  fi
}

cmd_stop_apiserver() {
  require_cluster
  stop_proc kube-apiserver
}

cmd_start_apiserver() {
  require_cluster
  pid_alive "$(proc_pid etcd)" || die "etcd is not running; use stop + start"
  if pid_alive "$(proc_pid kube-apiserver)"; then
    log "kube-apiserver already running"
  else
    local t0=$SECONDS
    echo "----- restart $(date -u +%FT%TZ) -----" >>"$STATE/kube-apiserver.log"
    start_apiserver_proc
    wait_ready || {
      tail_logs
      stop_proc kube-apiserver
      exit 1
    }
    log "kube-apiserver ready after $((SECONDS - t0)) s"
  fi
}

cmd_status() {
  if [[ ! -f "$MARKER" ]] || ! load_ports; then
    echo "not running (no state in $STATE)"
    return 3
  fi
  local n pid rc=0
  echo "kubernetes $K8S_VERSION, etcd $ETCD_VERSION; state $STATE; binaries $BIN"
  for n in etcd kube-apiserver; do
    pid="$(proc_pid "$n")"
    if pid_alive "$pid"; then echo "$n: running (pid $pid)"; else
      echo "$n: not running"
      rc=1
    fi
  done
  echo "etcd: http://127.0.0.1:$ETCD_PORT  apiserver: https://127.0.0.1:$APISERVER_PORT"
  if apiserver_ready; then echo "readyz: ok"; else
    echo "readyz: not ready"
    rc=1
  fi
  return "$rc"
}

cmd_env() {
  require_cluster
  print_env
}

case "${1:-}" in
build) cmd_build && log "binaries in $BIN (kubernetes $K8S_VERSION, etcd $ETCD_VERSION)" ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
stop-apiserver) cmd_stop_apiserver ;;
start-apiserver) cmd_start_apiserver ;;
restart-apiserver)
  cmd_stop_apiserver
  cmd_start_apiserver
  ;;
-h | --help | help)
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  ;;
*)
  echo "usage: $0 {build|start|stop|status|env|stop-apiserver|start-apiserver|restart-apiserver|help}" >&2
  exit 2
  ;;
esac
