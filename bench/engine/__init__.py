"""The engine: everything that imports TensorFlow and Keras lives in this folder.

Nothing outside it imports it at module level; the driver side (config, data, sweep, runlog,
report, executors) reaches it only inside the function that runs a model.
"""
