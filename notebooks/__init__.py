"""zskip's Jupyter notebooks, as the package PYNQ's ``pynq get-notebooks`` delivers.

pyproject.toml registers this package under the ``pynq.notebooks`` entry point;
get-notebooks copies every file of this folder except this one.
"""
