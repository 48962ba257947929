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
.if {d1}
    shll ${d2}, {idx}
.else
    imull ${d0}, {idx}, {idx}
.endif
    movl ({b_p}, {idx}, 1), {v_node}
    addl {a_n}, {d3}({v_node})
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
;   d0 = const < :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicPtr < Node > >> :: STRIDE)
;   v_node = out(reg) _
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   a_n = in(reg) __rseq_arg_n
;   d3 = const :: core :: mem :: offset_of ! (Node , value)
;   abort = label (outcome 255)
; registers: 5
