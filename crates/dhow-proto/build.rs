//! Build script: compiles the public API protos (`proto/dhow/v1/*.proto`) and the
//! node-to-node protos (`proto/dhow/internal/v1/*.proto`) into prost messages and tonic
//! clients and servers, and writes the public API's file descriptor set for gRPC server
//! reflection. Uses a vendored `protoc`, so no system protobuf install is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let protos = protos_in(&proto_root.join("dhow/v1"))?;
    let internal = protos_in(&proto_root.join("dhow/internal/v1"))?;

    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    // The well-known types (google/protobuf/*.proto) that ship with the vendored protoc.
    let wkt_include = protoc_bin_vendored::include_path()?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("dhow_v1_descriptor.bin"))
        .compile_protos(&protos, &[proto_root.clone(), wkt_include.clone()])?;
    tonic_prost_build::configure().compile_protos(&internal, &[proto_root, wkt_include])?;
    Ok(())
}

fn protos_in(dir: &std::path::Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut protos: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Ok(protos)
}
