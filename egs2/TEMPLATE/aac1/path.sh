# Environment of every recipe (recipes link this file). The recipe runs the `python` on PATH, which must
# have espnet-slam-aac installed (`pip install -e .` at the repository root, in a virtual environment).
# Activate that environment before ./run.sh; when nothing on PATH has the package, the repository's own
# .venv is activated if it exists.
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
export PYTHONDONTWRITEBYTECODE=1
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker,virbr,vmnet,vboxnet}"

if ! python -c "import espnet_slam_aac" >/dev/null 2>&1; then
    __repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel 2>/dev/null || true)
    if [ -n "${__repo_root}" ] && [ -f "${__repo_root}/.venv/bin/activate" ]; then
        # shellcheck disable=SC1091
        . "${__repo_root}/.venv/bin/activate"
    fi
    unset __repo_root
    if ! python -c "import espnet_slam_aac" >/dev/null 2>&1; then
        echo "path.sh: 'python' ($(command -v python || echo none)) cannot import espnet_slam_aac." >&2
        echo "path.sh: activate the environment where it is installed, e.g. 'pip install -e .' in a venv." >&2
        return 1 2>/dev/null || exit 1
    fi
fi
