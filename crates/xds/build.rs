//! Compiles the discovery protocol with protox (no protoc on the machine) and tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/meshwork/discovery/v1/discovery.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Resource bodies are shared, not copied, between the proxies that get them.
        .bytes(".meshwork.discovery.v1.Resource.body")
        .compile_fds(descriptors)?;
    Ok(())
}
