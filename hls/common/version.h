// The accelerator's ID/version register value. The kernel writes it to the
// `version` output register; the host driver (host/program.py parses this
// file) refuses a bitstream whose register differs. Bump it whenever the
// descriptor layout, the opcodes or the stats record change.
#ifndef ZSKIP_VERSION_H
#define ZSKIP_VERSION_H

#define ZSKIP_VERSION 0x5A530003u

#endif
