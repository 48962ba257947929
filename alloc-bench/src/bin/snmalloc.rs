//! snmalloc, for comparison.

#[global_allocator]
static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;

fn main() {
    rseq_alloc_bench::worker_main(String::new);
}
