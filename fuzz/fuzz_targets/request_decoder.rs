//! A request frame (without its size prefix) through the decoder:
//! API key and version, request header, request body.
#![no_main]

// The broker's allocator: the codec reserves arrays from wire counts, which
// jemalloc maps lazily (see the README's malformed-frame caveat).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skiff_broker::fuzzing::request_frame(data);
});
