"""The ``hm3`` command line: one module per verb, each parsing, calling one function, printing."""
