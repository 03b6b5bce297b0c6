//! Compiles `proto/` with protox, a pure-Rust protobuf compiler, so that no
//! `protoc` is needed on the build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "../../proto/certd/v1/ca.proto",
        "../../proto/certd/v1/admin.proto",
        "../../proto/spiffe/workload.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["../../proto"])?;
    tonic_prost_build::configure()
        // Malformed messages are INVALID_ARGUMENT, not INTERNAL (api::codec).
        .codec_path("crate::api::codec::ProtoCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
