//! Fuzz target: `decode_request` on arbitrary bytes (a request frame without
//! its size prefix, as the connection hands it over).
//!
//! It must never panic, and never ask for memory out of proportion to the
//! frame: libFuzzer's -malloc_limit_mb (default: the 2 GB RSS limit) reports
//! an allocation that a length prefix alone asked for. The crate test
//! `server/tests/request_decode_twin.rs` runs the same check on seeded
//! mutations of real requests with stable Rust.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_server::protocol::{DecodeError, decode_request};

fuzz_target!(|data: &[u8]| {
    match decode_request(Bytes::copy_from_slice(data)) {
        Ok(request) => {
            assert_eq!(request.api_key as i16, i16::from_be_bytes([data[0], data[1]]));
            assert_eq!(request.version, i16::from_be_bytes([data[2], data[3]]));
        }
        Err(DecodeError::Unsupported { correlation_id, .. }) => {
            assert!(data.len() >= 8, "Unsupported needs a header");
            assert_eq!(
                correlation_id,
                i32::from_be_bytes([data[4], data[5], data[6], data[7]])
            );
        }
        Err(DecodeError::Malformed(_)) => {}
    }
});
