//! Compiles the `.proto` contracts with a vendored `protoc`, so no system install is needed.

use std::path::PathBuf;

const PROTOS: [&str; 5] = [
    "switchboard/common/v1/principal.proto",
    "switchboard/auth/v1/auth.proto",
    "switchboard/conversation/v1/conversation.proto",
    "switchboard/llm/v1/llm.proto",
    "switchboard/llm/v1/usage.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Pass-through bodies stay `Bytes`: decoding them is a reference count, not a copy.
    config.bytes(["."]);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("switchboard_descriptor.bin"))
        .compile_with_config(config, &PROTOS.map(PathBuf::from), &[PathBuf::from("."), well_known])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
