//! Issue 18: the output is consumable with standard tools alone. The worker runs twice (so chains
//! have more than one link) against nats-server and moto (Object Lock bucket, versions) under a
//! prefix; then `tests/support/consumer.py`, in a venv holding only nats-py, boto3, cryptography,
//! rfc8785 and jsonschema, reads the stream with a pull consumer and verifies every event,
//! artifact, manifest (canonical per rfc8785), signature, chain index entry, chain and checkpoint,
//! and compares vigil's number formatting with rfc8785's on 250,000 values.

mod common;

use std::time::Duration;

use common::*;

/// xorshift64*: reproducible values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// "bits canonical" lines: random doubles, random floats widened to doubles (what boxes and
/// scores are), and f32 pixel coordinates (where the first serialiser's ties showed).
fn numbers_file(path: &std::path::Path) -> usize {
    use std::fmt::Write;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::new();
    let mut n = 0;
    let mut push = |x: f64, out: &mut String| {
        if x.is_finite() {
            let c = String::from_utf8(vigil::util::jcs::canonical(&serde_json::json!(x))).unwrap();
            writeln!(out, "{:016x} {c}", x.to_bits()).unwrap();
            n += 1;
        }
    };
    for _ in 0..100_000 {
        push(f64::from_bits(rng.next()), &mut out);
    }
    for _ in 0..100_000 {
        push(f32::from_bits(rng.next() as u32) as f64, &mut out);
    }
    for _ in 0..50_000 {
        let px = (rng.next() % 1_920_000) as f32 / 1000.0 + (rng.next() % 1000) as f32 / 7.0e6;
        push(px as f64, &mut out);
    }
    std::fs::write(path, out).unwrap();
    n
}

#[test]
fn a_case_system_with_standard_tools_verifies_everything() {
    let python = repo().join(".deps/consumer-venv/bin/python");
    assert!(python.exists(), "{} missing: run `bash .ci/install` (it makes the consumer venv)", python.display());
    let nats = Nats::start();
    let moto = Moto::start();
    moto.create_bucket("evidence", true);
    let extra = format!(
        "[site.premises]\noperator_name = \"测试餐饮管理有限公司\"\ncredit_code = \"91110000802100433B\"\n\
         food_licence = \"JY13201060001234\"\naddress = \"南京市鼓楼区测试路1号\"\narea_code = \"320106\"\n\
         regulator = \"南京市鼓楼区卫生健康委员会\"\n\
         [clip]\npre_roll_s = 1\npost_roll_s = 1\n[publish]\nnats_url = \"{}\"\n[store.options]\n{}",
        nats.url,
        moto.store_options()
    );
    let cams: String = ["cam1", "cam2"]
        .iter()
        .map(|id| {
            format!(
                "[[cameras]]\nid = \"{id}\"\nsource = \"{}\"\nrealtime = false\ndevice_serial = \"DS-2CD{id}\"\n\
                 national_device_id = \"32010600001320000001\"\nprivacy_mask = \"none\"\n\
                 [[cameras.rules]]\nkind = \"no_mask\"\nmin_hits = 10\nwindow = 10\n",
                sample("astronaut-pan.mp4").display()
            )
        })
        .collect();
    let site = Site::new(&extra, &cams);
    site.replace("url = \"store\"", "url = \"s3://evidence/site-a\"\nobject_lock = true");
    site.replace(
        "generate_if_missing = true",
        "generate_if_missing = true\npublic_key_url = \"https://regulator.example/keys/test-site.pub\"",
    );
    for run in 1..=2 {
        let (code, log) = run_to_end(&["run", site.pipeline.to_str().unwrap()], Duration::from_secs(180));
        assert_eq!(code, 0, "run {run}: {log}");
    }
    let numbers = site.path("numbers.txt");
    let n = numbers_file(&numbers);
    let out = std::process::Command::new(&python)
        .arg(repo().join("tests/support/consumer.py"))
        .arg(&nats.url)
        .arg(site.path("keys/signing.pub"))
        .arg(repo().join("tests/schemas"))
        .arg(&numbers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("consumer.py printed no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    println!("| check (Python: nats-py, boto3, cryptography, rfc8785, jsonschema) | passed |\n| --- | --- |");
    for (k, v) in report["checks"].as_object().unwrap() {
        println!("| {k} | {v} |");
    }
    let num = &report["numbers"];
    println!(
        "\nnumber formatting: {} values compared with rfc8785.dumps, {} mismatches",
        num["compared"], num["mismatches"]
    );
    println!("events {}, cameras {}, checkpoints {}", report["events"], report["cameras"], report["checkpoints"]);
    assert!(out.status.success() && report["failures"].as_array().unwrap().is_empty(), "{stdout}");
    assert_eq!(num["compared"].as_u64().unwrap() as usize, n);
    assert_eq!(num["mismatches"], 0);
    assert_eq!(report["events"], 4, "two cameras, two runs: {stdout}");
    assert_eq!(report["cameras"], 2);
    let c = &report["checks"];
    // each of 4 items: 3 artifacts + manifest + signature + index entry + its signature = 7 GETs
    assert_eq!(c["locator has a version id"].as_u64().unwrap(), 4 * 7 + 2 * report["checkpoints"].as_u64().unwrap());
    assert_eq!(c["artifact Content-Type as in the event"], 12);
    assert_eq!(c["Object Lock COMPLIANCE until the retention date"], 12);
    assert_eq!(c["manifest is RFC 8785 canonical (rfc8785.dumps)"], 4);
    assert_eq!(c["chain link prev_hash = SHA-256 of the manifest before"], 4);
    assert_eq!(c["valid against vigil.evidence.v1"], 4);
    assert!(c["valid against vigil.checkpoint-event.v1"].as_u64().unwrap() >= 4, "{c}");
    // the facts a case needs, as the events carry them
    let ev = &site.outbox()[0]["payload"];
    assert_eq!(ev["premises"]["credit_code"], "91110000802100433B");
    assert_eq!(ev["premises"]["area_code"], "320106");
    assert_eq!(ev["camera_registry"]["national_device_id"], "32010600001320000001");
    assert_eq!(ev["rule"]["legal_basis"]["regulation"], "中华人民共和国食品安全法");
    assert_eq!(ev["signing"]["public_key_url"], "https://regulator.example/keys/test-site.pub");
    assert!(ev["chain"]["committed_utc"].as_str().is_some(), "{ev}");
    assert_eq!(ev["store"]["url"], "s3://evidence/site-a");
    assert_eq!(ev["store"]["endpoint"], moto.endpoint.as_str());
}
