"""Train SLAM-AAC with ESPnet's trainer: ``python -m espnet_slam_aac.bin.aac_train --config conf/train.yaml ...``.

The options are those of every ESPnet ``*_train`` (``--print_config`` lists them with their defaults), plus
``AACTask``'s: ``--frontend``, ``--specaug``, ``--encoder``, ``--projector``, ``--decoder``, ``--model`` (each
with ``--<name>_conf``) and ``--frozen_dtype``. Example::

    python -m espnet_slam_aac.bin.aac_train --config conf/train_pretrain.yaml --ngpu 1 \\
        --train_data_path_and_name_and_type dump/train/wav.scp,speech,sound \\
        --train_data_path_and_name_and_type dump/train/text,text,text \\
        --train_shape_file exp/stats/train/speech_shape \\
        --valid_data_path_and_name_and_type dump/valid/wav.scp,speech,sound \\
        --valid_data_path_and_name_and_type dump/valid/text,text,text \\
        --valid_shape_file exp/stats/valid/speech_shape --output_dir exp/aac --resume true
"""

import argparse
from typing import List, Optional

from espnet_slam_aac.tasks.aac import AACTask
from espnet_slam_aac.utils import runner


def get_parser():
    return AACTask.get_parser()


def main(argv: Optional[List[str]] = None) -> None:
    # ESPnet parses the options and sets up its logging; a refused checkpoint, bad data or config, a non-finite
    # loss still end as one `error:` line
    runner.run(lambda _: AACTask.main(cmd=argv), argparse.Namespace())


if __name__ == "__main__":
    main()
