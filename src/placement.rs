//! Placement: where a key's bytes live.
//!
//! Both functions are pure and must match the original Go master bit for bit:
//! a change here silently orphans every value already stored. `key2path` names
//! the file on a volume; `key2volume` picks the volumes (and subvolume
//! directory) by rendezvous hashing with md5.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};

/// Longest file name a volume's filesystem accepts (ext4, xfs, btrfs).
pub const FILE_NAME_BYTES_MAX: usize = 255;

/// Longest key whose base64 file name fits in `FILE_NAME_BYTES_MAX`:
/// base64 turns every started 3 bytes into 4, so 189 bytes -> 252 characters.
pub const KEY_BYTES_MAX: usize = FILE_NAME_BYTES_MAX / 4 * 3;

const _: () = assert!(KEY_BYTES_MAX.div_ceil(3) * 4 <= FILE_NAME_BYTES_MAX);
const _: () = assert!((KEY_BYTES_MAX + 1).div_ceil(3) * 4 > FILE_NAME_BYTES_MAX);

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The path of a key's file on a volume: `/hh/hh/base64(key)`, appended to `out`.
pub fn key2path_into(key: &[u8], out: &mut Vec<u8>) {
    push_path(out, path_hash(key), key);
}

/// The two md5 bytes that name a key's directories (`/hh/hh/`).
pub fn path_hash(key: &[u8]) -> [u8; 2] {
    let digest = Md5::digest(key);
    [digest[0], digest[1]]
}

/// `key2path_into` with the md5 already taken (`path_hash(key)`).
pub fn push_path(out: &mut Vec<u8>, path_hash: [u8; 2], key: &[u8]) {
    out.push(b'/');
    push_hex2(out, path_hash[0], HEX_LOWER);
    out.push(b'/');
    push_hex2(out, path_hash[1], HEX_LOWER);
    out.push(b'/');
    let start = out.len();
    out.resize(start + base64_len(key.len()), 0);
    let written = STANDARD
        .encode_slice(key, &mut out[start..])
        .expect("buffer sized by base64_len");
    debug_assert_eq!(written, base64_len(key.len()));
}

/// Whether `key`'s file name on a volume is its own. Standard base64 uses
/// `/`, and both nginx and the filesystem merge a run of slashes into one, so
/// a name with a leading, trailing or doubled `/` is the same file as other
/// keys' names (`a//b` and `a/b`; `/hh/hh//x` and `/hh/hh/x`), and a
/// trailing one names a directory. Such a key must never be written: its
/// bytes would overwrite, and its delete remove, another key's value.
/// Placement itself is unchanged (SPEC.md); these keys are refused instead.
pub fn path_is_own(key: &[u8]) -> bool {
    let mut name = [0u8; FILE_NAME_BYTES_MAX + 1];
    let Ok(length) = STANDARD.encode_slice(key, &mut name) else {
        // Too long for any volume's file name: the length check refuses it.
        return false;
    };
    let name = &name[..length];
    name.first() != Some(&b'/') && name.last() != Some(&b'/') && !name.windows(2).any(|pair| pair == b"//")
}

/// The path of a key's file on a volume, as a `String`.
pub fn key2path(key: &[u8]) -> String {
    let mut out = Vec::with_capacity(8 + base64_len(key.len()));
    key2path_into(key, &mut out);
    String::from_utf8(out).expect("hex and base64 are ascii")
}

/// The `replicas` volume entries that should hold `key`, best first.
///
/// An entry is the volume itself, or `volume/svXX` when there is more than
/// one subvolume. Fewer entries come back only when there are fewer volumes.
pub fn key2volume(key: &[u8], volumes: &[String], replicas: usize, subvolumes: u32) -> Vec<String> {
    let mut scored: Vec<([u8; 16], &String)> = volumes
        .iter()
        .map(|volume| {
            let mut hasher = Md5::new();
            hasher.update(key);
            hasher.update(volume.as_bytes());
            (hasher.finalize().into(), volume)
        })
        .collect();
    // Stable sort, descending by score: equal scores keep the -volumes order.
    scored.sort_by_key(|&(score, _)| std::cmp::Reverse(score));
    scored
        .iter()
        .take(replicas)
        .map(|(score, volume)| {
            if subvolumes == 1 {
                return (*volume).clone();
            }
            let n = u32::from_be_bytes([score[12], score[13], score[14], score[15]]);
            let mut entry = Vec::with_capacity(volume.len() + 5);
            entry.extend_from_slice(volume.as_bytes());
            entry.extend_from_slice(b"/sv");
            // The original formats `%02X` of a value below `subvolumes`; values
            // above 255 print more digits, which this reproduces.
            let subvolume = n % subvolumes;
            match u8::try_from(subvolume) {
                Ok(byte) => push_hex2(&mut entry, byte, HEX_UPPER),
                Err(_) => entry.extend_from_slice(format!("{subvolume:02X}").as_bytes()),
            }
            String::from_utf8(entry).expect("volume names are strings")
        })
        .collect()
}

/// Whether a record's volumes differ from where placement puts the key now.
pub fn needs_rebalance(recorded: &[String], placed: &[String]) -> bool {
    recorded != placed
}

/// The `host:port` part of a volume entry (`host:port/sv0A` -> `host:port`).
pub fn entry_host(entry: &str) -> &str {
    entry.split_once('/').map_or(entry, |(host, _)| host)
}

/// The path prefix of a volume entry (`host:port/sv0A` -> `/sv0A`, else ``).
pub fn entry_prefix(entry: &str) -> &str {
    entry.find('/').map_or("", |slash| &entry[slash..])
}

fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// The `/svXX` suffix of a volume entry for subvolume `subvolume`, appended to `out`.
pub fn push_subvolume(out: &mut Vec<u8>, subvolume: u8) {
    out.extend_from_slice(b"/sv");
    push_hex2(out, subvolume, HEX_UPPER);
}

/// The subvolume of an entry suffix `/svXX` (two upper-case hex digits), as
/// `push_subvolume` writes it; None for any other suffix.
pub fn parse_subvolume(suffix: &str) -> Option<u8> {
    let digits = suffix.strip_prefix("/sv")?.as_bytes();
    let value = |digit: u8| HEX_UPPER.iter().position(|&known| known == digit);
    match digits {
        &[high, low] => Some((value(high)? * 16 + value(low)?) as u8),
        _ => None,
    }
}

fn push_hex2(out: &mut Vec<u8>, byte: u8, digits: &[u8; 16]) {
    out.push(digits[usize::from(byte >> 4)]);
    out.push(digits[usize::from(byte & 0xf)]);
}

/// Lower-case hex of an md5 digest, as stored in records and `Content-Md5`.
pub fn hex_lower(digest: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in digest.iter().enumerate() {
        out[2 * i] = HEX_LOWER[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX_LOWER[usize::from(byte & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn key2path_matches_original() {
        assert_eq!(key2path(b"hello"), "/5d/41/aGVsbG8=");
        assert_eq!(key2path(b"helloworld"), "/fc/5e/aGVsbG93b3JsZA==");
    }

    #[test]
    fn key2volume_matches_original() {
        let volumes = strings(&["larry", "moe", "curly"]);
        let expected = [
            ("hello", "larry"),
            ("helloworld", "curly"),
            ("world", "moe"),
            ("blah", "curly"),
        ];
        for (key, volume) in expected {
            let entries = key2volume(key.as_bytes(), &volumes, 1, 3);
            assert_eq!(entries.len(), 1);
            assert_eq!(entry_host(&entries[0]), volume, "key {key}");
            assert!(entries[0].starts_with(&format!("{volume}/sv0")), "{entries:?}");
        }
    }

    #[test]
    fn key2volume_without_subvolumes_is_the_volume() {
        let volumes = strings(&["larry", "moe", "curly"]);
        let entries = key2volume(b"hello", &volumes, 3, 1);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0], "larry");
        let mut sorted = entries.clone();
        sorted.sort();
        assert_eq!(sorted, strings(&["curly", "larry", "moe"]));
    }

    #[test]
    fn key_bytes_max_fits_a_file_name() {
        let key = vec![b'k'; KEY_BYTES_MAX];
        let path = key2path(&key);
        assert!(path.rsplit('/').next().unwrap().len() <= FILE_NAME_BYTES_MAX);
    }

    #[test]
    fn entry_parts() {
        assert_eq!(entry_host("localhost:3001/sv0A"), "localhost:3001");
        assert_eq!(entry_prefix("localhost:3001/sv0A"), "/sv0A");
        assert_eq!(entry_host("localhost:3001"), "localhost:3001");
        assert_eq!(entry_prefix("localhost:3001"), "");
    }

    #[test]
    fn subvolume_suffix_round_trips_and_rejects_other_spellings() {
        for subvolume in [0u8, 9, 10, 0xAB, 0xFF] {
            let mut suffix = Vec::new();
            push_subvolume(&mut suffix, subvolume);
            let suffix = String::from_utf8(suffix).unwrap();
            assert_eq!(suffix, format!("/sv{subvolume:02X}"));
            assert_eq!(parse_subvolume(&suffix), Some(subvolume));
        }
        for other in ["/sv0a", "/sv1", "/sv100", "/xx01", "", "/sv", "/svG0"] {
            assert_eq!(parse_subvolume(other), None, "{other}");
        }
    }

    #[test]
    fn subvolumes_above_255_print_more_digits() {
        let volumes = strings(&["larry", "moe", "curly"]);
        let entries = key2volume(b"hello", &volumes, 3, 4096);
        assert!(entries.iter().any(|entry| entry_prefix(entry).len() > 5), "{entries:?}");
        for entry in &entries {
            let n = u32::from_str_radix(&entry_prefix(entry)[3..], 16).unwrap();
            assert!(n < 4096 && entry_prefix(entry) == format!("/sv{n:02X}"), "{entry}");
        }
    }

    #[test]
    fn own_paths_have_no_mergeable_slashes() {
        // base64 "/" is the 6-bit group 63: 0xff bytes spell runs of it.
        assert!(path_is_own(b"plain key"));
        assert!(path_is_own(b""));
        // "a?x45336" encodes to "YT94NDUzMzY=": no slash at all.
        assert!(path_is_own(b"a?x45336"));
        // "a?\xff\xff\xffx45336" encodes with "////" in the middle.
        assert!(!path_is_own(b"a?\xff\xff\xffx45336"));
        // A single slash inside the name is a subdirectory of its own.
        assert!(path_is_own(b"\x00\x0f\xc0abc"));
        // Leading: a first byte of 0xfc..=0xff starts the name with "/".
        assert!(!path_is_own(b"\xfcab"));
        // Trailing: a last group of three whose low six bits are all set.
        assert!(!path_is_own(b"ab\x3f"));
        for key in [&b"a?\xff\xff\xffx45336"[..], b"\xfcab", b"ab\x3f"] {
            let path = key2path(key);
            let name = &path[7..];
            assert!(
                name.starts_with('/') || name.ends_with('/') || name.contains("//"),
                "{path}"
            );
        }
    }
}
