//! The parts of a completed multipart value, as GetObject and HeadObject
//! with `?partNumber=N` read them.
//!
//! A completed upload is one value on the volumes; where its parts began is
//! kept as one metadata entry (`PARTS_ENTRY`, never sent as a header): the
//! part sizes run-length encoded, `size*count` runs joined by `,`
//! (`8388608*99,1234` for 99 parts of 8 MiB and a last of 1234 bytes). A
//! value of many distinct part sizes whose runs would not fit
//! `PART_SIZES_BYTES_MAX` keeps no entry, nor does one completed before
//! mkv kept them: reading such a value by part number answers 501.
//! Any other value is one part.

use super::body::CHECKSUM_ENTRY_PREFIX;
use super::request::{ByteRange, S3Request};
use super::S3Error;

/// The metadata entry of the part sizes: the internal-entry prefix, which
/// no user metadata name may start with.
pub const PARTS_ENTRY: &str = "!parts";
/// Longest encoding of the part sizes kept.
const PART_SIZES_BYTES_MAX: usize = 8 * 1024;
/// Part numbers S3 allows.
const PART_NUMBER_MAX: u32 = 10_000;

/// The metadata entry that keeps `sizes`, or None when it would be too
/// long to keep.
pub fn entry(sizes: impl IntoIterator<Item = u64>) -> Option<(String, String)> {
    let mut runs: Vec<(u64, u32)> = Vec::new();
    for size in sizes {
        match runs.last_mut() {
            Some((last, count)) if *last == size => *count += 1,
            _ => runs.push((size, 1)),
        }
    }
    let text = runs
        .iter()
        .map(|(size, count)| format!("{size}*{count}"))
        .collect::<Vec<_>>()
        .join(",");
    (text.len() <= PART_SIZES_BYTES_MAX).then(|| (PARTS_ENTRY.to_owned(), text))
}

/// The part sizes of an entry's value, in order; None when malformed.
fn sizes(text: &str) -> Option<Vec<u64>> {
    let mut sizes = Vec::new();
    for run in text.split(',') {
        let (size, count) = run.split_once('*')?;
        let (size, count) = (size.parse::<u64>().ok()?, count.parse::<u32>().ok()?);
        if count == 0 || sizes.len() + count as usize > PART_NUMBER_MAX as usize {
            return None;
        }
        sizes.extend(std::iter::repeat_n(size, count as usize));
    }
    Some(sizes)
}

/// The `partNumber` a GetObject or HeadObject asks for, if any: an integer
/// from 1 to 10,000, and not together with a `Range`.
pub fn requested(request: &S3Request) -> Result<Option<u32>, S3Error> {
    let Some(text) = request.param("partNumber") else {
        return Ok(None);
    };
    let number = std::str::from_utf8(text)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|text| text.parse::<u32>().ok())
        .filter(|number| (1..=PART_NUMBER_MAX).contains(number))
        .ok_or_else(|| {
            S3Error::new(
                400,
                "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })?;
    if request.headers.range.is_some() {
        return Err(S3Error::new(
            400,
            "InvalidRequest",
            "Cannot specify both Range header and partNumber query parameter",
        ));
    }
    Ok(Some(number))
}

/// Part `number` of a value of `size` bytes with ETag `etag` and metadata
/// entries `user`: its byte range (None for an empty part), its length,
/// and the value's part count when it is a multipart one
/// (`x-amz-mp-parts-count`).
pub fn range(
    number: u32,
    size: u64,
    etag: &str,
    user: &[(String, String)],
) -> Result<(Option<ByteRange>, u64, Option<u32>), S3Error> {
    let entry = user.iter().find(|(name, _)| name == PARTS_ENTRY);
    let multipart = etag.contains('-');
    let sizes = match entry {
        Some((_, text)) => sizes(text).ok_or_else(|| S3Error::internal("the part sizes kept are malformed"))?,
        None if multipart => {
            return Err(S3Error::new(
                501,
                "NotImplemented",
                "The part sizes of this object were not kept (completed before mkv kept them, or too many \
                 distinct sizes): read it by Range.",
            ))
        }
        None => vec![size],
    };
    let count = sizes.len() as u32;
    if number > count {
        return Err(S3Error::new(
            416,
            "InvalidPartNumber",
            "The requested partnumber is not satisfiable",
        ));
    }
    let first: u64 = sizes[..number as usize - 1].iter().sum();
    let part = sizes[number as usize - 1];
    let range = (part > 0).then(|| ByteRange {
        first,
        last: first + part - 1,
    });
    Ok((range, part, multipart.then_some(count)))
}

/// Whether `name` is a metadata entry of mkv's own (a checksum, the part
/// sizes), never user metadata.
pub fn is_internal(name: &str) -> bool {
    name.starts_with(CHECKSUM_ENTRY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(entry: Option<(String, String)>) -> Vec<(String, String)> {
        entry.into_iter().collect()
    }

    #[test]
    fn sizes_round_trip_run_length_encoded() {
        let sizes_in = [5, 5, 5, 1, 7, 7];
        let (name, text) = entry(sizes_in).unwrap();
        assert_eq!(name, PARTS_ENTRY);
        assert_eq!(text, "5*3,1*1,7*2");
        assert_eq!(sizes(&text).unwrap(), sizes_in);
    }

    #[test]
    fn too_many_distinct_sizes_keep_no_entry() {
        assert!(entry((0..10_000u64).map(|part| 5_242_880 + part)).is_none());
        assert!(entry(std::iter::repeat_n(5_242_880u64, 10_000)).is_some());
    }

    #[test]
    fn malformed_entries_are_refused() {
        for text in ["", "5", "5*0", "x*1", "5*1,", "1*10001", "1*5000,2*5001"] {
            assert_eq!(sizes(text), None, "{text}");
        }
    }

    #[test]
    fn parts_of_a_multipart_value() {
        let user = user(entry([10, 10, 3]));
        let part = |number| range(number, 23, "abc-3", &user).map_err(|error| (error.status, error.code));
        assert_eq!(part(1), Ok((Some(ByteRange { first: 0, last: 9 }), 10, Some(3))));
        assert_eq!(part(2), Ok((Some(ByteRange { first: 10, last: 19 }), 10, Some(3))));
        assert_eq!(part(3), Ok((Some(ByteRange { first: 20, last: 22 }), 3, Some(3))));
        assert_eq!(part(4), Err((416, "InvalidPartNumber")));
        // An empty last part is empty, not the whole value.
        let user = super::tests::user(entry([10, 0]));
        assert_eq!(
            range(2, 10, "abc-2", &user).map_err(|error| error.status),
            Ok((None, 0, Some(2)))
        );
    }

    #[test]
    fn a_single_part_value_is_one_part() {
        let part = |number, size| range(number, size, "abc", &[]).map_err(|error| error.status);
        assert_eq!(part(1, 4), Ok((Some(ByteRange { first: 0, last: 3 }), 4, None)));
        assert_eq!(part(1, 0), Ok((None, 0, None)));
        assert_eq!(part(2, 4), Err(416));
    }

    #[test]
    fn a_multipart_value_without_sizes_is_not_read_by_part() {
        assert_eq!(range(1, 23, "abc-3", &[]).unwrap_err().status, 501);
    }
}
