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
    add qword ptr [{b_counters} + {idx}], {a_n}
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   area = in(reg) __rseq_area
;   b_counters = in(reg) __rseq_base_counters
;   idx = out(reg) _
;   d0 = const < :: rseq :: PerCpu < AtomicU64 >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicU64 >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicU64 >> :: STRIDE)
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   a_n = in(reg) __rseq_arg_n
;   abort = label (outcome 255)
; registers: 4
