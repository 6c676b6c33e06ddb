// Co-simulation sizes, not board sizes (overlay/boards.ini sets those in
// config.h): how many words Vitis co-simulation moves through each m_axi port
// of zskip_top (the INTERFACE depth), and so how large the testbenches make
// their buffers (tb_runner.h). On a board the arenas are the host's buffers
// and these values bound nothing.
#ifndef ZSKIP_COSIM_H
#define ZSKIP_COSIM_H

// the testbenches' arenas, their programs (at most 64 descriptors of
// D_WORDS = 44 words) and stats records (S_WORDS = 32 words each)
#ifndef ZSKIP_COSIM_ARENA_WORDS
#define ZSKIP_COSIM_ARENA_WORDS 262144
#endif
// the same in 128-bit beats: the INTERFACE depth of the data ports
#define ZSKIP_COSIM_ARENA_BEATS (ZSKIP_COSIM_ARENA_WORDS / 4)
#ifndef ZSKIP_COSIM_PROGRAM_WORDS
#define ZSKIP_COSIM_PROGRAM_WORDS 2816
#endif
#ifndef ZSKIP_COSIM_STATS_WORDS
#define ZSKIP_COSIM_STATS_WORDS 2048
#endif

#endif
