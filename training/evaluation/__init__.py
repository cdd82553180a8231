"""Evaluation library: retrieval metrics, neighborhood quality, baselines and plots.

    from training.evaluation import retrieval_metrics, image_text_retrieval, pin_retrieval
    from training.evaluation import board_mate_positives, walk_neighbor_overlap, synthetic_purity
    from training.evaluation import method_metrics   # one method's metrics.json keys
    from training.evaluation.baselines import frozen_text_embeddings, train_graph_baseline
    from training.evaluation.plots import plot_recall_curves, ...
    from training.evaluation.significance import write_significance   # significance.json (paired bootstrap)
    from training.evaluation.heads import trained_heads, select_headline_head   # fair headline heads

The trainer's quick held-out check is ``training.evaluation.quick_eval`` (imported from its module).
Baselines and plots are imported from their modules (they pull in transformers / PyG /
matplotlib).
"""
from training.evaluation.neighborhood import (alignment, board_coherence, knn, neighbor_overlap, purity_at_k,
                                              synthetic_purity, uniformity, walk_neighbor_overlap)
from training.evaluation.retrieval import (Positives, as_positives, board_mate_positives,
                                           expected_first_positive_rank, exact_topk, faiss_available,
                                           image_text_retrieval, pin_retrieval, retrieval_metrics)
from training.evaluation.summary import method_metrics

__all__ = [
    "Positives", "as_positives", "exact_topk", "retrieval_metrics", "expected_first_positive_rank",
    "image_text_retrieval", "board_mate_positives", "pin_retrieval", "faiss_available",
    "knn", "neighbor_overlap", "walk_neighbor_overlap", "board_coherence", "alignment", "uniformity",
    "purity_at_k", "synthetic_purity", "method_metrics",
]
