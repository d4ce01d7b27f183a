#!/usr/bin/env bash
# Installs the pinned tools that tests and CI use, cached outside the repo so a
# second run is instant:
#   minio        real MinIO server for storage tests (go install, ~3 min cold)
#   vault        real Vault server, built from tools/vault (4-11 min cold)
#   step-ca      real step-ca for the remote issuer's tests (go install with
#                CGO_ENABLED=0: with cgo its YubiKey support needs libpcsclite)
#   staticcheck  linter
#   PostgreSQL   Debian packages via apt-get, only when initdb is missing
# Versions are pinned here and in tools/vault/go.mod; bump them deliberately.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c # MinIO publishes no semver tags
STATICCHECK_VERSION=v0.8.2                       # 2026.1.2; needs go >= 1.26.0
STEPCA_VERSION=v0.30.2                           # same line as the embedded smallstep/certificates

export GOTOOLCHAIN=local
repo=$(cd "$(dirname "$0")/.." && pwd)
tools_dir=${TRUSTAMP_TOOLS_DIR:-$HOME/.cache/trustamp/tools}
mkdir -p "$tools_dir/bin"

say() { printf 'tools: %s\n' "$*" >&2; }

# link NAME DIR: point bin/NAME at DIR/NAME, the version tests use.
link() { ln -sfn "../$(basename "$2")/$1" "$tools_dir/bin/$1"; }

go_install() { # NAME VERSION PACKAGE MINUTES
	local name=$1 version=$2 pkg=$3 minutes=$4 dir="$tools_dir/$1-$2"
	if [ -x "$dir/$name" ]; then
		say "$name $version: cached"
	else
		say "$name $version: building (about $minutes min on a cold cache)..."
		local start=$SECONDS
		mkdir -p "$dir.partial"
		GOBIN="$dir.partial" go install -trimpath -ldflags='-s -w' "$pkg@$version"
		rm -rf "$dir" && mv "$dir.partial" "$dir"
		say "$name $version: built in $((SECONDS - start))s"
	fi
	link "$name" "$dir"
}

vault() {
	# The cache key covers the tool module's go.sum: changing a pin rebuilds.
	local version key dir
	version=$(awk '$1 == "require" && $2 == "github.com/hashicorp/vault" {print $3}' "$repo/tools/vault/go.mod")
	key=$(cat "$repo/tools/vault/go.mod" "$repo/tools/vault/go.sum" "$repo/tools/vault/main.go" | sha256sum | cut -c1-12)
	dir="$tools_dir/vault-$version-$key"
	if [ -x "$dir/vault" ]; then
		say "vault $version: cached"
	else
		say "vault $version: building from tools/vault (4-11 min on 2 cores with a cold cache)..."
		local start=$SECONDS
		mkdir -p "$dir.partial"
		(cd "$repo/tools/vault" && go build -trimpath -ldflags='-s -w' -o "$dir.partial/vault" .)
		rm -rf "$dir" && mv "$dir.partial" "$dir"
		say "vault $version: built in $((SECONDS - start))s"
	fi
	link vault "$dir"
}

postgres() {
	if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; then
		say "postgresql: present"
	else
		say "postgresql: installing Debian packages..."
		local sudo=""
		[ "$(id -u)" -eq 0 ] || sudo=sudo
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
	fi
	# PostgreSQL refuses to run as root; testenv runs it as this user then.
	if [ "$(id -u)" -eq 0 ] && ! id "${TRUSTAMP_PG_USER:-postgres}" >/dev/null 2>&1; then
		say "postgresql: creating system user ${TRUSTAMP_PG_USER:-postgres} for tests run as root"
		useradd --system --no-create-home --shell /usr/sbin/nologin "${TRUSTAMP_PG_USER:-postgres}"
	fi
}

postgres
go_install staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck 1
go_install minio "$MINIO_VERSION" github.com/minio/minio 3
CGO_ENABLED=0 go_install step-ca "$STEPCA_VERSION" github.com/smallstep/certificates/cmd/step-ca 3
vault
say "all tools ready in $tools_dir"
