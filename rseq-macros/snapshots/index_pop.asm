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
    add {b_stacks}, {idx}
    mov {v_len}, qword ptr [{b_stacks} + {d3}]
    cmp {v_len}, 0
    je {f1}
    mov {v_last}, {v_len}
    add {v_last}, -1
    mov {v_item}, qword ptr [{b_stacks} + {v_last}*8 + {d4}]
    mov qword ptr [{slots} + 0], {v_item}
    mov qword ptr [{b_stacks} + {d5}], {v_last}
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   area = in(reg) __rseq_area
;   slots = in(reg) __rseq_slots . as_mut_ptr ()
;   b_stacks = inout(reg) __rseq_base_stacks => _
;   idx = out(reg) _
;   d0 = const < :: rseq :: PerCpu < Stack >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < Stack >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < Stack >> :: STRIDE)
;   v_len = out(reg) _
;   v_last = out(reg) _
;   v_item = out(reg) _
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   d3 = const :: core :: mem :: offset_of ! (Stack , len)
;   f1 = label (outcome 1)
;   d4 = const :: core :: mem :: offset_of ! (Stack , items)
;   d5 = const :: core :: mem :: offset_of ! (Stack , len)
;   abort = label (outcome 255)
; registers: 7
