//! A machine (or a container) with one possible CPU: the fallback has a single CPU slot lock, so
//! a signal handler that interrupted its own thread's fallback section finds no other CPU slot
//! to take. It takes the spare, with asynchronous signals blocked, while its thread's hold of
//! the CPU slot keeps them deliverable. `rseq-stress --slots 1` gives the fallback one CPU slot
//! on any machine; each op runs under its own `timeout`, so a hang fails the test (a handler
//! that waited for a CPU slot makes `signal-handler` hang here), and must end with exact
//! results.

use rseq_tests::{field, run_in, RunMode};

const STRESS: &str = env!("CARGO_BIN_EXE_rseq-stress");

#[test]
fn one_slot_neither_hangs_nor_loses_updates() {
    // `signal-handler`: the handler runs sections on the interrupted thread; the others run
    // under a signal storm (whose handler runs nothing), `churn` with threads coming and going,
    // `fork` with a child taking over the table.
    for op in ["signal-handler", "counter", "list", "churn", "fork"] {
        let out = run_in(
            RunMode::Disabled,
            "timeout",
            &[
                "120",
                STRESS,
                op,
                "--slots",
                "1",
                "--threads",
                "3",
                "--iters",
                "20000",
                "--signals",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{op} with one slot: {} (124: it hung)",
            out.status
        );
        assert_eq!(field(&stdout, "result"), Some("ok"), "{op}");
        assert_eq!(field(&stdout, "fallback_slots"), Some("1"), "{op}");
        assert!(
            field(&stdout, "mode").is_some_and(|m| m.starts_with("Fallback")),
            "{op}: {:?}",
            field(&stdout, "mode")
        );
        if op == "signal-handler" {
            let handled: usize = field(&stdout, "handler_ops")
                .and_then(|n| n.parse().ok())
                .expect("handler_ops=N");
            assert!(handled > 0, "the handler ran no section");
        }
    }
}
