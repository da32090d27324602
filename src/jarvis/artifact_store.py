"""Artifact locations relative to the tracking store, so a store can be copied or moved (issue 10, MLflow).

MLflow 3.17 turns every local artifact location into an absolute path when an experiment is created
(``mlflow.utils.uri.resolve_uri_if_local``), so a copied ``mlruns/`` still points at the machine that wrote it. An
experiment created by :mod:`jarvis.tracking` instead gets the location ``jarvis-store:artifacts/<experiment>``, and
this repository, registered through MLflow's public plugin hook (the ``mlflow.artifact_repository`` entry point in
pyproject.toml), resolves it against the directory of the SQLite database in use:

    jarvis-store:artifacts/jarvis-tiny/<run id>/artifacts  ->  <dir of mlflow.db>/artifacts/jarvis-tiny/<run id>/...

The database is the tracking URI MLflow hands the repository (every client call passes it), else
``MLFLOW_TRACKING_URI``; the UI server has neither of its own, so ``scripts/mlflow-ui.sh`` exports the store it
serves. Anything else fails loudly, naming the variable to set: never a guess that lists an empty folder.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

SCHEME = "jarvis-store"
_PREFIX = f"{SCHEME}:"


def location(relative: str) -> str:
    """The store-relative artifact URI of ``relative`` (a POSIX path below the database's directory)."""
    return _PREFIX + str(_checked(relative))


def _checked(relative: str) -> PurePosixPath:
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"artifact location {relative!r} must be a relative path inside the store (no '..')")
    return path


def store_dir(tracking_uri: str | None) -> Path:
    """Directory of the SQLite database named by ``tracking_uri`` or, failing that, ``MLFLOW_TRACKING_URI``."""
    for uri in (tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri and uri.startswith("sqlite:///"):
            return Path(uri.removeprefix("sqlite:///")).resolve().parent
    raise RuntimeError(
        f"a {SCHEME}: artifact location is relative to the SQLite tracking store, and no store is known here"
        f" (tracking URI {tracking_uri!r}). Set MLFLOW_TRACKING_URI=sqlite:///<dir>/mlflow.db, or serve the store"
        " with scripts/mlflow-ui.sh."
    )


def resolve(artifact_uri: str, tracking_uri: str | None = None) -> Path:
    """The local directory a ``jarvis-store:`` URI names under the current store."""
    if not artifact_uri.startswith(_PREFIX):
        raise ValueError(f"not a {SCHEME}: URI: {artifact_uri!r}")
    return store_dir(tracking_uri) / _checked(artifact_uri.removeprefix(_PREFIX).lstrip("/"))


class StoreArtifactRepository(LocalArtifactRepository):
    """MLflow's local artifact repository, rooted where the current store keeps a ``jarvis-store:`` location."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        super().__init__(resolve(artifact_uri, tracking_uri).as_uri(), tracking_uri, registry_uri)
