//! Compiles `proto/` with protox (a pure-Rust protobuf front end), so a fresh machine
//! needs no system `protoc`. The descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "cxgap/common/v1/common.proto",
    "cxgap/ingest/v1/ingest.proto",
    "cxgap/analytics/v1/analytics.proto",
    "cxgap/alerting/v1/alerting.proto",
    "cxgap/signals/v1/signals.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("cxgap_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // An ordered map for the attributes every event carries: no hashing to decode or
        // encode a handful of entries, and one event always encodes to the same bytes.
        .btree_map(".cxgap.common.v1.Segment.attributes")
        .compile_fds(fds)?;
    Ok(())
}
