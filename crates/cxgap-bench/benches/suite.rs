//! `cargo bench -p cxgap-bench`: the whole suite, see `docs/benchmarks.md`.

fn main() -> std::process::ExitCode {
    cxgap_bench::main()
}
