//! mimalloc, for comparison.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    rseq_alloc_bench::worker_main(String::new);
}
