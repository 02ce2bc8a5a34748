"""Editor support beside the pipeline: the language server and the Pygments lexer. Reads only
`cnnspec.language`, so it answers in milliseconds without TensorFlow.
"""
