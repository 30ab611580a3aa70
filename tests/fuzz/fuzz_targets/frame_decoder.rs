//! Arbitrary bytes, cut into arbitrary chunks, through the frame decoder:
//! it must never panic, and every frame it accepts must encode back to
//! bytes that decode to the same frame.
#![no_main]

use bytes::BytesMut;
use connector::proto::frame::{Decoder, DEFAULT_MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let mut d = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
    for part in bytes.chunks(usize::from(chunk).max(1)) {
        d.extend(part);
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    let mut out = BytesMut::new();
                    frame.encode(DEFAULT_MAX_FRAME_BYTES, &mut out).expect("a decoded frame encodes");
                    let mut again = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
                    again.extend(&out);
                    let back = again.next_frame().expect("re-encoded frame decodes").expect("whole frame");
                    assert_eq!(back, frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
