//! Length-prefixed frames for Hearth's stream protocols.
//!
//! A frame is a `u32` big-endian length followed by that many bytes. The
//! reader checks the length against the caller's limit before it reads the
//! body, and grows its buffer only as bytes actually arrive, so a peer that
//! announces a large frame and then stalls costs no memory.

use std::io;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The length prefix announces more than the caller accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The caller's limit.
        max: usize,
    },
    /// The stream ended inside a frame (in its length prefix or its body).
    #[error("stream ended inside a frame: got {received} of {expected} bytes")]
    Truncated {
        /// Bytes the frame part should have had (4 for the prefix).
        expected: usize,
        /// Bytes that arrived before the end of the stream.
        received: usize,
    },
    /// The stream failed.
    #[error("reading a frame failed")]
    Io(#[from] io::Error),
}

/// Writes one frame and flushes it.
///
/// Fails with [`io::ErrorKind::InvalidInput`] when `bytes` does not fit a
/// `u32` length.
pub async fn write_frame(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes does not fit a u32 length", bytes.len()),
        )
    })?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Reads one frame of at most `max` bytes.
///
/// Returns `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        let n = stream.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(Error::Truncated {
                expected: header.len(),
                received: filled,
            });
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header);
    let expected = usize::try_from(len).map_err(|_| Error::TooLarge { len, max })?;
    if expected > max {
        return Err(Error::TooLarge { len, max });
    }
    // `read_to_end` grows the buffer with the data received, not with the
    // announced length; the first allocation is capped for the same reason.
    let mut body = Vec::with_capacity(expected.min(64 * 1024));
    (&mut *stream)
        .take(u64::from(len))
        .read_to_end(&mut body)
        .await?;
    if body.len() < expected {
        return Err(Error::Truncated {
            expected,
            received: body.len(),
        });
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use proptest::prelude::*;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn frames_round_trip_and_clean_eof_is_none() {
        let mut out = Cursor::new(Vec::new());
        block_on(write_frame(&mut out, b"hello")).unwrap();
        block_on(write_frame(&mut out, b"")).unwrap();
        let mut input = Cursor::new(out.into_inner());
        assert_eq!(
            block_on(read_frame(&mut input, 16)).unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(block_on(read_frame(&mut input, 16)).unwrap().unwrap(), b"");
        assert!(block_on(read_frame(&mut input, 16)).unwrap().is_none());
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_body_is_read() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7; 32]);
        let mut input = Cursor::new(bytes);
        let err = block_on(read_frame(&mut input, 1024)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    len: u32::MAX,
                    max: 1024
                }
            ),
            "{err:?}"
        );
        assert_eq!(input.position(), 4, "no body byte may be consumed");
    }

    #[test]
    fn huge_announced_frame_that_stalls_is_truncated_not_allocated() {
        // With no limit, a 4 GiB announcement followed by 3 bytes must end in
        // `Truncated`, having allocated only for what arrived.
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let err = block_on(read_frame(&mut Cursor::new(bytes), usize::MAX)).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { received: 3, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_prefix_is_an_error() {
        let err = block_on(read_frame(&mut Cursor::new(vec![0, 0]), 16)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    expected: 4,
                    received: 2
                }
            ),
            "{err:?}"
        );
    }

    proptest! {
        #[test]
        fn any_frames_round_trip(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let mut out = Cursor::new(Vec::new());
            for frame in &frames {
                block_on(write_frame(&mut out, frame)).unwrap();
            }
            let mut input = Cursor::new(out.into_inner());
            for frame in &frames {
                let got = block_on(read_frame(&mut input, 300)).unwrap();
                prop_assert_eq!(got.as_deref(), Some(frame.as_slice()));
            }
            prop_assert!(block_on(read_frame(&mut input, 300)).unwrap().is_none());
        }

        #[test]
        fn arbitrary_bytes_never_yield_more_than_max(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..32) {
            let mut input = Cursor::new(bytes);
            while let Ok(Some(frame)) = block_on(read_frame(&mut input, max)) {
                prop_assert!(frame.len() <= max);
            }
        }
    }
}
