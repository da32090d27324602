# The workflow entry point. The stage graph itself is declared once in src/jarvis/dag.py and shared with dvc.yaml.
#   snakemake --cores 2 all                 # local
#   snakemake --profile slurm all           # SLURM (after `make setup`, which links the profile)
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"


# Declared here, not in an included file: an include restores the default target it found (Snakemake 9), so a
# `default_target` inside one is lost and a bare `snakemake` would do nothing.
rule all:
    default_target: True
    input:
        final_targets(STAGES),
