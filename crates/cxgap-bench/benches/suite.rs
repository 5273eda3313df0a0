//! `cargo bench -p cxgap-bench`: the whole suite, see `docs/benchmarks.md`.

// The allocator the cxgap binary uses, so the services measured here allocate as they do
// in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cxgap_bench::main()
}
