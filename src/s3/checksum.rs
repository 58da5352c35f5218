//! S3's additional checksums, without any IO.
//!
//! A client may protect an upload with one of five checksums besides `Content-MD5`: it names the
//! algorithm (`x-amz-sdk-checksum-algorithm: CRC32`, or `x-amz-checksum-algorithm` on
//! CreateMultipartUpload) and sends the value base64-encoded, either as a header
//! (`x-amz-checksum-crc32: DUoRhQ==`) or, on an `aws-chunked` body, as a trailer announced by
//! `x-amz-trailer: x-amz-checksum-crc32`. Values are the big-endian bytes of the CRC or the digest.
//!
//! - [`Algorithm`]: the five algorithms and every name S3 gives them (header, algorithm value,
//!   trailer, XML element).
//! - [`Checksummer`]: one algorithm computed incrementally over a body's pieces.
//! - [`parse_expected`]: a client's base64 value, checked for its algorithm's length.
//! - [`composite`] and [`combine_full_object`]: the checksum of a multipart object, as a
//!   "checksum of checksums" (`COMPOSITE`, rendered `base64-N`) or as the CRC of the whole object
//!   computed from its parts' CRCs (`FULL_OBJECT`).
//! - [`parse_content_sha256`] and [`hex`]: the SigV4 payload hash `x-amz-content-sha256`.
//!
//! The CRCs come from `crc-fast` (SIMD folding, the crate the AWS SDKs use), the digests from
//! RustCrypto's `sha1` and `sha2` (SHA-NI where the CPU has it).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use crc_fast::CrcAlgorithm;
use sha2::Digest as _;

/// Longest raw checksum: SHA-256's 32 bytes.
pub const CHECKSUM_BYTES_MAX: usize = 32;

/// One of S3's additional checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// CRC-32/ISO-HDLC, zlib's CRC.
    Crc32,
    /// CRC-32/ISCSI (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// The value of `x-amz-sdk-checksum-algorithm` and `x-amz-checksum-algorithm`: `CRC32`, ...
    pub fn value(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The header (or trailer) carrying the value, lower-case: `x-amz-checksum-crc32`, ...
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The element carrying the value in XML bodies: `ChecksumCRC32`, ...
    pub fn xml_element(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "ChecksumCRC32",
            Algorithm::Crc32c => "ChecksumCRC32C",
            Algorithm::Crc64Nvme => "ChecksumCRC64NVME",
            Algorithm::Sha1 => "ChecksumSHA1",
            Algorithm::Sha256 => "ChecksumSHA256",
        }
    }

    /// Length of a raw value.
    pub fn checksum_bytes(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// Whether the checksum of a whole object can be computed from its parts' checksums and lengths
    /// (`FULL_OBJECT` multipart checksums): true of the CRCs, not of the digests.
    pub fn is_crc(self) -> bool {
        matches!(self, Algorithm::Crc32 | Algorithm::Crc32c | Algorithm::Crc64Nvme)
    }

    /// From an algorithm value (`CRC32`, any case, surrounding whitespace allowed).
    pub fn from_value(value: &str) -> Option<Algorithm> {
        let value = value.trim();
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.value().eq_ignore_ascii_case(value))
    }

    /// From a header name (any case): `x-amz-checksum-crc32` gives `Crc32`. The other
    /// `x-amz-checksum-*` headers (`-mode`, `-type`, `-algorithm`) give `None`.
    pub fn from_header(name: &str) -> Option<Algorithm> {
        let name = name.trim();
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.header().eq_ignore_ascii_case(name))
    }

    /// From the value of `x-amz-trailer`, which names the trailer header: `x-amz-checksum-crc32`.
    pub fn from_trailer(value: &str) -> Option<Algorithm> {
        Algorithm::from_header(value)
    }

    /// From an XML element name (`ChecksumCRC32`, exact case as XML is case-sensitive).
    pub fn from_xml_element(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.xml_element() == name)
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Algorithm::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            Algorithm::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Algorithm::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            Algorithm::Sha1 | Algorithm::Sha256 => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.value())
    }
}

/// How the checksum of a multipart object was made (`x-amz-checksum-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    /// The checksum of the parts' checksums, rendered `base64-N` ([`composite`]).
    Composite,
    /// The checksum of the whole object's bytes ([`combine_full_object`]); CRCs only.
    FullObject,
}

impl ChecksumType {
    /// `COMPOSITE` or `FULL_OBJECT`.
    pub fn value(self) -> &'static str {
        match self {
            ChecksumType::Composite => "COMPOSITE",
            ChecksumType::FullObject => "FULL_OBJECT",
        }
    }

    /// From `COMPOSITE` or `FULL_OBJECT` (any case).
    pub fn from_value(value: &str) -> Option<ChecksumType> {
        let value = value.trim();
        [ChecksumType::Composite, ChecksumType::FullObject]
            .into_iter()
            .find(|checksum_type| checksum_type.value().eq_ignore_ascii_case(value))
    }
}

/// Why a checksum was refused. Each maps to one S3 error: [`ChecksumError::code`], and the
/// message is the `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumError {
    /// An algorithm name that is not one of the five (`InvalidRequest`).
    UnknownAlgorithm(String),
    /// A value that is not base64 of the algorithm's length (`InvalidRequest`).
    Invalid(Algorithm),
    /// The body's checksum differs from the one the client sent (`BadDigest`).
    Mismatch(Algorithm),
    /// `x-amz-content-sha256` is neither a hash nor one of the payload modes (`InvalidArgument`).
    ContentSha256Invalid,
    /// The body's SHA-256 differs from `x-amz-content-sha256` (`XAmzContentSHA256Mismatch`).
    ContentSha256Mismatch,
}

impl ChecksumError {
    /// The S3 error code.
    pub fn code(&self) -> &'static str {
        match self {
            ChecksumError::UnknownAlgorithm(_) | ChecksumError::Invalid(_) => "InvalidRequest",
            ChecksumError::Mismatch(_) => "BadDigest",
            ChecksumError::ContentSha256Invalid => "InvalidArgument",
            ChecksumError::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }
}

impl fmt::Display for ChecksumError {
    /// The messages S3 gives.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChecksumError::UnknownAlgorithm(_) => {
                formatter.write_str("Value for x-amz-checksum-algorithm header is invalid.")
            }
            ChecksumError::Invalid(algorithm) => {
                write!(formatter, "Value for {} header is invalid.", algorithm.header())
            }
            ChecksumError::Mismatch(algorithm) => write!(
                formatter,
                "The {} you specified did not match the calculated checksum.",
                algorithm.value()
            ),
            ChecksumError::ContentSha256Invalid => formatter.write_str(
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, \
                 STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, \
                 STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD, STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER \
                 or a valid sha256 value.",
            ),
            ChecksumError::ContentSha256Mismatch => {
                formatter.write_str("The provided 'x-amz-content-sha256' header does not match what was computed.")
            }
        }
    }
}

impl std::error::Error for ChecksumError {}

/// An algorithm value (`x-amz-sdk-checksum-algorithm`, `x-amz-checksum-algorithm`), or
/// `UnknownAlgorithm`.
pub fn parse_algorithm(value: &str) -> Result<Algorithm, ChecksumError> {
    Algorithm::from_value(value).ok_or_else(|| ChecksumError::UnknownAlgorithm(value.to_owned()))
}

/// A client's value for `algorithm` (header, trailer or XML text): its raw bytes, or `Invalid` when it
/// is not canonical base64 of exactly [`Algorithm::checksum_bytes`] bytes.
pub fn parse_expected(algorithm: Algorithm, value: &str) -> Result<Vec<u8>, ChecksumError> {
    let raw = BASE64
        .decode(value.trim())
        .map_err(|_| ChecksumError::Invalid(algorithm))?;
    if raw.len() != algorithm.checksum_bytes() {
        return Err(ChecksumError::Invalid(algorithm));
    }
    Ok(raw)
}

/// Standard base64 with padding, as S3 renders checksums.
pub fn base64(raw: &[u8]) -> String {
    BASE64.encode(raw)
}

/// One algorithm computed over a body given in pieces.
#[derive(Clone)]
pub struct Checksummer {
    state: State,
}

#[derive(Clone)]
enum State {
    Crc(Algorithm, crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Checksummer {
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match (algorithm, algorithm.crc()) {
            (_, Some(crc)) => State::Crc(algorithm, crc_fast::Digest::new(crc)),
            (Algorithm::Sha1, None) => State::Sha1(sha1::Sha1::new()),
            (_, None) => State::Sha256(sha2::Sha256::new()),
        };
        Checksummer { state }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            State::Crc(algorithm, _) => algorithm,
            State::Sha1(_) => Algorithm::Sha1,
            State::Sha256(_) => Algorithm::Sha256,
        }
    }

    /// Adds the next piece of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Crc(_, digest) => digest.update(bytes),
            State::Sha1(digest) => digest.update(bytes),
            State::Sha256(digest) => digest.update(bytes),
        }
    }

    /// The raw checksum: big-endian CRC or digest bytes, [`Algorithm::checksum_bytes`] long.
    pub fn finish(self) -> Vec<u8> {
        let algorithm = self.algorithm();
        let raw = match self.state {
            State::Crc(_, digest) => {
                let crc = digest.finalize().to_be_bytes();
                crc[crc.len() - algorithm.checksum_bytes()..].to_vec()
            }
            State::Sha1(digest) => digest.finalize().to_vec(),
            State::Sha256(digest) => digest.finalize().to_vec(),
        };
        debug_assert_eq!(raw.len(), algorithm.checksum_bytes());
        raw
    }

    /// The checksum as S3 renders it (base64).
    pub fn base64(self) -> String {
        base64(&self.finish())
    }

    /// The raw checksum when it equals `expected` (raw, from [`parse_expected`]); `Mismatch`
    /// otherwise.
    pub fn verify(self, expected: &[u8]) -> Result<Vec<u8>, ChecksumError> {
        let algorithm = self.algorithm();
        let raw = self.finish();
        if raw != expected {
            return Err(ChecksumError::Mismatch(algorithm));
        }
        Ok(raw)
    }
}

impl fmt::Debug for Checksummer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Checksummer")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// The one-shot checksum of `bytes`, raw.
pub fn checksum(algorithm: Algorithm, bytes: &[u8]) -> Vec<u8> {
    let mut checksummer = Checksummer::new(algorithm);
    checksummer.update(bytes);
    checksummer.finish()
}

/// The `COMPOSITE` checksum of a multipart object: the algorithm over the concatenation of the raw
/// part checksums, in part order, rendered `base64-N` with N the number of parts (S3's "checksum of
/// checksums"). Each part checksum must be raw and of the algorithm's length.
pub fn composite<'a>(algorithm: Algorithm, part_checksums: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut checksummer = Checksummer::new(algorithm);
    let mut parts: u64 = 0;
    for part_checksum in part_checksums {
        assert_eq!(
            part_checksum.len(),
            algorithm.checksum_bytes(),
            "a raw {algorithm} part checksum"
        );
        checksummer.update(part_checksum);
        parts += 1;
    }
    format!("{}-{parts}", checksummer.base64())
}

/// The `FULL_OBJECT` checksum of a multipart object from its parts' (raw CRC, length in bytes), in
/// part order: the CRC of the whole object's bytes, without reading them. `None` for the digests,
/// which cannot be combined. Each part checksum must be raw and of the algorithm's length.
pub fn combine_full_object<'a>(
    algorithm: Algorithm,
    parts: impl IntoIterator<Item = (&'a [u8], u64)>,
) -> Option<Vec<u8>> {
    let crc = algorithm.crc()?;
    let width = algorithm.checksum_bytes();
    let mut combined = crc_fast::checksum(crc, b"");
    for (part_checksum, length) in parts {
        assert_eq!(part_checksum.len(), width, "a raw {algorithm} part checksum");
        let mut be_bytes = [0u8; 8];
        be_bytes[8 - width..].copy_from_slice(part_checksum);
        combined = crc_fast::checksum_combine(crc, combined, u64::from_be_bytes(be_bytes), length);
    }
    Some(combined.to_be_bytes()[8 - width..].to_vec())
}

/// What `x-amz-content-sha256` says of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentSha256 {
    /// `UNSIGNED-PAYLOAD`: nothing to check.
    Unsigned,
    /// One of the `STREAMING-*` modes: the body is `aws-chunked`, with or without trailers
    /// (`trailer`), signed chunk by chunk or not (`signed`).
    Streaming { signed: bool, trailer: bool },
    /// The SHA-256 of the whole payload, to verify before the last byte is stored.
    Hash([u8; 32]),
}

/// Parses `x-amz-content-sha256`: a mode, or 64 hex digits (any case).
pub fn parse_content_sha256(value: &str) -> Result<ContentSha256, ChecksumError> {
    let streaming = |signed, trailer| Ok(ContentSha256::Streaming { signed, trailer });
    match value.trim() {
        "UNSIGNED-PAYLOAD" => Ok(ContentSha256::Unsigned),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => streaming(false, true),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD" => streaming(true, false),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" | "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER" => {
            streaming(true, true)
        }
        hash => parse_hex_32(hash)
            .map(ContentSha256::Hash)
            .ok_or(ChecksumError::ContentSha256Invalid),
    }
}

/// 64 hex digits (either case) into 32 bytes.
pub fn parse_hex_32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut raw = [0u8; 32];
    for (byte, pair) in raw.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(raw)
}

/// Lower-case hex, as `x-amz-content-sha256` carries a hash.
pub fn hex(raw: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(raw.len() * 2);
    for &byte in raw {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Verifies a payload against `x-amz-content-sha256`'s hash: the raw SHA-256 computed by a
/// [`Checksummer`] of [`Algorithm::Sha256`].
pub fn verify_content_sha256(computed: &[u8], expected: &[u8; 32]) -> Result<(), ChecksumError> {
    if computed == expected {
        Ok(())
    } else {
        Err(ChecksumError::ContentSha256Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values computed independently (Python's hashlib and a bitwise CRC) for each algorithm:
    /// (algorithm, base64 of "hello world", base64 of "").
    const HELLO_WORLD: [(Algorithm, &str, &str); 5] = [
        (Algorithm::Crc32, "DUoRhQ==", "AAAAAA=="),
        (Algorithm::Crc32c, "yZRlqg==", "AAAAAA=="),
        (Algorithm::Crc64Nvme, "jSnVw/bqjr4=", "AAAAAAAAAAA="),
        (
            Algorithm::Sha1,
            "Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            "2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
        ),
        (
            Algorithm::Sha256,
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ),
    ];

    #[test]
    fn known_vectors() {
        for (algorithm, hello_world, empty) in HELLO_WORLD {
            assert_eq!(base64(&checksum(algorithm, b"hello world")), hello_world, "{algorithm}");
            assert_eq!(Checksummer::new(algorithm).base64(), empty, "{algorithm}");
        }
    }

    #[test]
    fn crc_check_values_of_the_catalogue() {
        // The "check" of each CRC in the catalogue of parametrised CRC algorithms: the CRC of "123456789".
        assert_eq!(checksum(Algorithm::Crc32, b"123456789"), 0xcbf4_3926u32.to_be_bytes());
        assert_eq!(checksum(Algorithm::Crc32c, b"123456789"), 0xe306_9283u32.to_be_bytes());
        assert_eq!(
            checksum(Algorithm::Crc64Nvme, b"123456789"),
            0xae8b_1486_0a79_9888u64.to_be_bytes()
        );
    }

    #[test]
    fn sha256_hex_of_empty() {
        assert_eq!(
            hex(&checksum(Algorithm::Sha256, b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn pieces_give_the_one_shot_checksum() {
        let body: Vec<u8> = (0..100_000u32).map(|index| (index * 7 % 251) as u8).collect();
        for algorithm in Algorithm::ALL {
            let mut checksummer = Checksummer::new(algorithm);
            for piece in body.chunks(4093) {
                checksummer.update(piece);
            }
            checksummer.update(b"");
            assert_eq!(checksummer.finish(), checksum(algorithm, &body), "{algorithm}");
        }
    }

    #[test]
    fn verify_tells_match_from_mismatch() {
        for (algorithm, hello_world, _) in HELLO_WORLD {
            let expected = parse_expected(algorithm, hello_world).expect("valid");
            let mut checksummer = Checksummer::new(algorithm);
            checksummer.update(b"hello world");
            assert_eq!(checksummer.clone().verify(&expected), Ok(expected.clone()));
            checksummer.update(b"!");
            assert_eq!(checksummer.verify(&expected), Err(ChecksumError::Mismatch(algorithm)));
        }
    }

    #[test]
    fn parse_expected_checks_base64_and_length() {
        assert_eq!(
            parse_expected(Algorithm::Crc32, " DUoRhQ== "),
            Ok(vec![0x0d, 0x4a, 0x11, 0x85])
        );
        let invalid = Err(ChecksumError::Invalid(Algorithm::Crc32));
        assert_eq!(parse_expected(Algorithm::Crc32, ""), invalid);
        assert_eq!(
            parse_expected(Algorithm::Crc32, "DUoRhQ"),
            invalid,
            "padding is required"
        );
        assert_eq!(
            parse_expected(Algorithm::Crc32, "DUoRhR=="),
            invalid,
            "non-canonical trailing bits"
        );
        assert_eq!(parse_expected(Algorithm::Crc32, "DUoR"), invalid, "3 bytes");
        assert_eq!(parse_expected(Algorithm::Crc32, "jSnVw/bqjr4="), invalid, "8 bytes");
        assert_eq!(parse_expected(Algorithm::Crc32, "DUo*hQ=="), invalid);
        assert_eq!(
            parse_expected(Algorithm::Crc32, "DUoRhQ==-2"),
            invalid,
            "composite values are not expected values"
        );
        assert_eq!(
            parse_expected(Algorithm::Sha256, "DUoRhQ=="),
            Err(ChecksumError::Invalid(Algorithm::Sha256))
        );
        for (algorithm, hello_world, empty) in HELLO_WORLD {
            assert_eq!(
                parse_expected(algorithm, hello_world).map(|raw| raw.len()),
                Ok(algorithm.checksum_bytes())
            );
            assert_eq!(
                parse_expected(algorithm, empty).map(|raw| raw.len()),
                Ok(algorithm.checksum_bytes())
            );
        }
    }

    #[test]
    fn algorithm_names() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::from_value(algorithm.value()), Some(algorithm));
            assert_eq!(
                Algorithm::from_value(&algorithm.value().to_lowercase()),
                Some(algorithm)
            );
            assert_eq!(Algorithm::from_header(algorithm.header()), Some(algorithm));
            assert_eq!(
                Algorithm::from_header(&algorithm.header().to_uppercase()),
                Some(algorithm)
            );
            assert_eq!(
                Algorithm::from_trailer(&format!(" {} ", algorithm.header())),
                Some(algorithm)
            );
            assert_eq!(Algorithm::from_xml_element(algorithm.xml_element()), Some(algorithm));
            assert!(algorithm.checksum_bytes() <= CHECKSUM_BYTES_MAX);
        }
        assert_eq!(Algorithm::from_header("x-amz-checksum-crc32"), Some(Algorithm::Crc32));
        assert_eq!(
            Algorithm::from_header("x-amz-checksum-crc64nvme"),
            Some(Algorithm::Crc64Nvme)
        );
        assert_eq!(Algorithm::from_value("CRC64NVME"), Some(Algorithm::Crc64Nvme));
        for other in [
            "x-amz-checksum-mode",
            "x-amz-checksum-type",
            "x-amz-checksum-algorithm",
            "x-amz-checksum-md5",
        ] {
            assert_eq!(Algorithm::from_header(other), None, "{other}");
        }
        assert_eq!(Algorithm::from_value("MD5"), None);
        assert_eq!(parse_algorithm("crc32c"), Ok(Algorithm::Crc32c));
        assert_eq!(
            parse_algorithm("MD5"),
            Err(ChecksumError::UnknownAlgorithm("MD5".to_owned()))
        );
        assert_eq!(Algorithm::from_value("CRC32 C"), None);
        assert_eq!(Algorithm::from_xml_element("checksumcrc32"), None);
        assert!(Algorithm::Crc64Nvme.is_crc() && !Algorithm::Sha1.is_crc());
        assert_eq!(ChecksumType::from_value("composite"), Some(ChecksumType::Composite));
        assert_eq!(ChecksumType::from_value("FULL_OBJECT"), Some(ChecksumType::FullObject));
        assert_eq!(ChecksumType::from_value("PARTIAL"), None);
    }

    #[test]
    fn composite_is_the_checksum_of_the_part_checksums() {
        // Parts "hello " and "world"; values computed independently.
        let expected = [
            (Algorithm::Crc32, "1Fu2mQ==-2"),
            (Algorithm::Crc32c, "vUZpoA==-2"),
            (Algorithm::Crc64Nvme, "6sDIYil0oVY=-2"),
            (Algorithm::Sha1, "9oeo+kMlG3hL6irRRMB+8GuSWwc=-2"),
            (Algorithm::Sha256, "Zhie15keHg/OBlOZxcoF/BXCgYZaeimRvdZnwUZqkaQ=-2"),
        ];
        for (algorithm, rendered) in expected {
            let parts = [checksum(algorithm, b"hello "), checksum(algorithm, b"world")];
            assert_eq!(
                composite(algorithm, parts.iter().map(Vec::as_slice)),
                rendered,
                "{algorithm}"
            );
        }
        let one = checksum(Algorithm::Crc32, b"x");
        let single = composite(Algorithm::Crc32, [one.as_slice()]);
        assert!(single.ends_with("-1"), "{single}");
    }

    #[test]
    fn full_object_crc_combines_parts() {
        let body: Vec<u8> = (0..300_000u32).map(|index| (index * 13 % 256) as u8).collect();
        let splits = [0usize, 1, 5 * 1024, 100_000, 299_999, 300_000];
        for algorithm in Algorithm::ALL {
            let parts: Vec<(Vec<u8>, u64)> = splits
                .windows(2)
                .map(|bounds| {
                    let part = &body[bounds[0]..bounds[1]];
                    (checksum(algorithm, part), part.len() as u64)
                })
                .collect();
            let combined = combine_full_object(algorithm, parts.iter().map(|(raw, length)| (raw.as_slice(), *length)));
            if algorithm.is_crc() {
                assert_eq!(combined, Some(checksum(algorithm, &body)), "{algorithm}");
                assert_eq!(
                    combine_full_object(algorithm, []),
                    Some(checksum(algorithm, b"")),
                    "{algorithm}: no part"
                );
            } else {
                assert_eq!(combined, None, "{algorithm}");
            }
        }
    }

    #[test]
    fn content_sha256_values() {
        assert_eq!(parse_content_sha256("UNSIGNED-PAYLOAD"), Ok(ContentSha256::Unsigned));
        assert_eq!(
            parse_content_sha256("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            Ok(ContentSha256::Streaming {
                signed: false,
                trailer: true
            })
        );
        assert_eq!(
            parse_content_sha256("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            Ok(ContentSha256::Streaming {
                signed: true,
                trailer: false
            })
        );
        assert_eq!(
            parse_content_sha256("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"),
            Ok(ContentSha256::Streaming {
                signed: true,
                trailer: true
            })
        );
        let empty = checksum(Algorithm::Sha256, b"");
        let lower = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for text in [lower.to_owned(), lower.to_uppercase()] {
            let Ok(ContentSha256::Hash(expected)) = parse_content_sha256(&text) else {
                panic!("{text} is a hash");
            };
            assert_eq!(verify_content_sha256(&empty, &expected), Ok(()));
            assert_eq!(
                verify_content_sha256(&checksum(Algorithm::Sha256, b"x"), &expected),
                Err(ChecksumError::ContentSha256Mismatch)
            );
        }
        for bad in [
            "",
            "unsigned-payload",
            &lower[1..],
            &format!("{lower}0"),
            &lower.replace('e', "g"),
            "+3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert_eq!(
                parse_content_sha256(bad),
                Err(ChecksumError::ContentSha256Invalid),
                "{bad}"
            );
        }
        let non_ascii = format!("é{}", &lower[2..]);
        assert_eq!(
            parse_content_sha256(&non_ascii),
            Err(ChecksumError::ContentSha256Invalid)
        );
    }

    #[test]
    fn errors_map_to_s3_codes() {
        assert_eq!(ChecksumError::Invalid(Algorithm::Crc32).code(), "InvalidRequest");
        assert_eq!(
            ChecksumError::Invalid(Algorithm::Crc32).to_string(),
            "Value for x-amz-checksum-crc32 header is invalid."
        );
        assert_eq!(ChecksumError::Mismatch(Algorithm::Sha256).code(), "BadDigest");
        assert_eq!(
            ChecksumError::Mismatch(Algorithm::Crc64Nvme).to_string(),
            "The CRC64NVME you specified did not match the calculated checksum."
        );
        assert_eq!(
            ChecksumError::UnknownAlgorithm("MD5".to_owned()).code(),
            "InvalidRequest"
        );
        assert_eq!(ChecksumError::ContentSha256Mismatch.code(), "XAmzContentSHA256Mismatch");
        assert_eq!(ChecksumError::ContentSha256Invalid.code(), "InvalidArgument");
    }
}
