// Synthesis-form emulation shim (ZSKIP_EMU_FORM=synthesis, host/emu.py): the
// kernels are compiled with -D__SYNTHESIS__ so that g++ sees the synthesis
// branch, but hls4ml's open-source ap_int.h serves C simulation only and
// refuses __SYNTHESIS__. It is included here with the macro hidden. Vitis
// HLS never sees this folder (run_hls.tcl does not put it on the path).
#pragma push_macro("__SYNTHESIS__")
#undef __SYNTHESIS__
#include_next <ap_int.h>
#pragma pop_macro("__SYNTHESIS__")
