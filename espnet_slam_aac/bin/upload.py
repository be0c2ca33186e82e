"""Upload a packed model (`espnet-slam-aac pack`) to the Hugging Face Hub.

Creates HF_REPO if needed and pushes every file of the folder (hidden files excepted). Needs a token with
write access: `hf auth login`, or HF_TOKEN in the environment. --dry_run lists what would be sent and
touches no network. Others then load the model by its id:
`espnet-slam-aac caption --model HF_REPO clips/*.wav`.
"""

import argparse
import sys
from typing import List, Optional

from espnet_slam_aac.errors import SlamAACError
from espnet_slam_aac.packaging.upload import upload


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a packed model folder")
    parser.add_argument("--hf_repo", required=True, help="Hub repository id, e.g. me/slam-aac-clotho")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to push to [main]")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--dry_run", action="store_true", help="list the files, upload nothing")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        print(
            upload(
                args.model_dir,
                args.hf_repo,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
                dry_run=args.dry_run,
            )
        )
    except SlamAACError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
