//! Decoder for the S3 `aws-chunked` content encoding.
//!
//! An S3 client that streams an upload (PutObject, UploadPart) instead of hashing the whole body
//! first sends it as a series of chunks, each a hexadecimal size line followed by that many payload
//! bytes and a CRLF, ended by a zero-size chunk. The request says so with `Content-Encoding:
//! aws-chunked` and one of these `x-amz-content-sha256` values:
//!
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: every size line carries `;chunk-signature=<64 hex>`,
//!   and the stream ends `0;chunk-signature=<64 hex>\r\n\r\n`.
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: as above, but the zero-size chunk is followed by
//!   trailer lines (`x-amz-checksum-crc32:<base64>`, `x-amz-trailer-signature:<hex>`) and a blank
//!   line.
//! - `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: plain `<hex size>\r\n` lines, then `0\r\n`, trailer
//!   lines such as `x-amz-checksum-crc64nvme:<base64>`, and a blank line.
//!
//! [`AwsChunkedDecoder`] is sans-IO: the caller feeds it the body in whatever slices the socket
//! delivers (split anywhere, even inside a size line or a CRLF) and gets the payload bytes back.
//! Chunk extensions of any name are accepted; with a [`ChunkSigner`] (`with_signer`, a request
//! whose signature was verified) every chunk's `chunk-signature` is checked as the chunk ends, the
//! final empty one included, and with signed trailers the `x-amz-trailer-signature` once the
//! trailers end: a chunk whose signature does not match fails the body (`Signature`). Like real SDK peers it tolerates a stream whose final blank line
//! is missing, but only once the caller says, through [`AwsChunkedDecoder::finish`], that the input
//! ended.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::sigv4::{trailer_sha256, ChunkSigner};

/// Longest chunk header or trailer line, CRLF included; a signed header is about 90 bytes, so 4096
/// leaves ample room for unknown extensions while bounding what a peer can make us buffer.
pub const LINE_BYTES_MAX: usize = 4096;

/// Most trailer fields accepted; SDKs send one checksum and at most one signature, so 16 is generous
/// while keeping a hostile peer from growing the trailer list without bound.
pub const TRAILER_COUNT_MAX: usize = 16;

/// Largest size one chunk may declare; S3 caps a single PUT or part at 5 GiB, so no valid chunk
/// can be larger, and the bound keeps size arithmetic far from overflow.
pub const CHUNK_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// Why an aws-chunked body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsChunkedError {
    /// Bad framing: the text says what (e.g. "bad chunk size", "missing CRLF after chunk data").
    Malformed(&'static str),
    /// A chunk or trailer signature is missing or does not match its chain.
    Signature,
}

impl fmt::Display for AwsChunkedError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsChunkedError::Malformed(reason) => write!(formatter, "malformed aws-chunked body: {reason}"),
            AwsChunkedError::Signature => write!(formatter, "an aws-chunked signature does not match"),
        }
    }
}

impl std::error::Error for AwsChunkedError {}

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk header line (`<hex size>[;extensions]\r\n`).
    ChunkHeader,
    /// Copying payload bytes; this many are still due in the current chunk.
    ChunkData { remaining: u64 },
    /// Expecting the CR that ends a chunk's data.
    DataCr,
    /// Expecting the LF that ends a chunk's data.
    DataLf,
    /// After the zero-size chunk: reading trailer lines until a blank one.
    Trailer,
    /// The blank line after the last chunk (or its trailers) was read.
    Done,
    /// An earlier call failed; every later call reports the same error.
    Failed(&'static str),
    /// A signature failed; every later call reports it.
    SignatureFailed,
}

/// The signature chain of a signed stream, checked as it goes.
#[derive(Debug, Clone)]
struct Signing {
    signer: ChunkSigner,
    /// The trailers are signed (`x-amz-trailer-signature`).
    trailer: bool,
    /// The current chunk's data, hashed.
    hasher: Sha256,
    /// The current chunk's `chunk-signature`.
    signature: Vec<u8>,
}

/// Incremental decoder for one aws-chunked request body; see the module documentation.
#[derive(Debug, Clone)]
pub struct AwsChunkedDecoder {
    state: State,
    /// The partial header or trailer line carried over between `feed` calls.
    line: Vec<u8>,
    trailers: Vec<(String, String)>,
    decoded_bytes: u64,
    signing: Option<Box<Signing>>,
}

impl Default for AwsChunkedDecoder {
    fn default() -> Self {
        AwsChunkedDecoder::new()
    }
}

impl AwsChunkedDecoder {
    pub fn new() -> AwsChunkedDecoder {
        AwsChunkedDecoder {
            state: State::ChunkHeader,
            line: Vec::new(),
            trailers: Vec::new(),
            decoded_bytes: 0,
            signing: None,
        }
    }

    /// A decoder that checks each chunk's signature with `signer`, and the
    /// trailers' when `trailer`.
    pub fn with_signer(signer: ChunkSigner, trailer: bool) -> AwsChunkedDecoder {
        AwsChunkedDecoder {
            signing: Some(Box::new(Signing {
                signer,
                trailer,
                hasher: Sha256::new(),
                signature: Vec::new(),
            })),
            ..AwsChunkedDecoder::new()
        }
    }

    /// Decode all of `input`, appending decoded payload bytes to `out`. Every byte of input is
    /// consumed (a partial header or trailer line is kept inside the decoder, at most
    /// `LINE_BYTES_MAX` bytes, else Malformed). Bytes after the final blank line are an error.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), AwsChunkedError> {
        match self.state {
            State::Failed(reason) => return Err(AwsChunkedError::Malformed(reason)),
            State::SignatureFailed => return Err(AwsChunkedError::Signature),
            _ => {}
        }
        let mut rest = input;
        while !rest.is_empty() {
            match self.step(rest, out) {
                Ok(used) => rest = &rest[used..],
                Err(error) => return Err(self.fail(error)),
            }
        }
        Ok(())
    }

    /// Whether the final chunk and its trailers (and blank line) have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The input ended: Ok if the stream is complete (or complete but for the final blank line
    /// after trailers / after `0\r\n`), else Malformed("body ended inside a chunk") etc.
    pub fn finish(&mut self) -> Result<(), AwsChunkedError> {
        let outcome = match self.state {
            State::Done => Ok(()),
            State::Failed(reason) => Err(AwsChunkedError::Malformed(reason)),
            State::SignatureFailed => Err(AwsChunkedError::Signature),
            State::Trailer if self.line.is_empty() => self.check_trailer_signature(),
            State::Trailer => Err(AwsChunkedError::Malformed("body ended inside a trailer line")),
            State::ChunkHeader if self.line.is_empty() => {
                Err(AwsChunkedError::Malformed("body ended before the final chunk"))
            }
            State::ChunkHeader | State::ChunkData { .. } | State::DataCr | State::DataLf => {
                Err(AwsChunkedError::Malformed("body ended inside a chunk"))
            }
        };
        match outcome {
            Ok(()) => {
                self.state = State::Done;
                Ok(())
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Trailer fields seen so far, names lower-cased, values trimmed, in order.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// Payload bytes decoded so far.
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded_bytes
    }

    /// Remember `error` so that later calls report it too, and hand it back.
    fn fail(&mut self, error: AwsChunkedError) -> AwsChunkedError {
        self.state = match error {
            AwsChunkedError::Malformed(reason) => State::Failed(reason),
            AwsChunkedError::Signature => State::SignatureFailed,
        };
        self.line = Vec::new();
        error
    }

    /// The current chunk ended, its data hashing to what was fed: check its
    /// signature.
    fn check_chunk_signature(&mut self) -> Result<(), AwsChunkedError> {
        let Some(signing) = self.signing.as_mut() else {
            return Ok(());
        };
        let hash: [u8; 32] = std::mem::take(&mut signing.hasher).finalize().into();
        let signature = std::mem::take(&mut signing.signature);
        signing
            .signer
            .chunk(&hash, &signature)
            .map_err(|_| AwsChunkedError::Signature)
    }

    /// The trailers ended: check their signature, when they are signed.
    fn check_trailer_signature(&mut self) -> Result<(), AwsChunkedError> {
        let Some(signing) = self.signing.as_mut().filter(|signing| signing.trailer) else {
            return Ok(());
        };
        let signature = self
            .trailers
            .iter()
            .find(|(name, _)| name == "x-amz-trailer-signature")
            .map(|(_, value)| value.clone())
            .ok_or(AwsChunkedError::Signature)?;
        let hash = trailer_sha256(
            self.trailers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        signing
            .signer
            .trailer(&hash, signature.as_bytes())
            .map_err(|_| AwsChunkedError::Signature)
    }

    /// Consume a prefix of the non-empty `input` according to the current state; returns its length.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, AwsChunkedError> {
        match self.state {
            State::ChunkHeader | State::Trailer => self.take_line(input),
            State::ChunkData { remaining } => Ok(self.copy_data(input, remaining, out)),
            State::DataCr => self.take_data_end(input[0], b'\r', State::DataLf),
            State::DataLf => {
                let used = self.take_data_end(input[0], b'\n', State::ChunkHeader)?;
                self.check_chunk_signature()?;
                Ok(used)
            }
            State::Done => Err(AwsChunkedError::Malformed("data after the final chunk")),
            State::Failed(reason) => Err(AwsChunkedError::Malformed(reason)),
            State::SignatureFailed => Err(AwsChunkedError::Signature),
        }
    }

    /// Copy as much of the current chunk's `remaining` data as `input` holds, in one run.
    fn copy_data(&mut self, input: &[u8], remaining: u64, out: &mut Vec<u8>) -> usize {
        let used = input.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        out.extend_from_slice(&input[..used]);
        if let Some(signing) = self.signing.as_mut() {
            signing.hasher.update(&input[..used]);
        }
        let count = used as u64;
        self.decoded_bytes += count;
        self.state = if count == remaining {
            State::DataCr
        } else {
            State::ChunkData {
                remaining: remaining - count,
            }
        };
        used
    }

    /// Take one byte of the CRLF that must follow chunk data, then move to `next`.
    fn take_data_end(&mut self, byte: u8, expected: u8, next: State) -> Result<usize, AwsChunkedError> {
        if byte != expected {
            return Err(AwsChunkedError::Malformed("missing CRLF after chunk data"));
        }
        self.state = next;
        Ok(1)
    }

    /// Buffer line bytes from `input` up to and including an LF; handle the line once complete.
    fn take_line(&mut self, input: &[u8]) -> Result<usize, AwsChunkedError> {
        let room = LINE_BYTES_MAX - self.line.len();
        let window = &input[..input.len().min(room)];
        let Some(newline) = window.iter().position(|&byte| byte == b'\n') else {
            if input.len() > room {
                return Err(AwsChunkedError::Malformed("header line too long"));
            }
            self.line.extend_from_slice(input);
            return Ok(input.len());
        };
        self.line.extend_from_slice(&window[..=newline]);
        let mut line = std::mem::take(&mut self.line);
        let result = self.handle_line(&line);
        line.clear();
        self.line = line;
        result.map(|()| newline + 1)
    }

    /// Act on one complete line (LF included) read in the ChunkHeader or Trailer state.
    fn handle_line(&mut self, line: &[u8]) -> Result<(), AwsChunkedError> {
        let Some(content) = line.strip_suffix(b"\r\n") else {
            return Err(AwsChunkedError::Malformed("line not ended by CRLF"));
        };
        if self.state == State::ChunkHeader {
            let size = parse_chunk_size(content)?;
            if let Some(signing) = self.signing.as_mut() {
                signing.signature = chunk_signature(content).ok_or(AwsChunkedError::Signature)?.to_vec();
            }
            self.state = if size == 0 {
                // The final chunk signs no data.
                self.check_chunk_signature()?;
                State::Trailer
            } else {
                State::ChunkData { remaining: size }
            };
        } else if content.is_empty() {
            self.check_trailer_signature()?;
            self.state = State::Done;
        } else {
            if self.trailers.len() == TRAILER_COUNT_MAX {
                return Err(AwsChunkedError::Malformed("too many trailers"));
            }
            self.trailers.push(parse_trailer(content)?);
        }
        Ok(())
    }
}

/// Parse a chunk header line without its CRLF: hex size, optional blanks, optional `;extensions`.
fn parse_chunk_size(content: &[u8]) -> Result<u64, AwsChunkedError> {
    let size_field = match content.iter().position(|&byte| byte == b';') {
        Some(semicolon) => &content[..semicolon],
        None => content,
    };
    let digits = trim_blanks_end(size_field);
    if digits.is_empty() {
        return Err(AwsChunkedError::Malformed("bad chunk size"));
    }
    let mut size: u64 = 0;
    for &byte in digits {
        let digit = hex_value(byte).ok_or(AwsChunkedError::Malformed("bad chunk size"))?;
        size = size * 16 + u64::from(digit);
        if size > CHUNK_BYTES_MAX {
            return Err(AwsChunkedError::Malformed("chunk size too large"));
        }
    }
    Ok(size)
}

/// The `chunk-signature` extension of a chunk header line.
fn chunk_signature(content: &[u8]) -> Option<&[u8]> {
    content.split(|&byte| byte == b';').skip(1).find_map(|extension| {
        let extension = trim_blanks_start(trim_blanks_end(extension));
        extension.strip_prefix(b"chunk-signature=")
    })
}

/// Parse a trailer line without its CRLF: `name:value`, name lower-cased, both trimmed.
fn parse_trailer(content: &[u8]) -> Result<(String, String), AwsChunkedError> {
    let colon = content
        .iter()
        .position(|&byte| byte == b':')
        .ok_or(AwsChunkedError::Malformed("bad trailer line"))?;
    let name = trim_blanks_start(trim_blanks_end(&content[..colon]));
    if name.is_empty() || !name.iter().all(|&byte| byte.is_ascii_graphic()) {
        return Err(AwsChunkedError::Malformed("bad trailer name"));
    }
    let value = trim_blanks_start(trim_blanks_end(&content[colon + 1..]));
    let value = std::str::from_utf8(value).map_err(|_| AwsChunkedError::Malformed("trailer value not UTF-8"))?;
    Ok((String::from_utf8_lossy(name).to_ascii_lowercase(), value.to_string()))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn trim_blanks_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&byte| !is_blank(byte))
        .map_or(0, |last| last + 1);
    &bytes[..end]
}

fn trim_blanks_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&byte| !is_blank(byte)).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAKE_SIGNATURE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// How a test stream is framed.
    #[derive(Debug, Clone, Copy)]
    enum Variant {
        Signed,
        SignedTrailer,
        UnsignedTrailer,
        /// Unsigned, `0\r\n\r\n` with no trailers.
        UnsignedBare,
        /// Unsigned with a trailer but no final blank line (valid only with `finish`).
        UnsignedNoBlankLine,
    }

    const VARIANTS: [Variant; 5] = [
        Variant::Signed,
        Variant::SignedTrailer,
        Variant::UnsignedTrailer,
        Variant::UnsignedBare,
        Variant::UnsignedNoBlankLine,
    ];

    /// Frame `payload` in chunks whose sizes cycle through `sizes` (all non-zero).
    fn encode(payload: &[u8], sizes: &[usize], variant: Variant) -> Vec<u8> {
        let signed = matches!(variant, Variant::Signed | Variant::SignedTrailer);
        let header = |size: usize| {
            if signed {
                format!("{size:x};chunk-signature={FAKE_SIGNATURE}\r\n")
            } else {
                format!("{size:x}\r\n")
            }
        };
        let mut body = Vec::new();
        let mut offset = 0;
        for &size in sizes.iter().cycle() {
            if offset == payload.len() {
                break;
            }
            let size = size.min(payload.len() - offset);
            body.extend_from_slice(header(size).as_bytes());
            body.extend_from_slice(&payload[offset..offset + size]);
            body.extend_from_slice(b"\r\n");
            offset += size;
        }
        body.extend_from_slice(header(0).as_bytes());
        let tail: &[u8] = match variant {
            Variant::Signed | Variant::UnsignedBare => b"\r\n",
            Variant::SignedTrailer => b"x-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:abcd\r\n\r\n",
            Variant::UnsignedTrailer => b"x-amz-checksum-crc64nvme:AAAAAAAAAAA=\r\n\r\n",
            Variant::UnsignedNoBlankLine => b"x-amz-checksum-crc64nvme:AAAAAAAAAAA=\r\n",
        };
        body.extend_from_slice(tail);
        body
    }

    /// Feed `pieces` in order, then finish; return the payload and the decoder.
    fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, AwsChunkedDecoder), AwsChunkedError> {
        let mut decoder = AwsChunkedDecoder::new();
        let mut out = Vec::new();
        for piece in pieces {
            decoder.feed(piece, &mut out)?;
        }
        decoder.finish()?;
        Ok((out, decoder))
    }

    fn decode(input: &[u8]) -> Result<(Vec<u8>, AwsChunkedDecoder), AwsChunkedError> {
        decode_pieces(&[input])
    }

    fn decode_error(input: &[u8]) -> &'static str {
        match decode(input) {
            Err(AwsChunkedError::Malformed(reason)) => reason,
            Err(AwsChunkedError::Signature) => panic!("no signer, no signature error"),
            Ok((out, _)) => panic!("decoded {} bytes from malformed input", out.len()),
        }
    }

    fn sample_payload(length: usize) -> Vec<u8> {
        (0..length).map(|index| (index * 7 + 3) as u8).collect()
    }

    fn trailer(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    #[test]
    fn signed_stream_decodes() {
        let payload = sample_payload(100);
        let (out, decoder) = decode(&encode(&payload, &[40], Variant::Signed)).unwrap();
        assert_eq!(out, payload);
        assert!(decoder.is_done());
        assert!(decoder.trailers().is_empty());
        assert_eq!(decoder.decoded_bytes(), 100);
    }

    #[test]
    fn signed_stream_with_trailer_decodes() {
        let payload = sample_payload(100);
        let (out, decoder) = decode(&encode(&payload, &[64, 36], Variant::SignedTrailer)).unwrap();
        assert_eq!(out, payload);
        let expected = [
            trailer("x-amz-checksum-crc32", "AAAAAA=="),
            trailer("x-amz-trailer-signature", "abcd"),
        ];
        assert_eq!(decoder.trailers(), expected);
    }

    #[test]
    fn unsigned_stream_with_trailer_decodes() {
        let payload = sample_payload(33);
        let (out, decoder) = decode(&encode(&payload, &[16], Variant::UnsignedTrailer)).unwrap();
        assert_eq!(out, payload);
        assert_eq!(
            decoder.trailers(),
            [trailer("x-amz-checksum-crc64nvme", "AAAAAAAAAAA=")]
        );
    }

    #[test]
    fn unsigned_stream_without_trailers_decodes() {
        let (out, decoder) = decode(b"3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"abc");
        assert!(decoder.trailers().is_empty());
    }

    #[test]
    fn feed_alone_reports_done_only_after_final_blank_line() {
        let mut decoder = AwsChunkedDecoder::default();
        let mut out = Vec::new();
        decoder
            .feed(b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n", &mut out)
            .unwrap();
        assert!(!decoder.is_done());
        decoder.feed(b"\r\n", &mut out).unwrap();
        assert!(decoder.is_done());
        decoder.finish().unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn missing_final_blank_line_accepted_at_finish() {
        let (out, decoder) = decode(b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n").unwrap();
        assert_eq!(out, b"abc");
        assert!(decoder.is_done());
        assert_eq!(decoder.trailers(), [trailer("x-amz-checksum-crc32", "AAAAAA==")]);
        let (out, _) = decode(b"3\r\nabc\r\n0\r\n").unwrap();
        assert_eq!(out, b"abc");
        let (out, _) = decode(b"0;chunk-signature=ab\r\n").unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn empty_payload_decodes() {
        let (out, decoder) = decode(b"0\r\n\r\n").unwrap();
        assert!(out.is_empty());
        assert_eq!(decoder.decoded_bytes(), 0);
    }

    #[test]
    fn header_variations_are_accepted() {
        let input = b"A \t;chunk-signature=00;foo=bar\r\n0123456789\r\nb;ext\r\n0123456789a\r\n0;y=z\r\n\r\n";
        let (out, _) = decode(input).unwrap();
        assert_eq!(out, b"01234567890123456789a");
        let (out, _) = decode(b"0000B\r\nhello world\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn trailer_names_lowercased_and_values_trimmed() {
        let input = b"1\r\nz\r\n0\r\nX-Amz-Checksum-SHA256 : \tabc= \r\n\r\n";
        let (_, decoder) = decode(input).unwrap();
        assert_eq!(decoder.trailers(), [trailer("x-amz-checksum-sha256", "abc=")]);
    }

    /// Inputs covering every variant, for the split tests.
    fn split_samples() -> Vec<(Vec<u8>, Vec<u8>)> {
        let payload = sample_payload(45);
        VARIANTS
            .iter()
            .map(|&variant| (encode(&payload, &[20, 7], variant), payload.clone()))
            .collect()
    }

    #[test]
    fn every_two_piece_split_gives_same_result() {
        for (input, payload) in split_samples() {
            let (_, whole) = decode(&input).unwrap();
            for cut in 0..=input.len() {
                let (out, decoder) = decode_pieces(&[&input[..cut], &input[cut..]]).unwrap();
                assert_eq!(out, payload, "cut at {cut}");
                assert_eq!(decoder.trailers(), whole.trailers(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn byte_at_a_time_gives_same_result() {
        for (input, payload) in split_samples() {
            let (_, whole) = decode(&input).unwrap();
            let pieces: Vec<&[u8]> = input.chunks(1).collect();
            let (out, decoder) = decode_pieces(&pieces).unwrap();
            assert_eq!(out, payload);
            assert_eq!(decoder.trailers(), whole.trailers());
        }
    }

    /// The PUT Object example from the AWS "sigv4-streaming" documentation.
    fn aws_documented_example() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(
            b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n",
        );
        body.extend_from_slice(&[b'a'; 65536]);
        body.extend_from_slice(
            b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n",
        );
        body.extend_from_slice(&[b'a'; 1024]);
        body.extend_from_slice(
            b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n",
        );
        body
    }

    #[test]
    fn aws_documented_example_decodes() {
        let input = aws_documented_example();
        let (out, decoder) = decode(&input).unwrap();
        assert_eq!(out, vec![b'a'; 66560]);
        assert_eq!(decoder.decoded_bytes(), 66560);
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        let (out, _) = decode_pieces(&pieces).unwrap();
        assert_eq!(out, vec![b'a'; 66560]);
    }

    #[test]
    fn bad_chunk_sizes_rejected() {
        assert_eq!(decode_error(b"zz\r\nab\r\n0\r\n\r\n"), "bad chunk size");
        assert_eq!(decode_error(b"\r\n"), "bad chunk size");
        assert_eq!(decode_error(b";chunk-signature=00\r\n"), "bad chunk size");
        assert_eq!(decode_error(b" 3\r\nabc\r\n0\r\n\r\n"), "bad chunk size");
        assert_eq!(decode_error(b"-3\r\nabc\r\n0\r\n\r\n"), "bad chunk size");
        assert_eq!(decode_error(b"1ffffffffffffffff\r\n"), "chunk size too large");
        assert_eq!(decode_error(b"140000001\r\n"), "chunk size too large");
    }

    #[test]
    fn largest_chunk_size_accepted() {
        let mut decoder = AwsChunkedDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"140000000;chunk-signature=00\r\nabc", &mut out).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(
            decoder.finish(),
            Err(AwsChunkedError::Malformed("body ended inside a chunk"))
        );
    }

    #[test]
    fn missing_crlf_after_data_rejected() {
        assert_eq!(decode_error(b"3\r\nabc0\r\n\r\n"), "missing CRLF after chunk data");
        assert_eq!(decode_error(b"3\r\nabc\n0\r\n\r\n"), "missing CRLF after chunk data");
        assert_eq!(decode_error(b"3\r\nabc\rx0\r\n\r\n"), "missing CRLF after chunk data");
    }

    #[test]
    fn chunk_longer_than_its_size_rejected() {
        assert_eq!(decode_error(b"3\r\nabcd\r\n0\r\n\r\n"), "missing CRLF after chunk data");
    }

    #[test]
    fn line_without_cr_rejected() {
        assert_eq!(decode_error(b"3\nabc\r\n0\r\n\r\n"), "line not ended by CRLF");
        assert_eq!(
            decode_error(b"0\r\nx-amz-checksum-crc32:AAAAAA==\n\r\n"),
            "line not ended by CRLF"
        );
    }

    #[test]
    fn data_after_the_end_rejected() {
        assert_eq!(decode_error(b"3\r\nabc\r\n0\r\n\r\nx"), "data after the final chunk");
        let mut decoder = AwsChunkedDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"0\r\n\r\n", &mut out).unwrap();
        let error = decoder.feed(b"3\r\nabc\r\n", &mut out).unwrap_err();
        assert_eq!(error, AwsChunkedError::Malformed("data after the final chunk"));
        assert!(out.is_empty());
    }

    #[test]
    fn data_after_finish_rejected() {
        let mut decoder = AwsChunkedDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"0\r\n", &mut out).unwrap();
        decoder.finish().unwrap();
        let error = decoder.feed(b"\r\n", &mut out).unwrap_err();
        assert_eq!(error, AwsChunkedError::Malformed("data after the final chunk"));
    }

    #[test]
    fn over_long_line_rejected() {
        let mut header = b"10;".to_vec();
        header.resize(LINE_BYTES_MAX + 10, b'x');
        header.extend_from_slice(b"\r\n");
        assert_eq!(decode_error(&header), "header line too long");
        let pieces: Vec<&[u8]> = header.chunks(100).collect();
        assert_eq!(
            decode_pieces(&pieces).unwrap_err(),
            AwsChunkedError::Malformed("header line too long")
        );
        let mut trailer_line = b"0\r\nx-amz-meta:".to_vec();
        trailer_line.resize(LINE_BYTES_MAX * 2, b'v');
        assert_eq!(decode_error(&trailer_line), "header line too long");
    }

    #[test]
    fn longest_allowed_line_accepted() {
        let mut input = b"1;".to_vec();
        input.resize(LINE_BYTES_MAX - 2, b'x');
        input.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        let pieces: Vec<&[u8]> = input.chunks(7).collect();
        let (out, _) = decode_pieces(&pieces).unwrap();
        assert_eq!(out, b"z");
        let mut too_long = b"1;".to_vec();
        too_long.resize(LINE_BYTES_MAX - 1, b'x');
        too_long.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(decode_error(&too_long), "header line too long");
    }

    #[test]
    fn too_many_trailers_rejected() {
        let mut input = b"0\r\n".to_vec();
        for index in 0..TRAILER_COUNT_MAX {
            input.extend_from_slice(format!("x-amz-meta-{index}:v\r\n").as_bytes());
        }
        let mut accepted = input.clone();
        accepted.extend_from_slice(b"\r\n");
        assert_eq!(decode(&accepted).unwrap().1.trailers().len(), TRAILER_COUNT_MAX);
        input.extend_from_slice(b"x-amz-meta-extra:v\r\n\r\n");
        assert_eq!(decode_error(&input), "too many trailers");
    }

    #[test]
    fn bad_trailer_lines_rejected() {
        assert_eq!(decode_error(b"0\r\nno-colon-here\r\n\r\n"), "bad trailer line");
        assert_eq!(decode_error(b"0\r\n:value\r\n\r\n"), "bad trailer name");
        assert_eq!(decode_error(b"0\r\nbad name:value\r\n\r\n"), "bad trailer name");
        assert_eq!(decode_error(b"0\r\nname:\xff\r\n\r\n"), "trailer value not UTF-8");
    }

    #[test]
    fn truncated_input_rejected_at_finish() {
        assert_eq!(decode_error(b""), "body ended before the final chunk");
        assert_eq!(decode_error(b"3\r\nabc\r\n"), "body ended before the final chunk");
        assert_eq!(decode_error(b"3;chunk-sig"), "body ended inside a chunk");
        assert_eq!(decode_error(b"3\r\nab"), "body ended inside a chunk");
        assert_eq!(decode_error(b"3\r\nabc"), "body ended inside a chunk");
        assert_eq!(decode_error(b"3\r\nabc\r"), "body ended inside a chunk");
        assert_eq!(
            decode_error(b"0\r\nx-amz-checksum-crc32:AA"),
            "body ended inside a trailer line"
        );
        assert_eq!(decode_error(b"0\r\n\r"), "body ended inside a trailer line");
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = AwsChunkedDecoder::new();
        let mut out = Vec::new();
        let error = decoder.feed(b"zz\r\n", &mut out).unwrap_err();
        assert_eq!(decoder.feed(b"0\r\n\r\n", &mut out), Err(error.clone()));
        assert_eq!(decoder.feed(b"", &mut out), Err(error.clone()));
        assert_eq!(decoder.finish(), Err(error));
        assert!(!decoder.is_done());
    }

    #[test]
    fn error_displays_reason() {
        let error = AwsChunkedError::Malformed("bad chunk size");
        assert_eq!(error.to_string(), "malformed aws-chunked body: bad chunk size");
    }

    /// xorshift64: a tiny deterministic generator so the property test needs no dependencies.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    #[test]
    fn random_chunkings_and_splits_round_trip() {
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let payload: Vec<u8> = (0..random.below(3000)).map(|_| random.next() as u8).collect();
            let sizes: Vec<usize> = (0..1 + random.below(5)).map(|_| 1 + random.below(700)).collect();
            let variant = VARIANTS[random.below(VARIANTS.len())];
            let input = encode(&payload, &sizes, variant);
            let mut cuts: Vec<usize> = (0..random.below(12)).map(|_| random.below(input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&input[start..cut]);
                start = cut;
            }
            pieces.push(&input[start..]);
            let (out, decoder) = decode_pieces(&pieces).unwrap();
            assert_eq!(out, payload, "variant {variant:?} sizes {sizes:?}");
            assert_eq!(decoder.decoded_bytes(), payload.len() as u64);
        }
    }
}
