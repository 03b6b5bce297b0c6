//! The HTTP/2 `:authority` of requests on the agent's Unix socket: what a
//! client sends there is accepted, whatever it is.
//!
//! On a Unix socket the authority names nothing, and clients disagree on it:
//! grpc-go sends `localhost`, gRPC C-core (Python, C++, Ruby, PHP, C#)
//! sends the socket path percent-encoded (`%2Frun%2Fagent.sock`), grpc-java
//! sends the path itself. The HTTP/2 server (h2) parses `:authority` as a URI
//! authority and resets every stream whose authority is not one, so without
//! this module every C-core and Java SPIFFE client is refused.
//!
//! [`AuthorityRewriter`] sits between the socket and the server, on the bytes
//! the client sends: it passes frames through, but decodes each header block
//! (HPACK, with the client's dynamic table), replaces an `:authority` that is
//! not a valid URI authority with `localhost`, and encodes the block again
//! for the server with a table of its own. Every block is re-encoded, changed
//! or not, since the server's decoder must follow one encoder's table.
//!
//! It owns only the client-to-server byte stream's framing; it never looks at
//! what the server sends and makes no decision about the request.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use loona_hpack::{Decoder, Encoder};

/// What a client's connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The HPACK table size the server decodes with: h2's default, which the
/// agent's server never changes, so clients encode within it (RFC 7541 §4.2)
/// and the re-encoded blocks must too.
const HPACK_TABLE_SIZE: usize = 4096;
/// The largest frame payload the server accepts: h2's default
/// SETTINGS_MAX_FRAME_SIZE, which the agent never raises. Re-encoded blocks
/// are split into frames of at most this size.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// The most header-block bytes held for one request: far above what any
/// Workload API call sends, and a bound on what a client can make the agent
/// buffer.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// What replaces an authority the server would refuse.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

/// Why the client's bytes cannot be passed on; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    #[error("header block of {0} bytes exceeds the {MAX_HEADER_BLOCK}-byte limit")]
    HeaderBlockTooLarge(usize),
    #[error("HPACK decoding failed: {0:?}")]
    Hpack(loona_hpack::decoder::DecoderError),
    #[error("a frame of type {0:#x} came between a header block and its CONTINUATION")]
    InterleavedFrame(u8),
    #[error("CONTINUATION frame without a header block before it")]
    UnexpectedContinuation,
    #[error("HEADERS frame too short for its padding and priority fields")]
    MalformedHeaders,
}

impl From<RewriteError> for std::io::Error {
    fn from(error: RewriteError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
    }
}

/// Where in the client's byte stream the rewriter is.
enum State {
    /// Before the connection preface has been seen whole.
    Preface,
    /// At a frame boundary.
    FrameStart,
    /// Inside a frame that is passed on as it is; this many bytes remain.
    PassThrough(usize),
    /// Not an HTTP/2 connection with prior knowledge: every byte is passed
    /// on and the server refuses it as it would without the rewriter.
    Opaque,
}

/// A header block whose CONTINUATION frames have not all arrived yet.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
}

/// Rewrites the client-to-server half of one HTTP/2 connection.
pub(crate) struct AuthorityRewriter {
    state: State,
    /// Client bytes not yet processed (an incomplete frame, say).
    input: BytesMut,
    pending: Option<PendingBlock>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityRewriter {
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        decoder.set_max_table_size(HPACK_TABLE_SIZE);
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(HPACK_TABLE_SIZE);
        AuthorityRewriter {
            state: State::Preface,
            input: BytesMut::new(),
            pending: None,
            decoder,
            encoder,
        }
    }

    /// Takes bytes read from the client and appends to `output` what the
    /// server is to read. Bytes that do not yet form a whole unit (a frame
    /// header, a header-carrying frame) are kept for the next call.
    pub fn feed(&mut self, bytes: &[u8], output: &mut BytesMut) -> Result<(), RewriteError> {
        self.input.extend_from_slice(bytes);
        loop {
            match self.state {
                State::Opaque => {
                    output.extend_from_slice(&self.input.split());
                    return Ok(());
                }
                State::Preface => {
                    let seen = self.input.len().min(PREFACE.len());
                    if self.input[..seen] != PREFACE[..seen] {
                        self.state = State::Opaque;
                        continue;
                    }
                    if seen < PREFACE.len() {
                        return Ok(());
                    }
                    output.extend_from_slice(&self.input.split_to(PREFACE.len()));
                    self.state = State::FrameStart;
                }
                State::PassThrough(remaining) => {
                    let take = remaining.min(self.input.len());
                    output.extend_from_slice(&self.input.split_to(take));
                    if take < remaining {
                        self.state = State::PassThrough(remaining - take);
                        return Ok(());
                    }
                    self.state = State::FrameStart;
                }
                State::FrameStart => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let length = usize::from(self.input[0]) << 16
                        | usize::from(self.input[1]) << 8
                        | usize::from(self.input[2]);
                    let kind = self.input[3];
                    if kind != FRAME_HEADERS && kind != FRAME_CONTINUATION {
                        if self.pending.is_some() {
                            return Err(RewriteError::InterleavedFrame(kind));
                        }
                        output.extend_from_slice(&self.input.split_to(FRAME_HEADER_LEN));
                        self.state = State::PassThrough(length);
                        continue;
                    }
                    if length > MAX_HEADER_BLOCK {
                        return Err(RewriteError::HeaderBlockTooLarge(length));
                    }
                    if self.input.len() < FRAME_HEADER_LEN + length {
                        return Ok(());
                    }
                    let mut frame = self.input.split_to(FRAME_HEADER_LEN + length).freeze();
                    let flags = frame[4];
                    let stream_id =
                        u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
                    frame.advance(FRAME_HEADER_LEN);
                    if kind == FRAME_HEADERS {
                        self.start_block(stream_id, flags, frame)?;
                    } else {
                        self.continue_block(stream_id, frame)?;
                    }
                    if flags & FLAG_END_HEADERS != 0 {
                        self.finish_block(output)?;
                    }
                }
            }
        }
    }

    fn start_block(
        &mut self,
        stream_id: u32,
        flags: u8,
        mut payload: Bytes,
    ) -> Result<(), RewriteError> {
        if self.pending.is_some() {
            return Err(RewriteError::InterleavedFrame(FRAME_HEADERS));
        }
        let mut padding = 0;
        if flags & FLAG_PADDED != 0 {
            if payload.is_empty() {
                return Err(RewriteError::MalformedHeaders);
            }
            padding = usize::from(payload.get_u8());
        }
        let mut priority = None;
        if flags & FLAG_PRIORITY != 0 {
            if payload.len() < 5 {
                return Err(RewriteError::MalformedHeaders);
            }
            let mut fields = [0u8; 5];
            payload.copy_to_slice(&mut fields);
            priority = Some(fields);
        }
        if padding > payload.len() {
            return Err(RewriteError::MalformedHeaders);
        }
        payload.truncate(payload.len() - padding);
        self.pending = Some(PendingBlock {
            stream_id,
            end_stream: flags & FLAG_END_STREAM != 0,
            priority,
            fragment: BytesMut::from(&payload[..]),
        });
        Ok(())
    }

    fn continue_block(&mut self, stream_id: u32, payload: Bytes) -> Result<(), RewriteError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(RewriteError::UnexpectedContinuation);
        };
        if pending.stream_id != stream_id {
            return Err(RewriteError::InterleavedFrame(FRAME_CONTINUATION));
        }
        let total = pending.fragment.len() + payload.len();
        if total > MAX_HEADER_BLOCK {
            return Err(RewriteError::HeaderBlockTooLarge(total));
        }
        pending.fragment.extend_from_slice(&payload);
        Ok(())
    }

    /// Decodes the complete block, fixes its authority and writes it out as
    /// HEADERS (and CONTINUATION) frames.
    fn finish_block(&mut self, output: &mut BytesMut) -> Result<(), RewriteError> {
        let Some(pending) = self.pending.take() else {
            return Err(RewriteError::UnexpectedContinuation);
        };
        let mut headers = self
            .decoder
            .decode(&pending.fragment)
            .map_err(RewriteError::Hpack)?;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !is_uri_authority(value) {
                *value = LOCAL_AUTHORITY.to_vec();
            }
        }
        let mut block = Vec::with_capacity(pending.fragment.len() + 16);
        self.encoder
            .encode_into(
                headers
                    .iter()
                    .map(|(name, value)| (name.as_slice(), value.as_slice())),
                &mut block,
            )
            .map_err(|_| RewriteError::MalformedHeaders)?;

        let mut first = BytesMut::new();
        if let Some(priority) = pending.priority {
            first.extend_from_slice(&priority);
        }
        let room = MAX_FRAME_PAYLOAD - first.len();
        let (head, mut rest) = block.split_at(room.min(block.len()));
        first.extend_from_slice(head);
        let mut flags = 0;
        if pending.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if pending.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        write_frame(output, FRAME_HEADERS, flags, pending.stream_id, &first);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(MAX_FRAME_PAYLOAD.min(rest.len()));
            rest = after;
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            write_frame(output, FRAME_CONTINUATION, flags, pending.stream_id, chunk);
        }
        Ok(())
    }
}

fn is_uri_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn write_frame(output: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let length = payload.len();
    output.reserve(FRAME_HEADER_LEN + length);
    output.put_u8((length >> 16) as u8);
    output.put_u8((length >> 8) as u8);
    output.put_u8(length as u8);
    output.put_u8(kind);
    output.put_u8(flags);
    output.put_u32(stream_id);
    output.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's connection: the preface, a SETTINGS frame, then one request
    /// whose block is split over HEADERS (padded, with priority) and
    /// CONTINUATION, encoded by an encoder of the client's own.
    fn client_bytes(authority: &[u8], client: &mut Encoder<'static>, stream_id: u32) -> Vec<u8> {
        let block = client.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b":authority", authority),
            (b"workload.spiffe.io", b"true"),
        ]);
        let (head, tail) = block.split_at(block.len() / 2);
        let mut out = BytesMut::new();
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 15]); // priority
        payload.extend_from_slice(head);
        payload.extend_from_slice(&[0, 0, 0]);
        write_frame(
            &mut out,
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            stream_id,
            &payload,
        );
        write_frame(
            &mut out,
            FRAME_CONTINUATION,
            FLAG_END_HEADERS,
            stream_id,
            tail,
        );
        write_frame(&mut out, 0x0, 0x1, stream_id, b"\0\0\0\0\0");
        out.to_vec()
    }

    /// A frame as the server reads it: stream id, type, and its decoded
    /// header fields (name, value).
    type ServerFrame = (u32, u8, Vec<(Vec<u8>, Vec<u8>)>);

    /// Decodes what the server would read, as the server would.
    fn server_view(bytes: &[u8], server: &mut Decoder<'static>) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        let mut rest = bytes;
        let mut block = Vec::new();
        while rest.len() >= FRAME_HEADER_LEN {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            let mut payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + length];
            rest = &rest[FRAME_HEADER_LEN + length..];
            if kind == FRAME_HEADERS && flags & FLAG_PRIORITY != 0 {
                payload = &payload[5..];
            }
            if kind == FRAME_HEADERS || kind == FRAME_CONTINUATION {
                block.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    frames.push((stream, kind, server.decode(&block).unwrap()));
                    block.clear();
                }
            } else {
                frames.push((stream, kind, Vec::new()));
            }
        }
        assert!(rest.is_empty(), "a partial frame was passed on");
        frames
    }

    fn authority_of(headers: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
        &headers.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    #[test]
    fn percent_encoded_and_path_authorities_become_localhost_and_valid_ones_stay() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        let mut settings = BytesMut::new();
        write_frame(&mut settings, 0x4, 0, 0, &[0, 4, 0, 0, 0x10, 0]);
        input.extend_from_slice(&settings);
        input.extend(client_bytes(b"%2Ftmp%2Fagent.sock", &mut client, 1));
        input.extend(client_bytes(b"/run/spire/agent.sock", &mut client, 3));
        // The same authority again: the client now sends it from its table.
        input.extend(client_bytes(b"/run/spire/agent.sock", &mut client, 5));
        input.extend(client_bytes(b"localhost:1234", &mut client, 7));

        // Fed one byte at a time, as a slow socket might deliver it.
        let mut rewriter = AuthorityRewriter::new();
        let mut output = BytesMut::new();
        for byte in &input {
            rewriter
                .feed(std::slice::from_ref(byte), &mut output)
                .unwrap();
        }
        assert_eq!(&output[..PREFACE.len()], PREFACE);
        let frames = server_view(&output[PREFACE.len()..], &mut Decoder::new());
        let headers: Vec<_> = frames.iter().filter(|f| f.1 == FRAME_HEADERS).collect();
        assert_eq!(headers.len(), 4);
        assert_eq!(authority_of(&headers[0].2), b"localhost");
        assert_eq!(authority_of(&headers[1].2), b"localhost");
        assert_eq!(authority_of(&headers[2].2), b"localhost");
        assert_eq!(authority_of(&headers[3].2), b"localhost:1234");
        for (stream, _, block) in &headers {
            assert!(
                block.contains(&(
                    b":path".to_vec(),
                    b"/SpiffeWorkloadAPI/FetchX509SVID".to_vec()
                )),
                "stream {stream}"
            );
            assert!(block.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())));
        }
        // SETTINGS and DATA frames pass through, in order, on their streams.
        let kinds: Vec<_> = frames.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(
            kinds,
            vec![
                (0, 4),
                (1, 1),
                (1, 0),
                (3, 1),
                (3, 0),
                (5, 1),
                (5, 0),
                (7, 1),
                (7, 0)
            ]
        );
    }

    #[test]
    fn a_large_block_is_split_into_frames_the_server_accepts() {
        let mut client = Encoder::new();
        let big = vec![b'x'; 40_000];
        let block = client.encode([(&b":authority"[..], &b"%2Fsock"[..]), (b"x-big", &big[..])]);
        let mut input = PREFACE.to_vec();
        let mut frames = BytesMut::new();
        let (a, b) = block.split_at(16_000);
        let (b, c) = b.split_at(16_000);
        write_frame(&mut frames, FRAME_HEADERS, FLAG_END_STREAM, 1, a);
        write_frame(&mut frames, FRAME_CONTINUATION, 0, 1, b);
        write_frame(&mut frames, FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c);
        input.extend_from_slice(&frames);
        let mut output = BytesMut::new();
        AuthorityRewriter::new().feed(&input, &mut output).unwrap();
        let mut rest = &output[PREFACE.len()..];
        let mut count = 0;
        while !rest.is_empty() {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(length <= MAX_FRAME_PAYLOAD);
            if count == 0 {
                assert_eq!(
                    rest[4] & FLAG_END_STREAM,
                    FLAG_END_STREAM,
                    "END_STREAM kept"
                );
            }
            rest = &rest[FRAME_HEADER_LEN + length..];
            count += 1;
        }
        assert!(count >= 3);
        let view = server_view(&output[PREFACE.len()..], &mut Decoder::new());
        assert_eq!(authority_of(&view[0].2), b"localhost");
        assert_eq!(view[0].2[1].1.len(), 40_000);
    }

    #[test]
    fn hostile_input_closes_the_connection_without_panicking() {
        let mut too_big = PREFACE.to_vec();
        too_big.extend_from_slice(&[0x10, 0, 0, FRAME_HEADERS, 0, 0, 0, 0, 1]);
        let mut orphan = PREFACE.to_vec();
        orphan.extend_from_slice(&[
            0,
            0,
            1,
            FRAME_CONTINUATION,
            FLAG_END_HEADERS,
            0,
            0,
            0,
            1,
            0x82,
        ]);
        let mut bad_padding = PREFACE.to_vec();
        bad_padding.extend_from_slice(&[
            0,
            0,
            2,
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            0,
            0,
            0,
            1,
            9,
            0x82,
        ]);
        let mut bad_hpack = PREFACE.to_vec();
        bad_hpack.extend_from_slice(&[0, 0, 1, FRAME_HEADERS, FLAG_END_HEADERS, 0, 0, 0, 1, 0xff]);
        let mut interleaved = PREFACE.to_vec();
        interleaved.extend_from_slice(&[0, 0, 1, FRAME_HEADERS, 0, 0, 0, 0, 1, 0x82]);
        interleaved.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        for input in [too_big, orphan, bad_padding, bad_hpack, interleaved] {
            let mut output = BytesMut::new();
            assert!(AuthorityRewriter::new().feed(&input, &mut output).is_err());
        }
    }

    #[test]
    fn a_connection_that_is_not_http2_passes_through_untouched() {
        let mut output = BytesMut::new();
        let mut rewriter = AuthorityRewriter::new();
        rewriter.feed(b"GET / HTTP/1.1\r\n", &mut output).unwrap();
        rewriter.feed(b"\r\n", &mut output).unwrap();
        assert_eq!(&output[..], b"GET / HTTP/1.1\r\n\r\n");
    }
}
