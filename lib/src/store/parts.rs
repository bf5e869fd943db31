//! How an upload is cut into parts: a part size that grows with the object, so that no upload
//! needs more than the 10,000 parts S3 and GCS allow, and how many parts are in flight at once.

const MIB: u64 = 1 << 20;

/// The smallest part. S3 refuses parts under 5 MiB (all but the last); 8 MiB keeps the number of
/// requests low for the files up to 80 GiB that need no more.
pub const MIN_PART: u64 = 8 * MIB;
/// The most parts one upload may have (S3, GCS; Azure allows 50,000 blocks).
pub const MAX_PARTS: u64 = 10_000;
/// The largest part S3 takes.
pub const MAX_PART: u64 = 5 << 30;
/// The largest object S3 and GCS take. The same limit holds on every store, so that what a
/// file store accepts in tests, S3 accepts in production.
pub const MAX_OBJECT: u64 = 5 << 40;

/// Bytes of parts one upload keeps in flight at most (beside the part being filled), so that a
/// few uploads at once stay within a worker's memory whatever the part size.
const IN_FLIGHT_BYTES: u64 = 128 * MIB;
/// Parts in flight at most: eight 8 MiB requests keep a store's link busy across the latency of
/// each request (one at a time left S3 idle between parts) and let the store write them in
/// parallel.
const MAX_CONCURRENCY: usize = 8;
/// Parts in flight at least, so that one part's request overlaps the reading of the next.
const MIN_CONCURRENCY: usize = 2;

/// How an object of a given length is uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Bytes in every part but the last.
    pub part_size: u64,
    /// Parts in all (1 for an empty object).
    pub parts: u64,
    /// Parts in flight at once.
    pub concurrency: usize,
}

/// The upload plan for an object of `len` bytes: parts of at least 8 MiB, in whole MiB, as small
/// as keeps the count within 10,000. `None` above 5 TiB, which no store here takes in one object.
pub fn plan(len: u64) -> Option<Plan> {
    if len > MAX_OBJECT {
        return None;
    }
    let part_size = len.div_ceil(MAX_PARTS).next_multiple_of(MIB).max(MIN_PART);
    debug_assert!(part_size <= MAX_PART);
    let concurrency =
        ((IN_FLIGHT_BYTES / part_size) as usize).clamp(MIN_CONCURRENCY, MAX_CONCURRENCY);
    Some(Plan {
        part_size,
        parts: len.div_ceil(part_size).max(1),
        concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn sector_files_get_parts_within_the_limit() {
        for (len, part_size, parts, concurrency) in [
            (2 << 10, 8 * MIB, 1, 8),
            (8 * MIB, 8 * MIB, 1, 8),
            // A 32GiB sector's sealed and unsealed files, and each of its layers.
            (32 * GIB, 8 * MIB, 4096, 8),
            // A 64GiB sector's: 8 MiB parts still fit, with 8,192 of them.
            (64 * GIB, 8 * MIB, 8192, 8),
            // Past 80 GiB 8 MiB parts would be too many.
            (80 * GIB + 1, 9 * MIB, 9103, 8),
            // A 64GiB sector's tree-d: 8 MiB parts would need 16,384.
            (128 * GIB, 14 * MIB, 9363, 8),
            (5 << 40, 525 * MIB, 9987, 2),
        ] {
            assert_eq!(
                plan(len),
                Some(Plan {
                    part_size,
                    parts,
                    concurrency
                }),
                "{len} bytes"
            );
        }
        assert_eq!(plan(0).map(|p| p.parts), Some(1));
        assert_eq!(plan(MAX_OBJECT + 1), None);
    }

    proptest! {
        #[test]
        fn parts_are_whole_mib_within_the_limits_and_as_small_as_can_be(len in 0..=MAX_OBJECT) {
            let p = plan(len).unwrap();
            prop_assert!(p.parts <= MAX_PARTS);
            prop_assert!(p.part_size >= MIN_PART && p.part_size <= MAX_PART);
            prop_assert_eq!(p.part_size % MIB, 0);
            prop_assert!(p.part_size * p.parts >= len);
            // One MiB less would be under the minimum or too many parts.
            let smaller = p.part_size - MIB;
            prop_assert!(smaller < MIN_PART || len.div_ceil(smaller) > MAX_PARTS);
            prop_assert!(p.concurrency as u64 * p.part_size <= IN_FLIGHT_BYTES
                || p.concurrency == MIN_CONCURRENCY);
        }
    }
}
