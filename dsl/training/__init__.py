"""Layer 3, training: CIFAR-10 data, the one training loop, and the run folder it writes
(records, checkpoints, plots). Imports only the language and the backend.
"""
