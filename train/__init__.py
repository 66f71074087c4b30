"""Layer 4: the ``ota-train`` command, installed as the package ``ota_train``.

- `main`: the command line (absl flags, ``ml_collections`` config files, overrides).
- `trainer`: `train_and_evaluate`, the training loop.
- `builders`: library configs (model, loss, optimizer, postprocess) from a ConfigDict.
- `input_data`: the training stream (resumable at any step) and the evaluation pass.
- `checkpoints`: orbax checkpoints of the train state, never of a non-finite one.
- `metrics_writer`: ``metrics.jsonl`` and TensorBoard event files.
- `evaluate`: COCO evaluation of a train state on the validation split.
- `visualize`: detections drawn on validation images (``detections.png``).
- `configs`: the config files (``shapes``, ``smoke``, ``coco_fcos_r50_ota_1x``).
"""
