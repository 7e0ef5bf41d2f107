"""Hyperparameter search over train configs with Optuna (``cellax hpo``; see ``docs/hpo.md``)."""

from cellax.hpo.config import HpoConfig, load_hpo_config
from cellax.hpo.report import write_report
from cellax.hpo.study import check_storage, run_study

__all__ = ["HpoConfig", "check_storage", "load_hpo_config", "run_study", "write_report"]
