# One script for every rule: the rule name selects the library function (hybridreduce.jobs.JOBS).
from hybridreduce.jobs import run_from_snakemake

run_from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake's script directive)
