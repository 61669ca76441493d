//! Replay: decides how quarantined events go through the pipeline again after a plan or
//! sender fix: grouped by source and by the edge signals they first arrived with (GPC,
//! country), in batches of 100; and which rows then leave the quarantine (every row
//! whose event is now stored, a duplicate, refused, or quarantined anew with other
//! reasons; a row quarantined again for the same reasons stays as it is).

use serde_json::{json, Value};

/// One quarantine row as read back.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub write_key: String,
    pub payload: Value,
    pub qkey: Option<String>,
    pub gpc: bool,
    pub country: Option<String>,
}

/// A batch to run through the pipeline.
#[derive(Debug, Clone)]
pub struct Batch {
    pub write_key: String,
    pub gpc: bool,
    pub country: Option<String>,
    pub rows: Vec<Row>,
}

impl Batch {
    /// The request body: a Segment batch with the source's write key.
    pub fn body(&self) -> String {
        let events: Vec<&Value> = self.rows.iter().map(|r| &r.payload).collect();
        json!({"batch": events, "writeKey": self.write_key}).to_string()
    }

    /// The rows to delete after the pipeline answered `report`.
    pub fn done(&self, report: &super::Report) -> Vec<i64> {
        self.rows
            .iter()
            .zip(&report.results)
            .filter(|(row, v)| v.status != super::Status::Quarantined || v.qkey != row.qkey)
            .map(|(row, _)| row.id)
            .collect()
    }
}

pub fn batches(mut rows: Vec<Row>) -> Vec<Batch> {
    rows.sort_by(|a, b| {
        (&a.write_key, a.gpc, &a.country, a.id).cmp(&(&b.write_key, b.gpc, &b.country, b.id))
    });
    let mut out: Vec<Batch> = Vec::new();
    for row in rows {
        match out.last_mut() {
            Some(b)
                if b.write_key == row.write_key
                    && b.gpc == row.gpc
                    && b.country == row.country
                    && b.rows.len() < 100 =>
            {
                b.rows.push(row)
            }
            _ => out.push(Batch {
                write_key: row.write_key.clone(),
                gpc: row.gpc,
                country: row.country.clone(),
                rows: vec![row],
            }),
        }
    }
    out
}
