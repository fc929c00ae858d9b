//! Lower-case hexadecimal of an integer, zero-padded: ids and scope names built on every
//! request, where `format!("{:016x}")` goes through the formatting machinery (padding, width,
//! a `Formatter`) at several times the cost of this loop.

/// The low `digits` hex digits of `v` (at most 32), most significant first, zero-padded.
pub(crate) fn push(out: &mut String, v: u128, digits: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = digits.min(32);
    for i in (0..digits).rev() {
        let nibble = ((v >> (i * 4)) & 0xf) as usize;
        out.push(char::from(DIGITS[nibble]));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_what_format_writes() {
        for (v, d) in [
            (0u128, 16),
            (0xabc, 16),
            (u64::MAX as u128, 16),
            (u128::MAX, 32),
            (0x1234_5678_9abc_def0_1122_3344_5566_7788, 32),
        ] {
            let mut s = String::new();
            super::push(&mut s, v, d);
            assert_eq!(s, format!("{v:0w$x}", w = d));
        }
    }
}
