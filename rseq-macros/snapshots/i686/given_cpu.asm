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
.long {moved}, 0
.popsection
    call 24f
24:
    movl (%esp), {idx}
    leal (20b - 24b)({idx}), {idx}
    movl {idx}, 8({area})
    popl {idx}
21:
    movl ({limit} - 24b)({idx}), {idx}
    cmpl {idx}, 4({area})
    jae 23f
    movl 4({area}), {idx}
    cmpl {a_cpu}, {idx}
    jne {moved}
.if {d1}
    shll ${d2}, {idx}
.else
    imull ${d0}, {idx}, {idx}
.endif
    addl {a_n}, ({b_counters}, {idx}, 1)
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   area = in(reg) __rseq_area
;   a_cpu = in(reg) __rseq_arg_cpu
;   b_counters = in(reg) __rseq_base_counters
;   idx = out(reg) _
;   d0 = const < :: rseq :: PerCpu < AtomicU64 >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicU64 >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicU64 >> :: STRIDE)
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   a_n = in(reg) __rseq_arg_n
;   moved = label (outcome 254)
;   abort = label (outcome 255)
; registers: 5
