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
    movl ({r2}), {r1}
    movl {r1}, 0({frame})
    cmpl {r3}, {r1}
    jne {f1}
    movl {k1}({frame}), {r3}
    movl {r3}, ({r2})
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   r0 = in(reg) __rseq_area
;   r1 = out(reg) _
;   r2 = inout(reg) __rseq_base_v => _
;   r3 = inout(reg) __rseq_arg_expect => _
;   frame = in(reg) __rseq_frame . as_mut_ptr ()
;   d0 = const < :: rseq :: PerCpu < AtomicUsize >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicUsize >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicUsize >> :: STRIDE)
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   f1 = label (outcome 1)
;   abort = label (outcome 255)
;   k1 = const 4
; frame
;   [0] result slot 0
;   [1] __rseq_arg_new
; registers: 5
