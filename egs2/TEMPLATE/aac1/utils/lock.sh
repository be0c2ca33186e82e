#!/usr/bin/env bash
# One run at a time per output dir. Source it; then
#     hold DIR      take DIR's lock (the file <parent>/.<name>.lock beside DIR) for this shell and every process
#                   it starts, until `release DIR` or until the last of them has ended, however it ended
#                   (kill -9 included: the kernel drops the lock). When another live run holds it, exit 1
#                   naming that run's PID and command; a lock left by an ended run is taken over, with a log line.
#     release DIR   give it back (done for every held dir when the shell exits)
# The lock is an flock on an open file (utils/lock.py): NFS with working locks (v4) is fine.

declare -A __locks=()
__lock_py="$(dirname "${BASH_SOURCE[0]}")/lock.py"

lock_file() { local _d=${1%/}; echo "$(dirname "${_d}")/.$(basename "${_d}").lock"; }

hold() {
    local _file _fd
    [ -z "${__locks[$1]:-}" ] || return 0
    _file=$(lock_file "$1")
    mkdir -p "$(dirname "${_file}")"
    exec {_fd}>>"${_file}"
    if ! "${python:-python}" "${__lock_py}" "${_file}" "${_fd}" "$$"; then
        exec {_fd}>&-
        exit 1
    fi
    __locks[$1]=${_fd}
}

release() {
    local _fd=${__locks[$1]:-} _file
    [ -n "${_fd}" ] || return 0
    _file=$(lock_file "$1")
    [ ! -f "${_file}" ] || : > "${_file}"  # no record: released, nothing to take over
    exec {_fd}>&-
    unset "__locks[$1]"
}

release_all() { local _d; for _d in "${!__locks[@]}"; do release "${_d}"; done; }
trap release_all EXIT
