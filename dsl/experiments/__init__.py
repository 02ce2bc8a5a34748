"""Layer 4, experiments: many runs at once (studies over a shared store) and their comparison.
Imports the layers below; never the CLI.
"""
