# How the recipe runs its jobs. Every *_cmd is a job runner with one interface:
#     ${train_cmd} [--gpu N] [--mem M] [--num_threads N] [--max_jobs_run N] [--num_nodes N] \
#         [--tee PREFIX] [JOB=1:N] LOG COMMAND...
# JOB in LOG and COMMAND becomes 1..N; each job's output goes to its LOG (run `utils/run.py --help`); with
# --tee, the LOG lines that start with PREFIX are also printed on the console (the local backend).
#   train_cmd:  CPU work (data preparation, statistics)
#   cuda_cmd:   training (asks for --gpu N)
#   decode_cmd: decoding, CLAP-Refine, scoring
#
# cmd_backend=local runs the jobs on this machine (in parallel, at most --max_jobs_run at a time).
# cmd_backend=slurm submits them with `sbatch --wait` (one array job per call); extra sbatch options
# (partition, time limit, account, ...) go in conf/slurm.conf, one per line.
cmd_backend=${cmd_backend:-local}

case "${cmd_backend}" in
    local)
        export train_cmd="utils/run.py"
        export cuda_cmd="utils/run.py"
        export decode_cmd="utils/run.py"
        ;;
    slurm)
        export train_cmd="utils/run.py --backend slurm --config conf/slurm.conf"
        export cuda_cmd="utils/run.py --backend slurm --config conf/slurm.conf"
        export decode_cmd="utils/run.py --backend slurm --config conf/slurm.conf"
        ;;
    *)
        echo "cmd.sh: unknown cmd_backend=${cmd_backend} (local or slurm)" >&2
        return 1 2>/dev/null || exit 1
        ;;
esac
