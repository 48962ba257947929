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
    mov {r0}, qword ptr [{r2} + {r1}]
    add qword ptr [{r0} + {d3}], {r3}
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
;   r3 = in(reg) __rseq_arg_n
;   d0 = const < :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE)
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   d3 = const :: core :: mem :: offset_of ! (Node , value)
;   abort = label (outcome 255)
; registers: 4
