//! Reads slmops records and writes them again with the `apache-avro` crate.
//!
//! Each stdin line is "<schema .avsc path>\t<hex of a single-object record>". For each, it
//! decodes the body with apache-avro, encodes the value again, and prints the hex of the
//! record it would produce: C3 01, the crate's own Rabin fingerprint of the schema, its body.
//! With "fingerprints" as its argument it prints, per schema path read from stdin, the path,
//! the crate's fingerprint and its canonical form, tab-separated.
// from_avro_datum/to_avro_datum: the plain datum API, deprecated but still in 0.22.
#![allow(deprecated)]

use std::io::{self, BufRead, Write};

use apache_avro::rabin::Rabin;
use apache_avro::{from_avro_datum, to_avro_datum, Schema};

fn parse(path: &str) -> Schema {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("read {path}: {e}")));
    Schema::parse_str(&text).unwrap_or_else(|e| fail(&format!("parse {path}: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(1)
}

fn main() {
    let fingerprints = std::env::args().nth(1).as_deref() == Some("fingerprints");
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| fail(&format!("stdin: {e}")));
        if fingerprints {
            let schema = parse(&line);
            let fp = schema.fingerprint::<Rabin>();
            writeln!(out, "{}\t{}\t{}", line, hex::encode(&fp.bytes), schema.canonical_form()).unwrap();
            continue;
        }
        let (path, record) = line
            .split_once('\t')
            .unwrap_or_else(|| fail(&format!("expected <path>\\t<hex>, got {line:?}")));
        let data = hex::decode(record).unwrap_or_else(|e| fail(&format!("bad hex for {path}: {e}")));
        if data.len() < 10 {
            fail(&format!("record for {path} is shorter than its header"));
        }
        let schema = parse(path);
        let value = from_avro_datum(&schema, &mut &data[10..], None)
            .unwrap_or_else(|e| fail(&format!("decode {path}: {e}")));
        let body = to_avro_datum(&schema, value).unwrap_or_else(|e| fail(&format!("encode {path}: {e}")));
        let mut written = vec![0xC3, 0x01];
        written.extend_from_slice(&schema.fingerprint::<Rabin>().bytes);
        written.extend_from_slice(&body);
        writeln!(out, "{}", hex::encode(written)).unwrap();
    }
}
