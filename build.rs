//! Compiles `proto/onnx.proto` with prost-build. protox parses the schema in pure Rust, so building
//! intone needs no system `protoc`. Every `bytes` field becomes `bytes::Bytes`: decoding from a
//! `Bytes` buffer then slices tensor data out of the file buffer instead of copying it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "proto/onnx.proto";
    println!("cargo:rerun-if-changed={schema}");
    let descriptors = protox::compile([schema], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
