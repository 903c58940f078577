#!/usr/bin/env bash
# Development certificates for the example NATS cluster in this folder (NOT for production:
# use your own CA or an ACME/PKI tool there; the file names below are what the configs expect).
#
#   bash deploy/nats/gen-dev-certs.sh OUT_DIR [NODE...]
#
# NODE defaults to "nats-1 nats-2 nats-3". Writes to OUT_DIR (created, mode 0700):
#
#   ca.pem, ca-key.pem                  a throwaway CA (10 years)
#   <node>.pem, <node>-key.pem          one server certificate per node, SANs: <node>,
#                                       <node>.pyoco.internal, localhost, 127.0.0.1, ::1;
#                                       serverAuth + clientAuth (routes present it to their peers)
#   pyoco-gateway.pem, -key.pem         client certificates for `verify_and_map` (the user is the
#   pyoco-worker.pem, -key.pem          certificate's e-mail SAN: pyoco-gateway@pyoco.internal,
#   nats-admin.pem, -key.pem            pyoco-worker@pyoco.internal, nats-admin@pyoco.internal)
#
# Keys are EC P-256 (as `nats-server` and our rustls client accept), mode 0600. Existing files
# are overwritten. Needs only openssl (1.1.1 or 3.x).
set -euo pipefail

die() {
  printf 'gen-dev-certs: ERROR: %s\n' "$*" >&2
  exit 1
}

[[ $# -ge 1 ]] || die "usage: gen-dev-certs.sh OUT_DIR [NODE...]"
out=$1
shift
nodes=("$@")
[[ ${#nodes[@]} -gt 0 ]] || nodes=(nats-1 nats-2 nats-3)
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

for name in "${nodes[@]}"; do
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] || die "node name '$name': use letters, digits, '.' and '-'"
done

mkdir -p -- "$out"
chmod 700 -- "$out"
cd -- "$out"
umask 077

days=3650
domain=pyoco.internal

# key NAME -> NAME-key.pem (EC P-256, PKCS#8)
key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1-key.pem" 2>/dev/null
}

# sign NAME SUBJECT EXTENSIONS -> NAME.pem signed by the CA
sign() {
  local name=$1 subject=$2 ext=$3
  openssl req -new -key "$name-key.pem" -subj "$subject" -out "$name.csr"
  printf '%s\n' "$ext" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -days "$days" -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f -- "$name.csr" "$name.ext"
}

key ca
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" \
  -subj "/O=pyoco-server example/CN=pyoco-server example dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem

for node in "${nodes[@]}"; do
  key "$node"
  sign "$node" "/O=pyoco-server example/CN=$node" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$node,DNS:$node.$domain,DNS:localhost,IP:127.0.0.1,IP:::1"
done

for user in pyoco-gateway pyoco-worker nats-admin; do
  key "$user"
  sign "$user" "/O=pyoco-server example/CN=$user" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=email:$user@$domain"
done

rm -f -- ca.srl
chmod 600 -- ./*.pem
printf 'gen-dev-certs: wrote %s (CA, servers: %s; clients: pyoco-gateway, pyoco-worker, nats-admin)\n' \
  "$(pwd)" "${nodes[*]}"
