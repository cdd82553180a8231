"""Small helpers behind the researcher notebooks (``notebooks/*.ipynb``).

The notebooks stay thin: they call the library and this module, and plot. What lives here is
what a notebook needs that the rest of the library has no reason to own:

* the synthetic world, built once per (size, seed) and reused (``synthetic_world``);
* graph views: degree / board-size counts for log-log plots, the split summary;
* pictures of pins: an image grid with captions (``plot_pin_grid``) and a neighbor gallery
  (``plot_neighbor_gallery``) for sampler neighborhoods or embedding nearest neighbors;
* sampler comparisons: neighborhoods from any sampler (``sample_neighborhoods``), their overlap
  with true board-mates (``board_mate_overlap``), visit frequency by rank, throughput, and a
  restart-probability x walk-count sweep (``overlap_sweep``);
* training from a notebook: ``Trainer(callbacks=...)`` calls them after each step; a live loss
  plot (``LiveLossPlot``), ``train_run`` (train, or reuse a
  finished run), ``read_losses`` / ``plot_loss_curves`` from ``metrics.jsonl``;
* evaluation of runs (scored by ``training.evaluation.run_eval``): recall@k curves out of
  ``evaluation.json`` (``recall_curves``), labels and the 2-D embedding map.

Every random choice takes an explicit seed. Figures are returned (matplotlib ``Figure``), never
shown or saved here; a notebook displays them. Pin ids are internal ids (int64).
"""
from __future__ import annotations


from training.notebook_utils.display import format_table, plot_bars, show
from training.notebook_utils.pictures import load_pin_images, plot_neighbor_gallery, plot_pin_grid, plot_search_results
from training.notebook_utils.runs import (LiveLossPlot, demo_overrides, pin_labels, plot_embedding_map,
                                          plot_loss_curves, read_losses, recall_curves, run_dir_name, train_run)
from training.notebook_utils.samplers import (board_mate_marks, board_mate_overlap, board_mate_sets,
                                              measure_throughput, overlap_sweep, plot_overlap_sweep,
                                              plot_visit_frequencies, sample_neighborhoods, visit_frequency_by_rank)
from training.notebook_utils.world import (World, default_work_dir, degree_counts, hidden_groups, pick_board, pick_pins,
                                           plot_degree_distributions, plot_split_summary, split_summary,
                                           synthetic_world)

__all__ = [
    "World", "synthetic_world", "default_work_dir", "show", "plot_bars", "format_table",
    "degree_counts", "plot_degree_distributions", "split_summary", "plot_split_summary",
    "pick_pins", "hidden_groups", "pick_board", "load_pin_images", "plot_pin_grid", "plot_neighbor_gallery",
    "plot_search_results",
    "sample_neighborhoods", "board_mate_sets", "board_mate_overlap", "board_mate_marks",
    "visit_frequency_by_rank", "plot_visit_frequencies",
    "measure_throughput", "overlap_sweep", "plot_overlap_sweep",
    "LiveLossPlot", "train_run", "run_dir_name", "demo_overrides", "read_losses", "plot_loss_curves",
    "recall_curves", "pin_labels", "plot_embedding_map",
]

