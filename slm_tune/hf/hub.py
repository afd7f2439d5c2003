"""Push an export folder to the Hugging Face Hub (huggingface_hub's create_repo and upload_folder;
the token from HF_TOKEN or the login cache, as huggingface_hub finds it)."""

from __future__ import annotations

import importlib
from pathlib import Path

from slm_tune.errors import UserError


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a failed upload raises: huggingface_hub's HTTP client's errors are not OSErrors (httpx
    before huggingface_hub 2, httpx2 from it)."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    for client in ("httpx", "httpx2"):
        try:
            errors += (importlib.import_module(client).HTTPError,)
        except (ImportError, AttributeError):
            pass
    return errors


def push_to_hub(folder: Path, repo: str) -> str:
    """Upload `folder` to the model repository `repo` (created if missing); its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                                   commit_message="Upload a model exported by slm-tune")
    except _network_errors() as e:
        raise UserError(f"pushing to the Hub repository {repo!r} failed ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}); "
                        f"the export is kept in {folder}; check HF_TOKEN (or `hf auth login`) and the network, "
                        "then run the export again with --push-to-hub") from None
    return str(getattr(commit, "repo_url", "") or f"https://huggingface.co/{repo}")
