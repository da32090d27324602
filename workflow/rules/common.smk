# Shared helpers: load and validate params.yaml with jarvis.config (the same loader and schema the stages use:
# duplicated keys, unsafe names and cross-field errors fail here, at DAG load, naming the key) and expand the stage
# graph. `--config k=v` is refused naming the keys: the stages read params.yaml, so it would only change the DAG.
from pathlib import Path

from jarvis.config import reject_runner_config
from jarvis.dag import (
    commit_to_dvc,
    final_targets,
    is_dir_out,
    launcher,
    load,
    params_file,
    priorities,
    require_fresh,
    slurm_resources,
    snakemake_inputs,
    sync_params_files,
)

reject_runner_config(config)
STAGES = load("params.yaml")
require_fresh(STAGES)  # a dvc.yaml of another graph: fail naming `jarvis dag render` (the two tools must agree)
PARAMS_STALE = sync_params_files(STAGES)
PRIORITY = priorities(STAGES)  # the stages that unblock the most work start first (jarvis.dag.priorities)
# A training job killed by preemption (or a node failure) exits non-zero after saving a checkpoint (SIGTERM -> save
# -> exit 143, jarvis.training): Snakemake resubmits it and the stage resumes from _work/ (its outputs were never
# written). Other stages fail at once: their failures are bugs to look at.
TRAINING_RETRIES = 2
DONE_DIR = ".snakemake/jarvis-done"  # one marker per stage that succeeded, until dvc.lock records it


# `snakemake --report report.html` embeds the report stage's tables and figures with these captions (rst files in
# workflow/report/, paths relative to the rule file stages.smk).
CAPTIONS = {"table.csv": "table", "deltas.csv": "deltas", "loss_curves.png": "loss_curves", "scores.png": "scores"}


def rule_outputs(stage):
    outs = []
    for out in stage.outs:
        name = Path(out).name
        if is_dir_out(out):
            outs.append(directory(out))
        elif stage.kind == "report" and (name in CAPTIONS or name.startswith("sweep-")):
            caption = CAPTIONS.get(name, "sweep")
            outs.append(report(out, caption=f"../report/{caption}.rst", category="Comparison"))
        else:
            outs.append(out)
    return outs


onstart:
    # Create the MLflow SQLite store and experiments once, on the head node, before parallel jobs race to migrate a
    # fresh schema (stack-facts §5: "a schema-migration race when many jobs hit a fresh DB").
    from jarvis import tracking

    tracking.init_store(sorted({s.mlflow_experiment for s in STAGES}))


def strip_dir_timestamps():
    """Snakemake touches a `.snakemake_timestamp` into every directory() output after its job (its mtime carrier;
    without it Snakemake reads the directory's own mtime). Declared folders hold only their files: a model folder
    is loaded, exported and uploaded as it is. Removed when the run ends (`.dvcignore` covers a run in progress)."""
    import os

    for stage in STAGES:
        for out in stage.outs:
            stamp = Path(out, ".snakemake_timestamp")
            if is_dir_out(out) and stamp.is_file():
                # Removing a file bumps its folder's mtime: put back the job's time, or every downstream job (and
                # the job itself, against its inputs) would look outdated to the next `snakemake -n`.
                mtime = stamp.stat().st_mtime
                stamp.unlink()
                os.utime(out, (mtime, mtime))


onerror:
    strip_dir_timestamps()


onsuccess:
    strip_dir_timestamps()
    # Record what Snakemake produced in dvc.lock so `dvc status` agrees (stack-facts §6: commit only the stages that
    # actually ran — a blind `dvc commit -f` would bless stale outputs).
    done = Path(DONE_DIR)
    if done.is_dir() and Path(".dvc").is_dir():
        ids = sorted(p.name for p in done.iterdir())
        if ids:
            commit_to_dvc(ids, STAGES)
        for p in done.iterdir():
            p.unlink()
