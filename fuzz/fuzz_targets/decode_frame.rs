//! Feeds arbitrary bytes to the streaming frame decoder, split into chunks
//! as a socket would deliver them, and to the hello decoder. Nothing may
//! panic, and the decoder must never consume bytes without progress.
//!
//! In half of the runs the input is taken as a payload and wrapped in a
//! valid header with its CRC, so the fuzzer reaches the batch decoding
//! behind the checksum.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use raft_api::codec::{FrameCodec, FrameHeader, HELLO_LEN, Hello, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size and the frame limit, so the
    // fuzzer explores partial reads and both sides of the limit.
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knob % 64) + 1;
    let max_frame = if knob & 0x80 == 0 { 64 * 1024 } else { 256 };
    let codec = FrameCodec::new(0x5EED, max_frame);

    if let Some(hello) = input.get(..HELLO_LEN) {
        if let Ok(hello) = Hello::decode(hello) {
            let _ = codec.check_hello(&hello);
            assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        }
    }

    let wrapped;
    let input = if knob & 0x40 == 0 {
        input
    } else {
        let header = FrameHeader {
            version: PROTOCOL_VERSION,
            cluster_id: 0x5EED,
            payload_len: u32::try_from(input.len()).unwrap_or(u32::MAX),
            crc: crc32fast::hash(input),
        };
        wrapped = [&header.encode()[..], input].concat();
        &wrapped[..]
    };

    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(batch)) => {
                    assert!(buf.len() < before, "a frame was decoded from nothing");
                    // What decodes re-encodes to a frame that decodes the same.
                    let again = FrameCodec::new(0x5EED, usize::MAX)
                        .encode(&batch)
                        .expect("a decoded batch encodes");
                    let mut again = BytesMut::from(&again[..]);
                    let big = FrameCodec::new(0x5EED, usize::MAX);
                    assert_eq!(big.decode(&mut again), Ok(Some(batch)));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "nothing consumed while incomplete");
                    break;
                }
                // The connection would be closed here.
                Err(_) => return,
            }
        }
    }
});
