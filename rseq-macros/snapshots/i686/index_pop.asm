.pushsection __rseq_cs, "aw"
.balign 32
20:
.long 0, 0
.long 21f, 0
.long (22f - 21f), 0
.long 23f, 0
.popsection
.pushsection __rseq_cs_ptr_array, "awR"
.balign 8
.long 20b, 0
.popsection
.pushsection __rseq_exit_point_array, "awR"
.balign 8
.long 21f, 0
.long {f1}, 0
.popsection
    call 24f
24:
    movl (%esp), {r1}
    leal (20b - 24b)({r1}), {r1}
    movl {r1}, 8({r0})
    popl {r1}
21:
    movl ({limit} - 24b)({r1}), {r1}
    cmpl {r1}, 4({r0})
    jae 23f
    movl 4({r0}), {r1}
.if {d1}
    shll ${d2}, {r1}
.else
    imull ${d0}, {r1}, {r1}
.endif
    addl {r1}, {r2}
    movl {d3}({r2}), {r1}
    cmpl $0, {r1}
    je {f1}
    movl {r1}, {r0}
    addl $-1, {r0}
    movl {d4}({r2}, {r0}, 4), {r1}
    movl {r1}, 0({r3})
    movl {r0}, {d5}({r2})
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   r0 = inout(reg) __rseq_area => _
;   r1 = out(reg) _
;   r2 = inout(reg) __rseq_base_stacks => _
;   r3 = in(reg) __rseq_slots . as_mut_ptr ()
;   d0 = const < :: rseq :: PerCpu < Stack >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < Stack >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < Stack >> :: STRIDE)
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   d3 = const :: core :: mem :: offset_of ! (Stack , len)
;   f1 = label (outcome 1)
;   d4 = const :: core :: mem :: offset_of ! (Stack , items)
;   d5 = const :: core :: mem :: offset_of ! (Stack , len)
;   abort = label (outcome 255)
; registers: 4
