//! `vigil check`: validate a pipeline file and the models it names, then exit.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    pub pipeline: PathBuf,
}

pub fn run(a: Args) -> ExitCode {
    let p = match super::load(&a.pipeline) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let m = &p.raw.models;
    let needs = p.needs();
    let mut wanted = Vec::new();
    if needs.faces {
        wanted.push((m.face.clone(), "centerface"));
        match &m.mask_head {
            Some(h) => match crate::detect::FittedHead::load(&p.models_dir, h) {
                Ok(head) => wanted.push((head.features_model.clone(), "softmax2")),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            },
            None => wanted.push((m.mask.clone(), "softmax2")),
        }
    }
    if needs.objects {
        wanted.push((m.objects.clone(), "nanodet-gfl"));
    }
    for (id, dec) in wanted {
        if let Err(e) = crate::detect::ModelInfo::load(&p.models_dir, &id, dec) {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    println!("{}: ok ({} cameras)", a.pipeline.display(), p.cameras.len());
    ExitCode::SUCCESS
}
