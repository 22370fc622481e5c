//! Generated code for Dhow's public gRPC API (package `dhow.v1`, from `proto/dhow/v1`):
//! prost messages, tonic clients and servers, and the file descriptor set for gRPC server
//! reflection; and the node-to-node package `dhow.internal.v1`. Generated code only:
//! conversions to domain types live in the server crate.

/// The `dhow.v1` package: messages, `*_client` and `*_server` modules.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    tonic::include_proto!("dhow.v1");
}

/// The `dhow.internal.v1` package: Raft traffic between the nodes of a cluster.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("dhow.internal.v1");
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of the `dhow.v1` protos, for gRPC
/// server reflection (e.g. `tonic_reflection`'s `register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dhow_v1_descriptor.bin"));
