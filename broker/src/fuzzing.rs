//! Entry points for the fuzz targets (`fuzz/`) and their stable smoke test:
//! everything a client sends before it is trusted — request frames, PLAIN
//! and SCRAM messages — must parse to an error, never panic.

use crate::auth::parse_plain;
use crate::auth::scram::{ScramCredential, ScramMechanism, ScramServer};

/// One request frame through the decoder (frame → header → request).
pub fn request_frame(data: &[u8]) {
    let _ = crate::handlers::decode_request(data);
}

/// One input through the SASL parsers: PLAIN's message, then SCRAM's
/// client-first and (split at the first 0xff byte) client-final.
pub fn sasl(data: &[u8]) {
    let _ = parse_plain(data);
    let (first, last) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    for mech in ScramMechanism::ALL {
        let lookup = |_: &str| Some(ScramCredential::from_password(mech, b"pw", b"salt", 1));
        if let Ok((mut server, _)) = ScramServer::start(mech, first, "servernonce", lookup) {
            let _ = server.finish(last);
            let _ = server.finish(last);
        }
    }
}

// The unit tests run on the broker's allocator: the codec sizes arrays from
// wire counts, and only jemalloc's lazily reserved blocks make that harmless
// (see the README's malformed-frame caveat). The system allocator would
// abort on the first mutated count.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(test)]
mod tests;
