//! Lower-case hexadecimal of an integer, zero-padded, and decimal: ids, scope names, key labels
//! and amounts built on every request, where `format!("{:016x}")` goes through the formatting
//! machinery (padding, width, a `Formatter`) at several times the cost of these loops.

/// The low `digits` hex digits of `v` (at most 32), most significant first, zero-padded.
pub(crate) fn push(out: &mut String, v: u128, digits: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = digits.min(32);
    // Written into bytes and added at once: pushing a `char` at a time checks and encodes each.
    let mut buf = [b'0'; 32];
    for (i, b) in buf[..digits].iter_mut().rev().enumerate() {
        *b = DIGITS[((v >> (i * 4)) & 0xf) as usize];
    }
    out.push_str(std::str::from_utf8(&buf[..digits]).unwrap_or_default());
}

/// `v` in decimal, at least `width` digits (zero-padded on the left).
pub(crate) fn push_decimal(out: &mut String, v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = v;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    at = at.min(digits.len().saturating_sub(width));
    // ASCII digits, pushed as they are (no UTF-8 check of the buffer).
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_are_what_format_writes() {
        for (v, w) in [
            (0u64, 1),
            (7, 9),
            (420_000, 9),
            (1234, 2),
            (u64::MAX, 1),
            (5, 20),
        ] {
            let mut s = String::new();
            super::push_decimal(&mut s, v, w);
            assert_eq!(s, format!("{v:0w$}"));
        }
    }

    #[test]
    fn writes_what_format_writes() {
        for (v, d) in [
            (0u128, 16),
            (0xabc, 16),
            (u64::MAX as u128, 16),
            (u128::MAX, 32),
            (0x1234_5678_9abc_def0_1122_3344_5566_7788, 32),
            // Fewer digits than the value has: the low ones, after what was there.
            (0xdead_beef, 4),
            (0x1234_5678, 2),
            (0xab, 1),
        ] {
            let mut s = String::from(">");
            super::push(&mut s, v, d);
            let full = format!("{v:032x}");
            assert_eq!(s, format!(">{}", &full[32 - d..]), "{v:x} in {d} digits");
        }
    }
}
