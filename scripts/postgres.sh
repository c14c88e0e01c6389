#!/usr/bin/env bash
# Makes the machine's PostgreSQL ready for the coordinator's database tests, from nothing:
# installs Debian's postgresql package where it is missing, starts the cluster (no systemd
# here), and creates the role the tests log in as. Safe to run again; tox runs it first.
#
# The tests then reach it at $LOYALNET_TEST_POSTGRES (default below) and make a database of
# their own for each run, dropped afterwards. Set LOYALNET_TEST_POSTGRES=skip to run the tests
# without PostgreSQL on a machine that has none (CI never does).
set -euo pipefail

if [[ "${LOYALNET_TEST_POSTGRES:-}" == "skip" ]]; then
    echo "postgres: skipped (LOYALNET_TEST_POSTGRES=skip)"
    exit 0
fi

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    echo "postgres: installing Debian's postgresql package"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi

read -r version cluster status < <(pg_lsclusters --no-header | awk '{print $1, $2, $4; exit}')
if [[ -z "${version:-}" ]]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    cluster=main
    as_root pg_createcluster "$version" "$cluster" >/dev/null
    status=down
fi
if [[ "$status" != online* ]]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
fi

# The role the tests log in as over TCP on 127.0.0.1 (password auth, as a coordinator would).
as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'loyalnet') THEN
        CREATE ROLE loyalnet LOGIN CREATEDB PASSWORD 'loyalnet';
    END IF;
END
$$;
SQL
echo "postgres: $version/$cluster online; tests log in as loyalnet@127.0.0.1"
