//! The baseline: glibc's malloc, the allocator a Rust program on Linux has by default.

fn main() {
    rseq_alloc_bench::worker_main(String::new);
}
