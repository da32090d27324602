# The workflow entry point. The stage graph itself is declared once in src/jarvis/dag.py and shared with dvc.yaml.
#   snakemake --cores 2 all                 # local
#   snakemake --profile slurm all           # SLURM (after `make setup`, which links the profile)
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"
