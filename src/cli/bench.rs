//! `vigil bench`: end-to-end throughput over N concurrent streams, with the floors.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline whose models, analysis settings and rules are used.
    #[arg(long, default_value = "pipelines/demo.toml")]
    pub pipeline: PathBuf,
    /// Numbers of concurrent streams to run, e.g. 1,2,4.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub streams: Vec<usize>,
    /// The clip each stream plays (as fast as analysis allows).
    #[arg(long, default_value = "sample-streams/astronaut-pan.mp4")]
    pub clip: PathBuf,
    /// Also run with motion gating off, to show what it saves.
    #[arg(long)]
    pub compare_gating: bool,
    /// Instead: one 1920×1080 main stream analysed directly versus through a 640×360 sub stream
    /// of the same scene (`analysis_source`), both made from `--clip`.
    #[arg(long)]
    pub sub_stream: bool,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a plot of analysed fps and peak RSS against N to `<PLOT>.svg` and `<PLOT>.png`.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Run on an NVIDIA GPU: ONNX Runtime's TensorRT / CUDA providers and NVDEC decoding. Checks
    /// first that the GPU, the providers (the `onnxruntime-gpu` library) and NVDEC are there, and
    /// exits 2 naming what is missing.
    #[arg(long)]
    pub gpu: bool,
    /// Play the clips at their own pace, as cameras stream, instead of as fast as analysis
    /// allows: analysed fps is then capped by the cameras, and the dropped frames show where
    /// analysis falls behind them.
    #[arg(long)]
    pub realtime: bool,
}

pub fn run(a: Args) -> ExitCode {
    let p = match super::load(&a.pipeline) {
        Ok(p) => p,
        Err(c) => return c,
    };
    if a.sub_stream {
        return super::tool(|| crate::bench::run_sub_stream(p, &a.clip, a.json.as_deref()).map(|_| ExitCode::SUCCESS));
    }
    super::tool(|| {
        let o = crate::bench::Options {
            streams: &a.streams,
            clip: &a.clip,
            compare_gating: a.compare_gating,
            json_out: a.json.as_deref(),
            plot: a.plot.as_deref(),
            gpu: a.gpu,
            realtime: a.realtime,
        };
        crate::bench::run(p, o).map(|_| ExitCode::SUCCESS)
    })
}
