#!/usr/bin/env bash
# Install the Prometheus server and promtool (Debian package `prometheus`) and Alertmanager (Debian package
# `prometheus-alertmanager`) for the integration tests, without starting their services: the tests start
# their own servers on free ports.
set -euo pipefail

if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus-alertmanager ]; then
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# A policy-rc.d that exits 101 tells the package's maintainer scripts not to start services.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi

$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager
/usr/bin/prometheus --version | head -n 1
/usr/bin/prometheus-alertmanager --version | head -n 1
