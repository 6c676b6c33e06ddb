"""The accelerator IP as the host sees it: descriptor and stats formats (``program``), the
AXI-lite register map (``register_map``) and the precision spec (``precision``), each parsed
from the HLS sources so no fact is written twice. Imports only ``zskip.models`` and
``zskip.overlay``; knows no device."""
