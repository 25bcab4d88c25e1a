#!/usr/bin/env bash
# Validates the deployment files offline: the Kubernetes manifests against the
# API schemas (kubernetes-validate, from PyPI), the HTTP API's OpenAPI document
# (openapi-spec-validator, from PyPI), the compose file (check-jsonschema), the
# Dockerfile's shape. The Weir
# configs they carry are checked by `cargo test -p weir-web --test deploy`.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate >/dev/null
fi
kubernetes-validate --strict -k 1.30.0 k8s/*.yaml
# The HTTP API's OpenAPI document against the OpenAPI 3.1 schema.
if ! command -v openapi-spec-validator >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator >/dev/null
fi
openapi-spec-validator ../docs/openapi.json
# The compose file against the Compose Specification's schema (vendored by
# check-jsonschema, from PyPI).
if ! command -v check-jsonschema >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check check-jsonschema >/dev/null
fi
check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
# The Dockerfile: two stages, a non-root user, the binary as entrypoint.
grep -q '^FROM .* AS builder$' Dockerfile
grep -q '^USER weir$' Dockerfile
grep -q -- '--features kafka' Dockerfile
grep -q '^ENTRYPOINT \["/usr/local/bin/weir"\]$' Dockerfile
echo "deploy files: valid"
