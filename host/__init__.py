"""Accelerator runtime: the Accelerator interface, backends (emu, pynq, remote), device programs, CLI."""
