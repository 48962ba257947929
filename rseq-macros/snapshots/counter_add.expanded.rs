// The whole function `#[critical_section]` generates for the README's counter add, x86_64
// parts only (rseq-macros/src/snapshots.rs: counter_add_whole_function).

#[inline]
#[allow(
    clippy::needless_return,
    clippy::unnecessary_cast,
    clippy::unused_unit,
    unused_unsafe
)]
fn counter_add(counters: &PerCpu<AtomicUsize>, n: usize) {
    let _ = |__rseq_p: *const AtomicUsize| {
        fn __rseq_place<W: ::rseq::word::SharedWord>(_: *const W) {}
        __rseq_place(unsafe { ::core::ptr::addr_of!((* __rseq_p)) })
    };
    let __rseq_base_counters: usize = ::rseq::PerCpu::as_ptr(counters) as usize;
    let __rseq_arg_n: usize = n as usize;
    #[allow(unused_mut)]
    let mut __rseq_slots: [::core::mem::MaybeUninit<usize>; 0usize] = [const {
        ::core::mem::MaybeUninit::uninit()
    }; 0usize];
    #[cfg(target_arch = "x86_64")]
    #[allow(unused_mut)]
    let mut __rseq_code: u8 = {
        let __rseq_area = ::rseq::__private::area_ptr();
        'attempt: {
            unsafe {
                ::core::arch::asm!(
                    ".pushsection __rseq_cs, \"aw\"", ".balign 32", "20:", ".long 0, 0",
                    ".quad 21f", ".quad (22f - 21f)", ".quad 23f", ".popsection",
                    ".pushsection __rseq_cs_ptr_array, \"awR\"", ".balign 8",
                    ".quad 20b", ".popsection", "lea {idx}, [rip + 20b]",
                    "mov qword ptr [{area} + 8], {idx}", "21:",
                    "mov {idx:e}, dword ptr [{area} + 4]",
                    "cmp {idx:e}, dword ptr [rip + {limit}]", "jae 23f", ".if {d1}",
                    "shl {idx}, {d2}", ".else", "imul {idx}, {idx}, {d0}", ".endif",
                    "add qword ptr [{b_counters} + {idx}], {a_n}", "22:",
                    ".pushsection __rseq_failure, \"ax\"", ".byte 0x0f, 0xb9, 0x3d",
                    ".long 0x53053053", "23:", "jmp {abort}", ".popsection", area = in
                    (reg) __rseq_area, b_counters = in (reg) __rseq_base_counters, a_n =
                    in (reg) __rseq_arg_n, idx = out(reg) _, d0 = const < ::rseq::PerCpu
                    < AtomicUsize >> ::STRIDE, d1 = const
                    ::rseq::__private::stride_is_pow2(< ::rseq::PerCpu < AtomicUsize >>
                    ::STRIDE), d2 = const ::rseq::__private::stride_shift(<
                    ::rseq::PerCpu < AtomicUsize >> ::STRIDE), limit =
                    sym::rseq::__private::INDEX_LIMIT, abort = label { break 'attempt
                    255u8; }, options(nostack)
                )
            }
            0u8
        }
    };
    if __rseq_code == 255u8 && !::rseq::__private::fallback_decided() {
        __rseq_code = ::rseq::__private::cold_with(
            &mut __rseq_slots,
            move |__rseq_slots: &mut [::core::mem::MaybeUninit<usize>; 0usize]| -> u8 {
                #[cfg(target_arch = "x86_64")]
                let mut __rseq_attempt = |
                    __rseq_slots: &mut [::core::mem::MaybeUninit<usize>; 0usize],
                | -> u8 {
                    let _ = &__rseq_slots;
                    {
                        let __rseq_area = ::rseq::__private::area_ptr();
                        'attempt: {
                            unsafe {
                                ::core::arch::asm!(
                                    ".pushsection __rseq_cs, \"aw\"", ".balign 32", "20:",
                                    ".long 0, 0", ".quad 21f", ".quad (22f - 21f)", ".quad 23f",
                                    ".popsection", ".pushsection __rseq_cs_ptr_array, \"awR\"",
                                    ".balign 8", ".quad 20b", ".popsection",
                                    "lea {idx}, [rip + 20b]",
                                    "mov qword ptr [{area} + 8], {idx}", "21:",
                                    "mov {idx:e}, dword ptr [{area} + 4]",
                                    "cmp {idx:e}, dword ptr [rip + {limit}]", "jae 23f",
                                    ".if {d1}", "shl {idx}, {d2}", ".else",
                                    "imul {idx}, {idx}, {d0}", ".endif",
                                    "add qword ptr [{b_counters} + {idx}], {a_n}", "22:",
                                    ".pushsection __rseq_failure, \"ax\"",
                                    ".byte 0x0f, 0xb9, 0x3d", ".long 0x53053053", "23:",
                                    "jmp {abort}", ".popsection", area = in (reg) __rseq_area,
                                    b_counters = in (reg) __rseq_base_counters, a_n = in (reg)
                                    __rseq_arg_n, idx = out(reg) _, d0 = const < ::rseq::PerCpu
                                    < AtomicUsize >> ::STRIDE, d1 = const
                                    ::rseq::__private::stride_is_pow2(< ::rseq::PerCpu <
                                    AtomicUsize >> ::STRIDE), d2 = const
                                    ::rseq::__private::stride_shift(< ::rseq::PerCpu <
                                    AtomicUsize >> ::STRIDE), limit =
                                    sym::rseq::__private::INDEX_LIMIT, abort = label { break
                                    'attempt 255u8; }, options(nostack)
                                )
                            }
                            0u8
                        }
                    }
                };
                let __rseq_outcome: u8 = loop {
                    match ::rseq::__private::after_abort(false) {
                        ::rseq::__private::AbortAction::Retry => {}
                        ::rseq::__private::AbortAction::Attached => {}
                        ::rseq::__private::AbortAction::Fallback => break 255u8,
                        ::rseq::__private::AbortAction::TemporaryRegistration => {
                            break ::rseq::__private::with_temporary_registration(|| {
                                    let __rseq_outcome = __rseq_attempt(&mut *__rseq_slots);
                                    (__rseq_outcome != 255u8).then_some(__rseq_outcome)
                                })
                                .unwrap_or(255u8);
                        }
                    }
                    let __rseq_outcome = __rseq_attempt(&mut *__rseq_slots);
                    if __rseq_outcome != 255u8 {
                        break __rseq_outcome;
                    }
                };
                __rseq_outcome
            },
        );
    }
    if __rseq_code == 255u8 {
        __rseq_code = ::rseq::__private::cold_with(
            &mut __rseq_slots,
            move |__rseq_slots: &mut [::core::mem::MaybeUninit<usize>; 0usize]| -> u8 {
                ::rseq::__private::with_locked_slot(
                    ::rseq::current_cpu(),
                    move |__rseq_idx: usize| -> u8 {
                        'steps: {
                            unsafe {
                                ::rseq::__private::add_word(
                                    (__rseq_base_counters
                                        + __rseq_idx * <::rseq::PerCpu<AtomicUsize>>::STRIDE),
                                    __rseq_arg_n,
                                );
                            }
                            0u8
                        }
                    },
                )
            },
        );
    }
    match __rseq_code {
        0u8 => {}
        _ => ::core::unreachable!("rseq: unknown outcome of a critical section"),
    }
}
