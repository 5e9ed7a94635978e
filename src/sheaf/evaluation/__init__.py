"""Evaluation: fairness across clients, the run history, plots and the HTML report."""

from sheaf.evaluation.central import central_shards, combine_shards, evaluate_shards, shard_split
from sheaf.evaluation.divergence import divergence, loss_series
from sheaf.evaluation.fairness import FairnessSummary, jain_index, summarize, worst_fraction_mean
from sheaf.evaluation.history import ClientRecord, History, RoundRecord
from sheaf.evaluation.report import render_report
from sheaf.evaluation.traffic import TRAFFIC_KEYS, format_bytes, traffic_totals

__all__ = [
    "TRAFFIC_KEYS",
    "ClientRecord",
    "FairnessSummary",
    "History",
    "RoundRecord",
    "central_shards",
    "combine_shards",
    "divergence",
    "evaluate_shards",
    "format_bytes",
    "jain_index",
    "loss_series",
    "render_report",
    "shard_split",
    "summarize",
    "traffic_totals",
    "worst_fraction_mean",
]
