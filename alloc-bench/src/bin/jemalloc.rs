//! jemalloc, for comparison.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    rseq_alloc_bench::worker_main(String::new);
}
