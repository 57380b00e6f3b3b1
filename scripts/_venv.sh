# Sourced by run.sh and test.sh: make sure .venv exists with Python 3.11 and install the project into it.
# Usage: ensure_venv EXTRAS   (EXTRAS is "" or "[test]")
ensure_venv() {
  local python=${PYTHON:-}
  if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python=$candidate; break
      fi
    done
  fi
  [ -n "$python" ] || { echo "Python 3.11 is needed (chatterbox-streaming pins torch 2.6.0)." >&2; exit 1; }
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip 'setuptools<81' wheel
  .venv/bin/python -m pip install --quiet --editable ".$1"
}

# Install Debian packages that are missing (no-op on machines without apt-get).
ensure_debian_packages() {
  command -v apt-get >/dev/null || return 0
  local missing=() package
  for package in "$@"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Install a folder's npm packages exactly as its package-lock.json pins them (once per lock change).
ensure_node_modules() {
  local folder=$1
  cmp -s "$folder/package-lock.json" "$folder/node_modules/.installed-lock" && return 0
  (cd "$folder" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$folder/package-lock.json" "$folder/node_modules/.installed-lock"
}
