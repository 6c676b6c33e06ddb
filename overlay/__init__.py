"""Board data, Vivado block-design scripts and the PYNQ overlay class."""
