# Where the corpora are. Every recipe reads this file (egs2/<corpus>/aac1/db.sh links to it); a variable
# already set in the environment wins over the value here.
#
# A corpus is given either as a folder for aac-datasets, which holds (or, after stage 1 downloads it,
# will hold) CLOTHO_v2.1/ or AUDIOCAPS/, or as your own jsonl manifests: <CORPUS>_MANIFESTS is then a
# folder with one <subset>.jsonl per subset, one {"key", "source", "target"} line per caption (SLAM-AAC's
# format), and it wins over the folder. aac-datasets: pip install -e '.[recipe]' at the repository root.

# Clotho v2.1 (Zenodo, about 12 GB for dev + val + eval): subsets dev, val, eval.
CLOTHO=${CLOTHO-downloads}
CLOTHO_MANIFESTS=${CLOTHO_MANIFESTS-}

# AudioCaps v1: subsets train, val, test. aac-datasets fetches the clips from YouTube (needs yt-dlp and
# ffmpeg on PATH; videos that are gone are left out and listed). Empty: the Clotho recipe pre-trains
# without AudioCaps, the AudioCaps recipe downloads into "downloads".
AUDIOCAPS=${AUDIOCAPS-}
AUDIOCAPS_MANIFESTS=${AUDIOCAPS_MANIFESTS-}

# More pre-training data, as SLAM-AAC pre-trains on WavCaps and MACS too: "name=/path/to/manifest.jsonl ..."
# Each becomes data/<name> and joins the pre-training set.
PRETRAIN_MANIFESTS=${PRETRAIN_MANIFESTS-}

# The CLAP of CLAP-Refine (stage 9): SLAM-AAC's own (a folder with best_model.pt and clap_config.yaml, from
# the SLAM-AAC release), a LAION-CLAP .pt, a transformers ClapModel folder or a Hub id. Empty: no stage 9.
CLAP=${CLAP-}
