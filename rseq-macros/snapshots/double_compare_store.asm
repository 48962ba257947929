.pushsection __rseq_cs, "aw"
.balign 32
20:
.long 0, 0
.quad 21f
.quad (22f - 21f)
.quad 23f
.popsection
.pushsection __rseq_cs_ptr_array, "awR"
.balign 8
.quad 20b
.popsection
.pushsection __rseq_exit_point_array, "awR"
.balign 8
.quad 21f
.quad {f1}
.quad 21f
.quad {f2}
.popsection
    lea {r1}, [rip + 20b]
    mov qword ptr [{r0} + 8], {r1}
21:
    mov {r1:e}, dword ptr [{r0} + 4]
    cmp {r1:e}, dword ptr [rip + {limit}]
    jae 23f
.if {d1}
    shl {r1}, {d2}
.else
    imul {r1}, {r1}, {d0}
.endif
    mov {r0}, qword ptr [{r2} + {r1} + {d3}]
    cmp {r0}, {r3}
    jne {f1}
    mov {r3}, qword ptr [{r2} + {r1} + {d4}]
    cmp {r3}, {r4}
    jne {f2}
    mov qword ptr [{r2} + {r1} + {d5}], {r5}
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
;   r2 = in(reg) __rseq_base_p
;   r3 = inout(reg) __rseq_arg_e => _
;   r4 = in(reg) __rseq_arg_e2
;   r5 = in(reg) __rseq_arg_new
;   d0 = const < :: rseq :: PerCpu < Pair >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < Pair >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < Pair >> :: STRIDE)
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   d3 = const :: core :: mem :: offset_of ! (Pair , a)
;   f1 = label (outcome 1)
;   d4 = const :: core :: mem :: offset_of ! (Pair , b)
;   f2 = label (outcome 2)
;   d5 = const :: core :: mem :: offset_of ! (Pair , a)
;   abort = label (outcome 255)
; registers: 6
