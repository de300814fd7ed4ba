//! PLAIN's message and SCRAM's client-first / client-final (split at the
//! first 0xff byte) through the SASL parsers.
#![no_main]

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skiff_broker::fuzzing::sasl(data);
});
