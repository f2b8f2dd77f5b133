#!/bin/bash
# Installs what the VS Code end-to-end test needs, offline apart from the package registries:
# Debian chromium/libkrb5-dev/ripgrep, then code-server (last release that runs on Node 20) and
# playwright-core (no browser download) into $MERCURY_VSCODE_DIR.
# Usage: MERCURY_VSCODE_DIR=/some/dir editors/vscode/e2e-setup.sh
set -euo pipefail
DIR=${MERCURY_VSCODE_DIR:?set MERCURY_VSCODE_DIR to the folder to install code-server into}
CODE_SERVER_VERSION=4.100.3
PLAYWRIGHT_VERSION=1.65.1

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v rg >/dev/null || missing+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

mkdir -p "$DIR/tmp"
if [ -x "$DIR/node_modules/.bin/code-server" ] && [ -d "$DIR/node_modules/playwright-core" ]; then
  echo "code-server already installed in $DIR"; exit 0
fi
# Keep npm and node-gyp scratch files out of the home folder.
export TMPDIR="$DIR/tmp"
# @vscode/ripgrep downloads rg from GitHub at install time; serve it from its cache with Debian's rg.
cache="$TMPDIR/vscode-ripgrep-cache-1.15.11"
mkdir -p "$cache" "$TMPDIR/rg"
cp "$(command -v rg)" "$TMPDIR/rg/rg"
tar czf "$cache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" -C "$TMPDIR/rg" rg
cd "$DIR"
# npm 11 runs dependency install scripts only where allowScripts lists them; code-server's
# postinstall installs and builds VS Code's own modules.
[ -f package.json ] || cat > package.json <<'JSON'
{
  "name": "mercury-vscode-e2e",
  "private": true,
  "allowScripts": { "code-server": true, "argon2": true }
}
JSON
# npm_config_yes lets node-pty's node-gyp run without asking; code-server's postinstall refuses
# to run as root unless npm_config_unsafe_perm is true.
npm_config_yes=true npm_config_unsafe_perm=true npm install --no-audit --no-fund \
  "code-server@$CODE_SERVER_VERSION" "playwright-core@$PLAYWRIGHT_VERSION"
echo "installed code-server $CODE_SERVER_VERSION and playwright-core $PLAYWRIGHT_VERSION in $DIR"
