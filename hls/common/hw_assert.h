// Hardware-rule assertions of the ZSKIP_EMU_ASSERTS=1 emulation build: two
// lanes on one bank in one cycle, more accesses to a memory in a cycle than
// its ports, a stream read when empty, an address out of its array. A
// violation is recorded (the first one of a start) and the interpreter stops
// with ERR_HW_RULE; the emulation bridge returns the record, and host/emu.py
// raises DeviceError naming kernel, loop and rule. Without ZSKIP_EMU_ASSERTS
// the checks compile to nothing (they are C-simulation instrumentation only).
#ifndef ZSKIP_HW_ASSERT_H
#define ZSKIP_HW_ASSERT_H

namespace zskip {

struct hw_violation {
    bool set;
    const char *kernel;
    const char *loop;
    const char *rule;
};

#ifdef ZSKIP_EMU_ASSERTS
// plain data: zero-initialised, no constructor
inline hw_violation &hw_violation_record() {
    static hw_violation record;
    return record;
}
// the kernel the interpreter is running (set per descriptor by zskip_top)
inline const char *&hw_current_kernel() {
    static const char *name;
    return name;
}
inline void hw_report(const char *loop, const char *rule) {
    hw_violation &r = hw_violation_record();
    if (r.set) return;
    r.set = true;
    r.kernel = hw_current_kernel() ? hw_current_kernel() : "?";
    r.loop = loop;
    r.rule = rule;
}
#define ZSKIP_HW_ASSERT(cond, loop, rule) ((cond) ? (void)0 : ::zskip::hw_report(loop, rule))
#define ZSKIP_HW_KERNEL(name) (::zskip::hw_current_kernel() = (name))
#else
#define ZSKIP_HW_ASSERT(cond, loop, rule) ((void)0)
#define ZSKIP_HW_KERNEL(name) ((void)0)
#endif

}  // namespace zskip

#endif
