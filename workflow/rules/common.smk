# Shared helpers: load and validate params.yaml with jarvis.config (the same schema the stages use) and expand the
# stage graph. A params.yaml typo fails here, at DAG load, naming the key.
from pathlib import Path

from jarvis.dag import commit_to_dvc, final_targets, load, params_file, snakemake_inputs, sync_params_files

PARAMS, RAW, STAGES = load("params.yaml")
PARAMS_STALE = sync_params_files(RAW, STAGES)
DONE_DIR = ".snakemake/jarvis-done"  # one marker per stage that succeeded, until dvc.lock records it


def is_dir_out(path):
    """Declared outputs without a file suffix are directories (checkpoints, caches, data roots)."""
    return "." not in Path(path).name


def slurm_resources(stage):
    """Map params.yaml resources to snakemake-executor-plugin-slurm resources (stack-facts §8)."""
    r = stage.resources
    out = {"runtime": r["runtime"], "mem_mb": r["mem_mb"], "cpus_per_task": r["cpus"]}
    nodes = r.get("nodes", 1)
    gpus = r.get("gpus_per_node", 0) if "nodes" in r else r.get("gpus", 0)
    if gpus:
        out["tasks_per_gpu"] = 0  # one task drives all GPUs of the node (torchrun), robust across plugin versions
        if nodes > 1:
            out["gres"] = f"gpu:{gpus}"  # per node
        else:
            out["gpu"] = gpus
    if nodes > 1:  # one torchrun per node, launched by srun (the jarvis CLI runs torchrun itself)
        out.update(nodes=nodes, tasks=nodes, mpi="srun")
    return out


def launcher(stage):
    r = stage.resources
    return "srun --ntasks-per-node=1 --kill-on-bad-exit=1 " if r.get("nodes", 1) > 1 else ""


onstart:
    # Create the MLflow SQLite store and experiments once, on the head node, before parallel jobs race to migrate a
    # fresh schema (stack-facts §5: "a schema-migration race when many jobs hit a fresh DB").
    from jarvis import tracking

    tracking.init_store(["components", "pipeline", *PARAMS.run.experiments])


onsuccess:
    # Record what Snakemake produced in dvc.lock so `dvc status` agrees (stack-facts §6: commit only the stages that
    # actually ran — a blind `dvc commit -f` would bless stale outputs).
    done = Path(DONE_DIR)
    if done.is_dir() and Path(".dvc").is_dir():
        ids = sorted(p.name for p in done.iterdir())
        if ids:
            commit_to_dvc(ids, STAGES)
        for p in done.iterdir():
            p.unlink()
