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
    add {b_bufs}, {idx}
    mov {v_len}, qword ptr [{b_bufs} + {d3}]
    cmp {v_len}, 16
    jae {f1}
    mov qword ptr [{b_bufs} + {v_len}*8 + {d4}], {a_item}
    mov {v_grown}, {v_len}
    add {v_grown}, 1
    mov qword ptr [{b_bufs} + {d5}], {v_grown}
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   area = in(reg) __rseq_area
;   b_bufs = inout(reg) __rseq_base_bufs => _
;   idx = out(reg) _
;   d0 = const < :: rseq :: PerCpu < Buffer >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < Buffer >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < Buffer >> :: STRIDE)
;   v_len = out(reg) _
;   v_grown = out(reg) _
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   d3 = const :: core :: mem :: offset_of ! (Buffer , len)
;   f1 = label (outcome 1)
;   a_item = in(reg) __rseq_arg_item
;   d4 = const :: core :: mem :: offset_of ! (Buffer , items)
;   d5 = const :: core :: mem :: offset_of ! (Buffer , len)
;   abort = label (outcome 255)
; registers: 6
