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
    mov {v_current}, qword ptr [{b_slots} + {idx}]
    cmp {v_current}, 0
    jne {f1}
    mov {m0d}, {a_dst}
    mov {m0s}, {a_src}
    mov {m0n}, {a_len}
    test {m0n}, {m0n}
    jz 31f
30:
    mov {m0t:l}, byte ptr [{m0s}]
    mov byte ptr [{m0d}], {m0t:l}
    inc {m0s}
    inc {m0d}
    dec {m0n}
    jnz 30b
31:
    mov qword ptr [{b_slots} + {idx}], {a_dst}
22:
.pushsection __rseq_failure, "ax"
.byte 0x0f, 0xb9, 0x3d
.long 0x53053053
23:
    jmp {abort}
.popsection

; operands
;   area = in(reg) __rseq_area
;   b_slots = in(reg) __rseq_base_slots
;   idx = out(reg) _
;   d0 = const < :: rseq :: PerCpu < AtomicUsize >> :: STRIDE
;   d1 = const :: rseq :: __private :: stride_is_pow2 (< :: rseq :: PerCpu < AtomicUsize >> :: STRIDE)
;   d2 = const :: rseq :: __private :: stride_shift (< :: rseq :: PerCpu < AtomicUsize >> :: STRIDE)
;   v_current = out(reg) _
;   limit = sym :: rseq :: __private :: INDEX_LIMIT
;   f1 = label (outcome 1)
;   m0d = out(reg) _
;   m0s = out(reg) _
;   m0n = out(reg) _
;   m0t = out(reg) _
;   a_dst = in(reg) __rseq_arg_dst
;   a_src = in(reg) __rseq_arg_src
;   a_len = in(reg) __rseq_arg_len
;   abort = label (outcome 255)
; registers: 11
