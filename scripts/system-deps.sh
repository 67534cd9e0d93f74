#!/usr/bin/env bash
# Installs the Debian packages Runix needs where they are missing. Usage: system-deps.sh run|test
#   run:  bubblewrap, nftables and iproute2 (the sandbox: each app and build gets its own network), Node.js + npm
#   test: the above, plus Chromium (dashboard tests), wrk and nginx (router benchmark), dnsmasq (DNS in tests)
set -euo pipefail
want=(bwrap:bubblewrap nft:nftables ip:iproute2 setpriv:util-linux node:nodejs npm:npm)
if [ "${1:-run}" = "test" ]; then
  want+=(chromium:chromium wrk:wrk nginx:nginx-light dnsmasq:dnsmasq-base)
fi
missing=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing system packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
