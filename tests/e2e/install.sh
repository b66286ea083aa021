#!/usr/bin/env bash
# Installs the Debian packages the one-node cluster needs, when any is missing:
# containerd and runc (with the CNI plugins and iptables they pull in), skopeo
# and umoci (local image building) and busybox-static (the pod sandbox image).
# Needs root and apt-get; prints why not and exits 1 otherwise.
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing packages: ${need[*]} (install them as root with apt-get)" >&2
  exit 1
fi
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
