"""Upload a packed model (`espnet-slam-aac pack`) to the Hugging Face Hub.

Creates HF_REPO if needed and pushes every file of the folder (hidden files excepted). Needs a token with
write access: `hf auth login`, or HF_TOKEN in the environment. --dry_run lists what would be sent and
touches no network. Others then load the model by its id:
`espnet-slam-aac caption --model HF_REPO clips/*.wav`. With --space the same folder goes to a Gradio Space
(its app.py, requirements.txt and README keys): the model's demo page online.
"""

import argparse
from typing import List, Optional

from espnet_slam_aac.packaging.upload import upload
from espnet_slam_aac.utils import runner


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a packed model folder")
    parser.add_argument("--hf_repo", required=True, help="Hub repository id, e.g. me/slam-aac-clotho")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to push to [main]")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--dry_run", action="store_true", help="list the files, upload nothing")
    parser.add_argument("--space", action="store_true", help="to a Gradio Space: the model's demo page (app.py)")
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    print(
        upload(
            args.model_dir,
            args.hf_repo,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
            space=args.space,
        )
    )


if __name__ == "__main__":
    main()
