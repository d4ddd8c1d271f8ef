#!/usr/bin/env bash
# host-packages.sh installs the Debian packages the one-node test cluster runs on: containerd,
# runc, the CNI plugins (bridge, host-local, loopback in /usr/lib/cni), iptables and conntrack.
# It does nothing when all are installed. Needs root and a reachable Debian mirror.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables conntrack)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "host packages: all installed (${pkgs[*]})" >&2
	exit 0
fi
start=$SECONDS
echo "host packages: installing ${missing[*]}" >&2
apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
echo "host packages: installed in $((SECONDS - start))s" >&2
