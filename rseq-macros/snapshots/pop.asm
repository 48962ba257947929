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
    mov {idx:e}, dword ptr [{area} + 24]
    cmp {idx:e}, dword ptr [rip + {limit}]
    jae 23f
.if {d1}
    shl {idx}, {d2}
.else
    imul {idx}, {idx}, {d0}
.endif
    mov {v_head}, qword ptr [{b_heads} + {idx}]
    mov qword ptr [{slots} + 0], {v_head}
    cmp {v_head}, 0
    je {f1}
    mov {v_next}, qword ptr [{v_head} + {d3}]
    mov qword ptr [{b_heads} + {idx}], {v_next}
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
;   b_heads = in(reg) __rseq_base_heads
;   idx = out(reg) _
;   d0 = const < :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE)
;   v_head = out(reg) _
;   v_next = out(reg) _
;   limit = sym :: rseq :: __private :: MM_CID_LIMIT
;   f1 = label (outcome 1)
;   d3 = const :: core :: mem :: offset_of ! (Node , next)
;   abort = label (outcome 255)
; registers: 6
