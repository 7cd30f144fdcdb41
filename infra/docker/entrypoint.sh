#!/bin/sh
# Entry point of the Nanobill image. NANOBILL_SERVICE selects the service; the first argument
# selects what to run:
#   (none) | serve   the service's standalone server (apps/<service>/src/main.ts)
#   migrate          apply the service's migrations and exit (the Kubernetes migrations Job)
#   migrate-wait     exit 0 once the service's schema is current (init container)
# `exec` replaces this shell, so node is PID 1 and receives SIGTERM itself (graceful drain).
set -eu

case "${NANOBILL_SERVICE:-}" in
  metering | rating | ledger | credit-wallet | invoicing) ;;
  *)
    echo "NANOBILL_SERVICE must be one of: metering, rating, ledger, credit-wallet, invoicing (got '${NANOBILL_SERVICE:-}')" >&2
    exit 64
    ;;
esac

mode="${1:-serve}"
case "$mode" in
  serve | migrate | migrate-wait) ;;
  *)
    echo "unknown command '$mode' (serve, migrate, migrate-wait)" >&2
    exit 64
    ;;
esac
if [ "$#" -gt 1 ]; then
  # e.g. "migrate --wait" would otherwise apply migrations where the caller asked to wait.
  shift
  echo "unexpected arguments after '$mode': $* (commands take none: serve, migrate, migrate-wait)" >&2
  exit 64
fi

# The image listens where it EXPOSEs (8080) unless <SERVICE>_PORT says otherwise (the services'
# own default, 7001-7005, is for running from a checkout).
port_var="$(echo "$NANOBILL_SERVICE" | tr 'a-z-' 'A-Z_')_PORT"
eval "port_value=\${$port_var:-}"
if [ -z "$port_value" ]; then export "$port_var=8080"; fi

# The repository root (/app in the image): node resolves tsx and the workspaces from there.
cd "$(dirname "$0")/../.."
case "$mode" in
  serve) exec node --import tsx "apps/${NANOBILL_SERVICE}/src/main.ts" ;;
  migrate) exec node --import tsx infra/migrate.ts "${NANOBILL_SERVICE}" ;;
  migrate-wait) exec node --import tsx infra/migrate.ts "${NANOBILL_SERVICE}" --wait ;;
esac
