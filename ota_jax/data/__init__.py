"""Host-side input pipelines (TFDS, tf.data). TensorFlow lives in this package.

Import the submodules you need; this package itself imports nothing heavy, so
``import ota_jax.data`` does not start TensorFlow:

* ``ota_jax.data.pipeline``: ``make_dataset`` / ``make_iterator`` batches for JAX.
* ``ota_jax.data.registry``: the table of supported datasets.
* ``ota_jax.data.shapes``: the synthetic ``ota_shapes`` TFDS builder.
* ``ota_jax.data.ground_truth``: original-pixel annotations for evaluation.
"""
