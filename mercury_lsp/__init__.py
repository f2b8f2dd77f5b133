"""mercury_lsp: the language server that asks the mercury engine for inline completions."""

__version__ = "0.1.0"
