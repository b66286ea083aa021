#!/usr/bin/env bash
# Builds the end-to-end images locally, without a registry or a container
# engine: a root file system directory -> umoci (OCI layout, one gzip layer)
# -> skopeo (docker-archive) -> ctr import into containerd's k8s.io namespace.
#
#   tests/e2e/build_images.sh OUT_DIR BLOG_LEADER_BIN [CONTAINERD_SOCKET]
#
# Images (all tagged :e2e):
#   leasehold.test/pause         busybox-static; the pod sandbox
#   leasehold.test/leasehold-deno  what deploy/Dockerfile.deno produces: the deno
#                                binary, the bundled app in /app, its module cache
#                                baked into /deno-dir, user 65532
#   leasehold.test/leasehold-bun what deploy/Dockerfile produces: the bun binary
#                                and the bundled app in /app, user 65532
#   leasehold.test/blog-leader   the client-go baseline program, user 65532
# The Deno and Bun binaries link glibc; their images carry the libraries ldd
# names (distroless/cc and distroless/base carry the same ones) and nothing else.
# Prints one line per image: NAME COMPRESSED_BYTES (the sum of the gzip layer,
# config and manifest blobs, i.e. what a registry would store).
set -euo pipefail
OUT=$(realpath -m "$1"); BLOG_BIN=$2; SOCK=${3:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DENO=$ROOT/node_modules/deno/deno
BUN=$ROOT/node_modules/bun/bin/bun.exe
mkdir -p "$OUT"
rm -rf "$OUT/work" && mkdir -p "$OUT/work"

# The shared libraries a dynamic binary needs, copied to the same paths.
copy_libs() { # rootfs binary
  local f
  for f in $(ldd "$2" | grep -o '/[^ ]*'); do
    mkdir -p "$1$(dirname "$f")"
    cp -L "$f" "$1$f"
  done
}
# /etc/passwd and /etc/group naming the distroless nonroot user, and /tmp.
base_files() { # rootfs
  mkdir -p "$1/etc" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$1/etc/group"
}

# image NAME ROOTFS -- umoci config flags...
image() {
  local name=$1 rootfs=$2; shift 3
  local oci=$OUT/work/$name-oci bundle=$OUT/work/$name-bundle tar=$OUT/$name.tar
  umoci init --layout "$oci"
  umoci new --image "$oci:e2e"
  umoci unpack --image "$oci:e2e" "$bundle" >/dev/null
  cp -a "$rootfs/." "$bundle/rootfs/"
  umoci repack --image "$oci:e2e" "$bundle"
  umoci config --image "$oci:e2e" --clear=config.env --clear=config.cmd --clear=config.entrypoint "$@"
  umoci gc --layout "$oci"
  rm -f "$tar"
  skopeo copy --quiet "oci:$oci:e2e" "docker-archive:$tar:leasehold.test/$name:e2e"
  # Compressed size: every blob the layout references (layers are gzip).
  local size
  size=$(du -cb "$oci"/blobs/sha256/* | tail -1 | cut -f1)
  echo "$name $size"
  if [ -n "$SOCK" ]; then ctr -a "$SOCK" -n k8s.io images import --no-unpack=false "$tar" >/dev/null; fi
}

# pause: busybox sleeping until TERM.
R=$OUT/work/pause-root; mkdir -p "$R/bin"
cp /bin/busybox "$R/bin/busybox"; ln -s busybox "$R/bin/sh"; ln -s busybox "$R/bin/sleep"
image pause "$R" -- --config.entrypoint /bin/sh --config.entrypoint -c \
  --config.entrypoint 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done'

# leasehold on Deno (deploy/Dockerfile.deno): the `deno bundle` of the entrypoint.
R=$OUT/work/deno-root; mkdir -p "$R/bin" "$R/app"
base_files "$R"; copy_libs "$R" "$DENO"; cp "$DENO" "$R/bin/deno"
(cd "$ROOT" && "$DENO" bundle --quiet --minify lib/cli.ts -o "$R/app/leasehold.js")
# The module cache, built at the paths the container sees (like RUN deno cache).
mkdir -p "$R/dev" && touch "$R/dev/null" "$R/dev/urandom"
mount --bind /dev/null "$R/dev/null"; mount --bind /dev/urandom "$R/dev/urandom"
trap 'umount "$R/dev/null" "$R/dev/urandom" 2>/dev/null || true' EXIT
env -i DENO_DIR=/deno-dir DENO_NO_UPDATE_CHECK=1 /usr/sbin/chroot "$R" /bin/deno cache /app/leasehold.js
umount "$R/dev/null" "$R/dev/urandom"; trap - EXIT
rm -rf "$R/dev"
chmod -R a+rX "$R/deno-dir"
entry=()
# ENTRYPOINT, CMD and ENV exactly as deploy/Dockerfile.deno says.
while IFS= read -r a; do entry+=(--config.entrypoint "$a"); done < <(
  sed -nE 's/^ENTRYPOINT \[(.*)\]$/\1/p' "$ROOT/deploy/Dockerfile.deno" | tr ',' '\n' | sed -E 's/^ *"//; s/" *$//')
envs=()
while IFS= read -r a; do envs+=(--config.env "$a"); done < <(sed -nE 's/^ENV ([A-Z_]+)=(.*)$/\1=\2/p' "$ROOT/deploy/Dockerfile.deno")
cmd=()
while IFS= read -r a; do cmd+=(--config.cmd "$a"); done < <(
  sed -nE 's/^CMD \[(.*)\]$/\1/p' "$ROOT/deploy/Dockerfile.deno" | tr ',' '\n' | sed -E 's/^ *"//; s/" *$//')
image leasehold-deno "$R" -- --config.user 65532 --config.workingdir /app --config.env PATH=/bin "${envs[@]}" "${entry[@]}" "${cmd[@]}"

# leasehold on Bun (deploy/Dockerfile): the bun binary and the `bun build` bundle of the entrypoint.
R=$OUT/work/bun-root; mkdir -p "$R/usr/local/bin" "$R/app"
base_files "$R"; copy_libs "$R" "$BUN"; cp "$BUN" "$R/usr/local/bin/bun"
(cd "$ROOT" && "$BUN" build lib/cli.ts --target=bun --minify --outfile "$R/app/leasehold.js" >/dev/null)
image leasehold-bun "$R" -- --config.user 65532 --config.env BUN_RUNTIME_TRANSPILER_CACHE_PATH=0 \
  --config.entrypoint /usr/local/bin/bun --config.entrypoint /app/leasehold.js

# The blog program (distroless/static: the static binary alone).
R=$OUT/work/blog-root; mkdir -p "$R"
base_files "$R"; cp "$BLOG_BIN" "$R/blog-leader"
image blog-leader "$R" -- --config.user 65532 --config.entrypoint /blog-leader
