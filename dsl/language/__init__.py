"""Layer 1, the language: `.cnn` text -> typed IR -> checked report (shapes, params, MACs, RF).

Pure Python: nothing here imports TensorFlow, numpy or anything above this package. The layer
table (`layers`) and the training-settings table (`settings`) are the two tables the rest reads.
"""
