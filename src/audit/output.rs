//! How replays and exports are written: text, JSON lines, CSV (defused
//! against formula injection), and a writer that digests what it writes.

use std::io::Write;

use anyhow::Context;

use super::history::History;
use super::record::{self};

/// Output formats of `audit replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// One line per decision, for people.
    Text,
    /// One JSON object per decision, for tools.
    Jsonl,
}

/// Output formats of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Writes a history for people: one line per decision, then the findings and a summary.
pub fn write_text(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    for record in history.records() {
        writeln!(out, "{}", record.text_line())?;
    }
    for finding in &history.findings {
        writeln!(out, "PROBLEM {finding}")?;
    }
    for finding in &history.log_findings {
        writeln!(out, "PROBLEM {finding}")?;
    }
    let diverging = history
        .checks
        .iter()
        .filter(|(_, c)| !c.is_identical())
        .count();
    writeln!(
        out,
        "{} decision(s) in {} event(s) of {} stream(s): {} identical, {} diverging; {} problem(s)",
        history.checks.len(),
        history.events,
        history.streams,
        history.checks.len() - diverging,
        diverging,
        history.problems()
    )?;
    Ok(())
}

/// Writes one JSON object per decision.
pub fn write_jsonl(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    write_jsonl_rows(history.records(), out)
}

/// Writes the decisions as CSV with a header row.
pub fn write_csv(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    write_csv_rows(&record::FIELDS, history.records(), out)
}

/// Writes rows as JSON lines; returns how many.
pub fn write_jsonl_rows<T: serde::Serialize>(
    rows: impl IntoIterator<Item = T>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, &row)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes rows as RFC 4180 CSV under `header`, every cell safe to open in a
/// spreadsheet: one that starts with `=`, `+`, `-`, `@`, a tab or a carriage
/// return gets a leading `'` (OWASP's rule against CSV injection).
pub fn write_csv_rows<T: serde::Serialize>(
    header: &[&str],
    rows: impl IntoIterator<Item = T>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // The header is written even when there is no row.
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    writer.write_record(header)?;
    for row in rows {
        // Serialized once into cells of their own, so every cell is seen as text.
        let mut cells = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(vec![]);
        cells.serialize(row).context("writing CSV")?;
        let bytes = cells.into_inner().context("writing CSV")?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        let mut record = csv::StringRecord::new();
        reader.read_record(&mut record).context("writing CSV")?;
        writer.write_record(record.iter().map(|cell| defuse(cell).into_owned()))?;
    }
    writer.flush()?;
    Ok(())
}

/// A cell as it is safe to open in a spreadsheet.
pub fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// A writer that counts and hashes what passes through it: the manifest's digest.
pub struct Digesting<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Digesting<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        use sha2::Digest;
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// The bytes written and their hex SHA-256.
    pub fn finish(self) -> (u64, String) {
        use sha2::Digest;
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
