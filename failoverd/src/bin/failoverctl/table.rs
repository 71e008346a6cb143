//! Aligned text tables and human units (bytes, durations, times), for terminals.

use serde_json::Value;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of text cells under headers.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

/// Replaces control characters, so text from the daemon cannot move the cursor or recolour a
/// terminal.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Like [`sanitize`], but keeps line breaks (a daemon's error can have a `fix:` line).
pub fn sanitize_lines(text: &str) -> String {
    text.split('\n')
        .map(sanitize)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Table {
    pub fn new(headers: impl IntoIterator<Item = (String, Align)>) -> Self {
        Self {
            headers: headers.into_iter().collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table, columns separated by two spaces, no trailing whitespace, one line per row.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let cell = |row: &[String], i: usize| sanitize(row.get(i).map_or("", String::as_str));
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| (0..columns).map(|i| cell(r, i)).collect())
            .collect();
        let widths: Vec<usize> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain(std::iter::once(h.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.headers.iter().map(|(h, _)| sanitize(h)).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(rows.iter()) {
            let mut line = String::new();
            for (i, ((text, (_, align)), width)) in
                row.iter().zip(&self.headers).zip(&widths).enumerate()
            {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width.saturating_sub(text.chars().count());
                match align {
                    Align::Left => {
                        line.push_str(text);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(text);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| {
            let key = format!("{k}:");
            format!("{key:<width$}  {}\n", sanitize(v))
        })
        .collect()
}

/// `1.5 KiB`, `12.0 MiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = "KiB";
    for next in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// A short figure in milliseconds: `0.35 ms`, `1.2 ms`, `82.0 ms`, `1.25 s`.
pub fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "-".into()
    } else if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// An age or interval: `350ms`, `3.5s`, `12s`, `3m12s`, `2h03m`, `4d02h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    if secs < 1.0 {
        return format!("{:.0}ms", secs * 1000.0);
    }
    if secs < 10.0 && secs.fract() != 0.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.min(1e15) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A share 0..1 as a percentage: `0.0%`, `12.5%`.
pub fn percent(share: f64) -> String {
    if share.is_finite() {
        format!("{:.1}%", share * 100.0)
    } else {
        "-".into()
    }
}

/// Milliseconds since the Unix epoch as `2025-01-02 03:04:05 UTC`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Any JSON value as a cell: null `-`, strings bare, arrays joined with `, `.
pub fn plain(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(list)) if list.is_empty() => "-".into(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(v @ Value::Object(_)) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_columns_without_trailing_space() {
        let mut t = Table::new([
            ("NAME".to_string(), Align::Left),
            ("RX".to_string(), Align::Right),
            ("NOTE".to_string(), Align::Left),
        ]);
        t.push(vec!["dc1".into(), "1.2 MiB".into(), String::new()]);
        t.push(vec!["datacenter-2".into(), "0 B".into(), "x".into()]);
        t.push(vec!["short".into()]);
        let out = t.render();
        assert_eq!(
            out,
            "NAME               RX  NOTE\n\
             dc1           1.2 MiB\n\
             datacenter-2      0 B  x\n\
             short\n"
        );
    }

    #[test]
    fn widths_count_characters_and_control_characters_are_replaced() {
        let mut t = Table::new([
            ("A".to_string(), Align::Left),
            ("B".to_string(), Align::Left),
        ]);
        t.push(vec!["é\u{1b}[31m".into(), "z".into()]);
        t.push(vec!["ab".into(), "y".into()]);
        assert_eq!(t.render(), "A       B\né?[31m  z\nab      y\n");
        assert_eq!(sanitize_lines("a\u{1b}\n  fix: b\r"), "a?\n  fix: b?");
    }

    #[test]
    fn key_value_block() {
        let out = key_values(&[
            ("active", "dc1".into()),
            ("stable address", "100.96.0.2".into()),
        ]);
        assert_eq!(out, "active:          dc1\nstable address:  100.96.0.2\n");
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(millis(0.345), "0.34 ms");
        assert_eq!(millis(1.24), "1.2 ms");
        assert_eq!(millis(82.0), "82.0 ms");
        assert_eq!(millis(1250.0), "1.25 s");
        assert_eq!(millis(f64::NAN), "-");
        assert_eq!(duration(0.35), "350ms");
        assert_eq!(duration(3.5), "3.5s");
        assert_eq!(duration(12.0), "12s");
        assert_eq!(duration(3.0), "3s");
        assert_eq!(duration(192.0), "3m12s");
        assert_eq!(duration(7380.0), "2h03m");
        assert_eq!(duration(4.0 * 86_400.0 + 7200.0), "4d02h");
        assert_eq!(duration(-1.0), "-");
        assert_eq!(duration(f64::INFINITY), "-");
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(percent(0.0), "0.0%");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_787_045_678), "2025-01-02 03:04:05 UTC");
        assert_eq!(utc(4_107_542_399_000), "2100-02-28 23:59:59 UTC");
        let _ = utc(u64::MAX);
    }

    #[test]
    fn plain_values() {
        assert_eq!(plain(None), "-");
        assert_eq!(plain(Some(&json!(null))), "-");
        assert_eq!(plain(Some(&json!("x"))), "x");
        assert_eq!(plain(Some(&json!(["a", 1]))), "a, 1");
        assert_eq!(plain(Some(&json!([]))), "-");
        assert_eq!(plain(Some(&json!({"a": 1}))), "{\"a\":1}");
        assert_eq!(plain(Some(&json!(2.5))), "2.5");
    }
}
