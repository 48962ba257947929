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
    cmpl $0, {r1}
    jne {f1}
    movl {k0}({frame}), {r1}
    movl {k1}({frame}), {r0}
    movl {k2}({frame}), {r3}
    movl {r2}, 12({frame})
    testl {r3}, {r3}
    jz 31f
30:
    movb ({r0}), {r2:l}
    movb {r2:l}, ({r1})
    incl {r0}
    incl {r1}
    decl {r3}
    jnz 30b
31:
    movl {k3}({frame}), {r3}
    movl {k0}({frame}), {r1}
    movl {r1}, ({r3})
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
;   r2 = inout(reg_abcd) __rseq_base_slots => _
;   r3 = out(reg) _
;   frame = in(reg) __rseq_frame . as_mut_ptr ()
;   d0 = const < :: rseq :: PerCpu < AtomicUsize >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicUsize >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicUsize >> :: STRIDE)
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   f1 = label (outcome 1)
;   abort = label (outcome 255)
;   k0 = const 0
;   k1 = const 4
;   k2 = const 8
;   k3 = const 12
; frame
;   [0] __rseq_arg_dst
;   [1] __rseq_arg_src
;   [2] __rseq_arg_len
;   [3] spill
; registers: 5
