//! Byte counts as people write and read them: flags and config values (`500GiB`, `1.5 GiB`) and
//! the sizes that views and messages show (`448.0 GiB`).

use bytesize::{ByteSize, Unit};

/// Parses a byte count for flags and config: `1048576`, `64KiB`, `1.5 GiB`, `2TB`. Units are
/// binary: `KB`, `MB`… are read as their binary twins, as lotus does.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let unknown = || {
        format!(
            "{s:?} has an unknown unit {unit:?}: write a byte count like 4096, 64KiB, 500GiB or \
             2TiB"
        )
    };
    let unit = if unit.is_empty() {
        Unit::Byte
    } else {
        unit.parse().map_err(|_| unknown())?
    };
    let binary = match unit {
        Unit::Byte => "B",
        Unit::KiloByte | Unit::KibiByte => "KiB",
        Unit::MegaByte | Unit::MebiByte => "MiB",
        Unit::GigaByte | Unit::GibiByte => "GiB",
        Unit::TeraByte | Unit::TebiByte => "TiB",
        Unit::PetaByte | Unit::PebiByte => "PiB",
        Unit::ExaByte | Unit::ExbiByte => "EiB",
        _ => return Err(unknown()),
    };
    let size: ByteSize = format!("{number} {binary}")
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count: write e.g. 4096, 64KiB or 500GiB"))?;
    // u64::MAX means "unlimited" to the views, and is where a too-large count saturates.
    if size.as_u64() == u64::MAX {
        return Err(format!("{s:?} is too large"));
    }
    Ok(size.as_u64())
}

/// Bytes for people: `512 B`, `64.0 KiB`, `448.0 GiB`; `u64::MAX` is `unlimited`.
pub fn human_bytes(n: u64) -> String {
    if n == u64::MAX {
        return "unlimited".into();
    }
    ByteSize(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_binary_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("2tb"), Ok(2 << 40));
        assert_eq!(parse_bytes(" 56GB "), Ok(56 << 30));
        assert_eq!(parse_bytes("10k"), Ok(10 << 10));
        let e = parse_bytes("12 parsecs").unwrap_err();
        assert!(e.contains("unknown unit") && e.contains("500GiB"), "{e}");
        assert!(
            parse_bytes("1.2.3GiB")
                .unwrap_err()
                .contains("not a byte count")
        );
        assert!(parse_bytes("GiB").unwrap_err().contains("not a byte count"));
        assert!(
            parse_bytes("99999999EiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn byte_counts_show_in_binary_units() {
        assert_eq!(human_bytes(448 << 30), "448.0 GiB");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(64 << 10), "64.0 KiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "unlimited");
    }
}
