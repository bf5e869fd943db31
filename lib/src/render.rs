//! Plain-text tables for the command-line views: no borders, left-aligned columns two spaces
//! apart, no trailing blanks, so that they read well and diff and grep cleanly.

use comfy_table::{ContentArrangement, Table, presets::NOTHING};

/// Renders `rows` (the first is usually the header) one line each: columns as wide as their
/// widest cell and two spaces apart; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .add_rows(rows.iter().cloned());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::table;

    fn rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn columns_are_aligned_two_spaces_apart() {
        let text = table(&rows(&[
            &["SECTOR", "PHASE", "REASON"],
            &["f01000.1", "pc1", "out of memory"],
            &["f01000.12", "c2"],
            &["f01000.3", "", ""],
        ]));
        assert_eq!(
            text,
            "SECTOR     PHASE  REASON\n\
             f01000.1   pc1    out of memory\n\
             f01000.12  c2\n\
             f01000.3\n"
        );
        assert_eq!(table(&[]), "");
        assert_eq!(
            table(&rows(&[&["·…", "x"], &["ab", "y"]])),
            "·…  x\nab  y\n"
        );
    }
}
