#!/usr/bin/env bash
# Generates TypeScript types from openapi/openapi.json with openapi-typescript and
# type-checks clients/typescript/usage.ts against them with `tsc --strict`. Needs node and npm.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent check
echo "typescript client: generated types and usage.ts check"
