#!/usr/bin/env bash
# Builds the roomgate container image from this repository, without pulling
# anything: a static binary for x86_64-unknown-linux-musl, compiled on this
# machine, copied into an image FROM scratch (deploy/container/Containerfile),
# which is then exported as an OCI archive to load elsewhere.
#
#   deploy/container/build.sh [IMAGE [ARCHIVE]]
#
# IMAGE defaults to localhost/roomgate:latest (the name
# deploy/kubernetes/deployment.yaml uses), ARCHIVE to roomgate-image.tar in
# the current directory. Needs: rustup target add x86_64-unknown-linux-musl;
# musl-gcc (Debian: musl-tools), which the cc crate finds on its own for
# ring's and mimalloc's C code (no CC_x86_64_unknown_linux_musl needed);
# buildah. Honours CARGO_TARGET_DIR, and buildah's CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF.
set -euo pipefail

image=${1:-localhost/roomgate:latest}
archive=$(realpath -m -- "${2:-roomgate-image.tar}")
target=x86_64-unknown-linux-musl
repo=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=$(realpath -m -- "${CARGO_TARGET_DIR:-$repo/target}")

now_ms() { echo $(($(date +%s%N) / 1000000)); }
took() { local ms=$(($(now_ms) - $1)); printf '%d.%03d s' $((ms / 1000)) $((ms % 1000)); }

start=$(now_ms)
(cd "$repo" && CARGO_TARGET_DIR="$target_dir" "${CARGO:-cargo}" build --release --locked --target "$target")
binary="$target_dir/$target/release/roomgate"
echo "binary: $binary, $(stat -c %s "$binary") bytes, built in $(took "$start")"

# The build context is a directory holding the binary alone, so nothing else
# of the repository (or of target/) is sent to buildah.
context=$(mktemp -d)
trap 'rm -rf -- "$context"' EXIT
cp -- "$binary" "$context/roomgate"

start=$(now_ms)
buildah bud --quiet --file "$repo/deploy/container/Containerfile" --tag "$image" "$context" >/dev/null
echo "image: $image, built in $(took "$start")"

# The archive keeps the name, so `podman load` and `skopeo copy` know it.
rm -f -- "$archive"
buildah push --quiet "$image" "oci-archive:$archive:$image"
echo "archive: $archive, $(stat -c %s "$archive") bytes"
