"""Training loop, data pipeline, CLI and evaluation: composes graph, sampling and pinclip.

Where things live (and where a new piece goes):

* the training loop: ``config.py`` (the config schema), ``data.py`` (seed batches -> sampler ->
  ``TrainBatch``), ``trainer.py`` + ``step.py`` (the loop and one optimizer step),
  ``checkpoint.py``, ``distributed.py``, ``logging_utils.py``, ``text_cache.py`` (frozen text
  tower features);
* the command line: ``cli.py`` and one module per command in ``commands/`` (imports inside
  ``run``, so ``pinclip --help`` stays fast);
* evaluation: ``evaluation/`` (metrics, neighborhood quality, baselines, report, plots, and the
  trainer's quick held-out check ``evaluation/quick_eval.py``);
* export and serving: ``embed.py`` (every pin's embeddings of a run's store),
  ``embed_dataset.py`` (of any dataset directory), ``export.py`` (a run's model as a
  ``pinclip.load`` model directory), ``ann.py`` (faiss indexes over embeddings), ``search.py``
  (a text, image or pin query against an index); ``faiss_probe.py`` is the one place that
  detects faiss;
* notebooks: ``notebook_utils/`` (helpers the researcher notebooks share).
"""
