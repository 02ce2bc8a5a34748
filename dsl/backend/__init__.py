"""Layer 2, the backend: a checked spec -> an ordinary Keras model, and the CPU facts
(native bf16 or not) that decide how it is computed. Imports only `cnnspec.language`.
"""
