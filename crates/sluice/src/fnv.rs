//! FNV-1a (64-bit): the stable hash that names a key and an admission scope without holding the
//! key. Stable means the same value in every replica and every release — these values name
//! state shared through Redis — so the function must not change.

/// FNV-1a over `parts`, one after another. Plain loops over the slices: a chain of iterators
/// cost three times as much, and this runs on every attempt.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_values_and_parts_read_as_one_text() {
        // FNV-1a's published test values.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a(&[b"foo", b"", b"bar"]), fnv1a(&[b"foobar"]));
    }
}
