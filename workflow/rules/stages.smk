# One rule per stage plan (jarvis.plan; its `cmd` is already shell-quoted, paths are quoted with `:q`).
# Per-stage values are bound through `params:` (eager), never read from loop variables inside `shell:` (late binding). A stage's param values reach Snakemake as an input file
# (jarvis.dag.sync_params_files), dated against dvc.lock, so both tools rerun the same stages after a params edit.


for _stage in STAGES:

    rule:
        name:
            _stage.id
        input:
            snakemake_inputs(_stage),
            params_file(_stage),
        output:
            rule_outputs(_stage),
            _stage.metrics,
        log:
            _stage.log,
        params:
            cmd=_stage.cmd,
            launcher=launcher(_stage),
            done=f"{DONE_DIR}/{_stage.id}",
        threads: _stage.resources["cpus"]
        priority: PRIORITY[_stage.id]
        resources:
            **slurm_resources(_stage),
        retries: TRAINING_RETRIES if _stage.kind in ("pretrain", "finetune") else 0
        shell:
            "{params.launcher}{params.cmd} > {log:q} 2>&1 && mkdir -p $(dirname {params.done:q}) && touch {params.done:q}"
