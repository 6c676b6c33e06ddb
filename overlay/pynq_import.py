"""Every import of pynq in zskip goes through :func:`import_pynq`, which turns pynq's
best-known install failure into a message saying the fix."""


class PynqImportError(ImportError):
    """pynq is missing or cannot be imported; the message says how to fix the install."""


def import_pynq():
    """The ``pynq`` module, or :class:`PynqImportError` saying what to install.

    pynqutils (a pynq dependency) imports ``pkg_resources``, which setuptools
    >= 81 no longer ships; zskip's dependencies pin ``setuptools<81``, but a
    later ``pip install -U setuptools`` (or a package needing a newer one)
    brings the failure back.
    """
    try:
        import pynq
    except ModuleNotFoundError as e:
        if e.name == "pkg_resources":
            try:
                from importlib.metadata import version
                installed = f"setuptools {version('setuptools')} is installed"
            except Exception:
                installed = "setuptools is missing"
            raise PynqImportError(f"pynq cannot be imported: it needs pkg_resources, which setuptools >= 81 no "
                                  f"longer ships ({installed}); run: pip install 'setuptools<81'") from e
        if e.name == "pynq":
            raise PynqImportError("pynq is not installed: pip install 'pynq>=3.0' (zskip depends on it)") from e
        raise
    return pynq
