//! Storage quantities (`1Gi`, `500M`, `2e9`) as whole bytes, for the one place Rampart does
//! arithmetic on them: the scratch namespace's storage quota.

/// The bytes `quantity` stands for, rounded up to a whole byte; `None` when it is not a
/// Kubernetes quantity Rampart reads (negative, or a suffix it does not know).
pub fn bytes(quantity: &str) -> Option<u128> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let scale: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 10u128.pow(3),
        "M" => 10u128.pow(6),
        "G" => 10u128.pow(9),
        "T" => 10u128.pow(12),
        "P" => 10u128.pow(15),
        "E" => 10u128.pow(18),
        s if s.starts_with(['e', 'E']) => 10u128.checked_pow(s[1..].parse::<u32>().ok()?)?,
        _ => return None,
    };
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // The fraction as digits over a power of ten, rounded up: a request of 1.5Gi needs every
    // byte of it.
    let digits = fraction.len().min(18) as u32;
    let numerator: u128 = if digits == 0 {
        0
    } else {
        fraction[..digits as usize].parse().ok()?
    };
    let denominator = 10u128.pow(digits);
    let part = (numerator.checked_mul(scale)?).div_ceil(denominator);
    whole.checked_mul(scale)?.checked_add(part)
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn binary_decimal_and_exponent_suffixes() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("512Mi"), Some(512 << 20));
        assert_eq!(bytes("2G"), Some(2_000_000_000));
        assert_eq!(bytes("100"), Some(100));
        assert_eq!(bytes("3e3"), Some(3000));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("0.1"), Some(1), "a part of a byte is a whole byte");
    }

    #[test]
    fn what_is_not_a_quantity_is_none() {
        for q in ["", "Gi", "-1Gi", "1Xi", "1..5", "abc"] {
            assert_eq!(bytes(q), None, "{q}");
        }
    }
}
