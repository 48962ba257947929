//! `test_support::set_fallback_slots` gives the fallback fewer CPU slot locks than possible
//! CPUs (as on a smaller machine), never more: a fallback body works on the per-CPU slot its
//! lock names, and per-CPU data has one slot per possible CPU, plus the spare. Its own binary, so that no section
//! has created the lock table before.

use rseq_rt::test_support::{set_fallback_slots, FallbackSlotsError};

#[test]
fn more_slots_than_possible_cpus_are_refused_and_a_second_setting_too() {
    let possible = rseq_rt::sys::possible_cpus();
    assert_eq!(
        set_fallback_slots(possible + 1),
        Err(FallbackSlotsError::MoreThanPossibleCpus(possible))
    );
    let message = FallbackSlotsError::MoreThanPossibleCpus(possible).to_string();
    assert!(message.contains("possible CPU"), "{message}");
    assert_eq!(set_fallback_slots(1), Ok(()));
    assert_eq!(rseq_rt::fallback::slots(), 2, "one CPU slot and the spare");
    assert_eq!(
        set_fallback_slots(1),
        Err(FallbackSlotsError::AlreadySet(1)),
        "the table exists now"
    );
}
