# One script for every rule: the rule name selects the library function (hybridreduce.jobs.JOBS).
import os
import sys

# Use the library that ships with this workflow, so any environment with the dependencies runs it (Snakemake's
# conda envs cannot pip-install the repository itself). Snakemake sets __file__ to this script's real path.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))

from hybridreduce.jobs import run_from_snakemake  # noqa: E402

run_from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script directive)
