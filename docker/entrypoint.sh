#!/bin/sh
# Entrypoint of the Concord node image.
#
# Without arguments: on first start (no concord.toml yet) create the node with
# `concord init`, listening on all interfaces and advertising an MPC address
# that peers can reach; on every start register the datasets of
# CONCORD_DATASETS that are not registered yet; then replace this shell with
# `concord node` (so that it receives SIGTERM from `docker stop`).
# With arguments: run `concord ARGS...` instead (e.g. `docker run IMAGE demo`).
#
# Environment:
#   CONCORD_NAME        the node's name, e.g. hospital-a (required on first start)
#   CONCORD_DIR         the node directory (default /var/lib/concord)
#   CONCORD_API_LISTEN  HTTP API listen address, first start only (default 0.0.0.0:7300)
#   CONCORD_MPC_LISTEN  MPC listen address, first start only (default 0.0.0.0:7301)
#   CONCORD_ADVERTISE   MPC address given to peers, first start only
#                       (default $CONCORD_NAME:PORT, PORT that of CONCORD_MPC_LISTEN)
#   CONCORD_DATASETS    datasets to register, NAME=FILE=SCHEMA separated by ';' or
#                       newlines (no spaces in paths), e.g.
#                       patients=/data/patients.csv=/data/schema.toml
set -eu

if [ "$#" -gt 0 ]; then
    exec concord "$@"
fi

dir="${CONCORD_DIR:-/var/lib/concord}"

if [ ! -e "$dir/concord.toml" ]; then
    name="${CONCORD_NAME:-}"
    if [ -z "$name" ]; then
        echo "entrypoint: $dir/concord.toml does not exist; set CONCORD_NAME to create the node" >&2
        exit 64
    fi
    mpc_listen="${CONCORD_MPC_LISTEN:-0.0.0.0:7301}"
    concord init --name "$name" --dir "$dir" \
        --api-listen "${CONCORD_API_LISTEN:-0.0.0.0:7300}" \
        --mpc-listen "$mpc_listen" \
        --advertise-address "${CONCORD_ADVERTISE:-$name:${mpc_listen##*:}}"
fi

# Split CONCORD_DATASETS on ';' and whitespace, without expanding globs.
set -f
old_ifs="$IFS"
IFS="; 	
"
for entry in ${CONCORD_DATASETS:-}; do
    IFS="$old_ifs"
    dataset="${entry%%=*}"
    rest="${entry#*=}"
    file="${rest%%=*}"
    schema="${rest#*=}"
    case "$entry" in
        *=*=*=*) bad=1 ;;
        ?*=?*=?*) bad= ;;
        *) bad=1 ;;
    esac
    if [ -n "$bad" ]; then
        echo "entrypoint: CONCORD_DATASETS entry \"$entry\" is not NAME=FILE=SCHEMA" >&2
        exit 64
    fi
    if out="$(concord dataset add "$dataset" --file "$file" --schema "$schema" --dir "$dir" 2>&1)"; then
        printf '%s\n' "$out"
    else
        case "$out" in
            *"is already registered"*) echo "entrypoint: dataset \"$dataset\" is already registered" ;;
            *)
                printf '%s\n' "$out" >&2
                echo "entrypoint: cannot register dataset \"$dataset\" (CONCORD_DATASETS)" >&2
                exit 1
                ;;
        esac
    fi
done
IFS="$old_ifs"
set +f

exec concord node --dir "$dir"
