//! `vigil check`: validate a pipeline file and the models it names, then exit.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    pub pipeline: PathBuf,
    /// Validate only; do not try the connections (NATS, the store, RTSP cameras).
    #[arg(long)]
    pub offline: bool,
}

pub fn run(a: Args) -> ExitCode {
    let p = match super::load(&a.pipeline) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let m = &p.settings.models;
    let needs = p.needs();
    let mut wanted = Vec::new();
    if needs.faces {
        wanted.push((m.face.clone(), &crate::detect::FaceDecoder::NAMES[..]));
        match m.head() {
            Some(h) => match crate::detect::FittedHead::load(&p.models_dir, h) {
                Ok(head) => wanted.push((head.features_model.clone(), &["softmax2"][..])),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            },
            None => wanted.push((m.mask.clone(), &["softmax2"][..])),
        }
    }
    if needs.objects {
        wanted.push((m.objects.clone(), &crate::detect::ObjectDecoder::NAMES[..]));
        let heads = p.attribute_heads();
        for h in m.dirty().into_iter().chain(heads.iter().map(String::as_str)) {
            match crate::detect::FittedHead::load(&p.models_dir, h) {
                Ok(head) => wanted.push((head.features_model.clone(), &["softmax2"][..])),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    for (id, dec) in wanted {
        if let Err(e) = crate::detect::ModelInfo::load_one_of(&p.models_dir, &id, dec) {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    println!("{}: ok ({} cameras)", a.pipeline.display(), p.cameras.len());
    if a.offline {
        return ExitCode::SUCCESS;
    }
    let failed = connections(&p).into_iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        eprintln!("error: {failed} connection(s) failed");
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

/// Tries each connection the pipeline makes (NATS, the store, every RTSP stream) and prints one
/// line per connection: what, where (no secret), and ok or why not.
fn connections(p: &crate::config::Pipeline) -> Vec<(String, Result<String, String>)> {
    use std::time::Duration;
    let mut out = Vec::new();
    if let Some(n) = &p.nats {
        let r = super::block_on(async {
            let c = n.connect().await?;
            let tls = c.server_info().tls_required;
            c.flush().await?;
            anyhow::Ok(format!("connected (auth: {}, TLS: {})", n.auth.method(), if tls { "yes" } else { "no" }))
        });
        out.push((format!("NATS {}", n.shown()), r.map_err(|e| format!("{e:#}"))));
        // a stream whose settings would lose or refuse events is a failure here, as at `run`
        let stream = p.settings.publish.stream.clone().unwrap_or_else(|| "VIGIL".into());
        let r = match super::block_on(crate::publish::preflight(n, &stream)) {
            Ok(Some(problems)) if problems.is_empty() => Ok("keeps what it acknowledges (or is made by vigil)".into()),
            Ok(Some(problems)) => Err(problems.join("; ")),
            Ok(None) => Err("no answer from JetStream".into()),
            Err(e) => Err(format!("{e:#}")),
        };
        out.push((format!("stream {stream}"), r));
    }
    let store = crate::store::Store::open_with(&p.store_url, &p.settings.store.options, p.settings.store.object_lock);
    let r = match store {
        Ok(s) => super::block_on(async {
            s.exists("vigil-check/probe").await?;
            // Object Lock asked for: the bucket must take a locked object (a day-long probe)
            s.probe_object_lock().await?;
            anyhow::Ok(
                if p.settings.store.object_lock { "reachable, takes locked objects" } else { "reachable" }.to_string(),
            )
        }),
        Err(e) => Err(e),
    };
    out.push((format!("store {}", crate::util::secret::redact(&p.store_url)), r.map_err(|e| format!("{e:#}"))));
    for c in &p.cameras {
        let streams = [("source", Some(&c.source)), ("analysis_source", c.analysis_source.as_ref())];
        for (key, s) in streams {
            if let Some(crate::config::Source::Rtsp { url, tcp, .. }) = s {
                let r = crate::ingest::pipeline::probe_rtsp(url, *tcp, Duration::from_secs(10))
                    .map(|enc| format!("video {enc}"))
                    .map_err(|e| format!("{e:#}"));
                out.push((format!("camera {} {key} {url}", c.id), r));
            }
        }
    }
    for (what, r) in &out {
        match r {
            Ok(m) => println!("connection {what}: ok, {m}"),
            Err(e) => eprintln!("connection {what}: FAILED: {e}"),
        }
    }
    out
}
