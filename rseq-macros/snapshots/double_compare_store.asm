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
    lea {idx}, [rip + 20b]
    mov qword ptr [{area} + 8], {idx}
21:
    mov {idx:e}, dword ptr [{area} + 4]
    cmp {idx:e}, dword ptr [rip + {limit}]
    jae 23f
.if {d1}
    shl {idx}, {d2}
.else
    imul {idx}, {idx}, {d0}
.endif
    mov {v_a}, qword ptr [{b_p} + {idx} + {d3}]
    cmp {v_a}, {a_e}
    jne {f1}
    mov {v_b}, qword ptr [{b_p} + {idx} + {d4}]
    cmp {v_b}, {a_e2}
    jne {f2}
    mov qword ptr [{b_p} + {idx} + {d5}], {a_new}
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   area = in(reg) __rseq_area
;   b_p = in(reg) __rseq_base_p
;   idx = out(reg) _
;   d0 = const < :: rseq :: PerCpu < Pair >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < Pair >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < Pair >> :: STRIDE)
;   v_a = out(reg) _
;   v_b = out(reg) _
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   d3 = const :: core :: mem :: offset_of ! (Pair , a)
;   f1 = label (outcome 1)
;   a_e = in(reg) __rseq_arg_e
;   d4 = const :: core :: mem :: offset_of ! (Pair , b)
;   f2 = label (outcome 2)
;   a_e2 = in(reg) __rseq_arg_e2
;   a_new = in(reg) __rseq_arg_new
;   d5 = const :: core :: mem :: offset_of ! (Pair , a)
;   abort = label (outcome 255)
; registers: 8
