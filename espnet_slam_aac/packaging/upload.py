"""Push a packed model folder to the Hugging Face Hub (``HF_TOKEN`` or ``hf auth login``); a dry run lists what
would be sent without touching the network."""

from pathlib import Path
from typing import List, Optional, Tuple

from espnet_slam_aac import __version__
from espnet_slam_aac.errors import ConfigError, SlamAACError
from espnet_slam_aac.packaging.layout import CARD, CONFIG, META, WEIGHTS, human
from espnet_slam_aac.utils.checkpoint import HUB_ID
from espnet_slam_aac.utils.config import PathLike


def check_packed(folder: PathLike) -> Path:
    folder = Path(folder)
    missing = [n for n in (META, CONFIG, WEIGHTS, CARD) if not (folder / n).is_file()]
    if missing:
        raise ConfigError(
            f"{folder} is not a packed model (missing {', '.join(missing)}); make one with `espnet-slam-aac pack`"
        )
    return folder


def upload_plan(folder: PathLike) -> List[Tuple[str, int]]:
    """(relative path, bytes) of every file an upload sends, sorted."""
    folder = check_packed(folder)
    return sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def upload(
    folder: PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    dry_run: bool = False,
    space: bool = False,
) -> str:
    """Push a packed folder to ``repo_id`` (created if needed); returns its URL (or the plan, dry run).
    ``space``: to a Gradio Space, the model's demo (``packaging/space.py``), instead of a model repository."""
    if not HUB_ID.match(repo_id):
        raise ConfigError(f"--hf_repo {repo_id!r} is not a Hugging Face repository id (org/name)")
    plan = upload_plan(folder)
    if space and not (Path(folder) / "app.py").is_file():
        raise ConfigError(f"{folder} has no app.py: pack it again with this version of `espnet-slam-aac pack`")
    repo_type, url = ("space", f"https://huggingface.co/spaces/{repo_id}") if space else ("model", None)
    url = url or f"https://huggingface.co/{repo_id}"
    if dry_run:
        total = sum(n for _, n in plan)
        lines = [f"would upload {len(plan)} files ({human(total)}) to {url}:"]
        return "\n".join(lines + [f"  {path}  {human(n)}" for path, n in plan])
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(
            repo_id, private=private, exist_ok=True, repo_type=repo_type, space_sdk="gradio" if space else None
        )
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            revision=revision,
            ignore_patterns=[".*", "**/.*"],
            commit_message=commit_message or f"Upload SLAM-AAC model (espnet-slam-aac {__version__})",
        )
    except Exception as err:  # auth, network, offline mode, permissions: all end here with what to do
        raise SlamAACError(
            f"upload to {url} failed ({type(err).__name__}: {err}). Log in with "
            "`hf auth login` or set HF_TOKEN (a token with write access), check the network, and unset "
            "HF_HUB_OFFLINE"
        ) from err
    return str(getattr(info, "commit_url", None) or url)
